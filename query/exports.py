"""Exports: contacts streamed as CSV or as a JSON array, in chunks of many rows.

Both writers take any iterable of ``ContactOut`` (in the service, ``iter_contacts``
with its server-side cursor), so memory stays bounded whatever the size of the export.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator

import msgspec

from query.models import ContactOut

CSV_COLUMNS = ("first_name", "last_name", "phone", "email", "tags", "notes")
TAG_SEPARATOR = ";"
CHUNK_SIZE = 64 * 1024  # characters (CSV) or bytes (JSON) gathered before a chunk is sent

# A spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = "=+-@\t\r"
# Quotes already in front of a formula start get one more quote, so ``unneutralise``
# can always take exactly one away: "=1" -> "'=1", "'=1" -> "''=1", "''=1" -> "'''=1".
_NEEDS_QUOTE = re.compile(r"'*[" + re.escape(FORMULA_STARTS) + "]")
_QUOTED = re.compile(r"'+[" + re.escape(FORMULA_STARTS) + "]")


def neutralise(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula (and to one already so escaped)."""
    return "'" + value if _NEEDS_QUOTE.match(value) else value


def unneutralise(value: str) -> str:
    """Undo ``neutralise`` exactly: drop one leading ``'`` in front of quotes and a formula start."""
    return value[1:] if _QUOTED.match(value) else value


def csv_row(contact: ContactOut) -> tuple[str, ...]:
    """One contact as CSV cells; the phone (validated E.164) is the only cell not neutralised."""
    def cell(value: str | None) -> str:
        return neutralise(value) if value else ""

    return (cell(contact.first_name), cell(contact.last_name), contact.phone, cell(contact.email),
            cell(TAG_SEPARATOR.join(contact.tags)), cell(contact.notes))


def csv_chunks(contacts: Iterable[ContactOut], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """UTF-8 CSV (RFC 4180, CRLF) with a header row, yielded in chunks of about ``chunk_size``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for contact in contacts:
        writer.writerow(csv_row(contact))
        if buffer.tell() >= chunk_size:
            yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data


def json_chunks(contacts: Iterable[ContactOut], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """A JSON array of contacts (the GET /contacts item shape), yielded in chunks of about ``chunk_size``."""
    encoder = msgspec.json.Encoder()
    buffer = bytearray(b"[")
    first = True
    for contact in contacts:
        if not first:
            buffer += b","
        first = False
        encoder.encode_into(contact, buffer, -1)
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]"
    yield bytes(buffer)

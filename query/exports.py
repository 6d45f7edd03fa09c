"""Exports: contacts streamed as CSV or as a JSON array, in chunks of many rows.

Both writers take any iterable of ``ContactOut`` (in the service, ``iter_contacts``
with its server-side cursor), so memory stays bounded whatever the size of the export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

import msgspec

# One definition of the formula escaping, shared with the importer that undoes it.
from command.import_files import neutralise
from query.models import ContactOut

CSV_COLUMNS = ("first_name", "last_name", "phone", "email", "tags", "notes")
TAG_SEPARATOR = ";"
CHUNK_SIZE = 64 * 1024  # characters (CSV) or bytes (JSON) gathered before a chunk is sent


def csv_row(contact: ContactOut) -> tuple[str, ...]:
    """One contact as CSV cells; the phone (validated E.164) is the only cell not neutralised.

    Each tag is neutralised before the join, so the cell is safe and the importer, which
    splits the cell and unneutralises each tag, gets every tag back exactly.
    """
    def cell(value: str | None) -> str:
        return neutralise(value) if value else ""

    return (cell(contact.first_name), cell(contact.last_name), contact.phone, cell(contact.email),
            TAG_SEPARATOR.join(neutralise(tag) for tag in contact.tags), cell(contact.notes))


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

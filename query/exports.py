"""Exports: contacts streamed as CSV or as a JSON array, in chunks of many rows.

The CSV lines are written by PostgreSQL (``csv_export``): the query formats each row,
neutralised with ``command.import_files.neutralise``'s rule and quoted as ``csv.writer``
quotes (tests/test_export_sql.py holds it to the csv module's bytes for any text), and
Python only joins the lines of each fetched batch. Building a ``ContactOut`` per row
and writing it through the csv module, as this did before, cost about 25 µs a row.

The JSON writer takes any iterable of ``ContactOut`` (in the service, ``iter_contacts``
with its server-side cursor). Either way memory stays bounded whatever the size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg_pool import ConnectionPool

# One definition of the formula escaping, shared with the importer that undoes it.
from command.import_files import FORMULA_STARTS
from query.contacts import ContactFilter
from query.models import ContactOut

CSV_COLUMNS = ("first_name", "last_name", "phone", "email", "tags", "notes")
TAG_SEPARATOR = ";"
CHUNK_SIZE = 64 * 1024  # bytes of JSON gathered before a chunk is sent
CSV_BATCH = 2000  # lines fetched from the server-side cursor at a time (about 150 kB of CSV)
CSV_HEADER = ",".join(CSV_COLUMNS) + "\r\n"


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


# -- the CSV written by PostgreSQL -----------------------------------------------------------

def _sql_char_class(chars: str) -> str:
    r"""A regex bracket expression matching ``chars``, for a PostgreSQL E'' literal (``-`` last)."""
    escapes = {"\t": r"\t", "\r": r"\r", "\n": r"\n", "'": "''", "\\": r"\\\\", "]": r"\\]", "^": r"\\^"}
    inner = "".join(escapes.get(ch, ch) for ch in chars if ch != "-")
    return "[" + inner + ("-" if "-" in chars else "") + "]"


#: ``neutralise`` in SQL: one ' before a cell matching ^'*[formula start].
_NEUTRALISED = r"regexp_replace({v}, E'^(''*" + _sql_char_class(FORMULA_STARTS) + r")', E'''\\1')"


def _quoted(tested: str, shown: str) -> str:
    """csv.QUOTE_MINIMAL: quote a cell holding the delimiter, the quote or a line break."""
    return (f"""CASE WHEN {tested} ~ E'[",\\r\\n]' THEN '"' || replace({shown}, '"', '""') || '"'"""
            f" ELSE {shown} END")


def _cell(column: str) -> str:
    # Neutralising adds only a ', which never needs quoting: test the stored value.
    return _quoted(column, _NEUTRALISED.format(v=column))


#: One CSV line (CRLF) per contact; the phone (validated E.164) is the one cell not neutralised.
CSV_LINE = sql.SQL("concat(" + ", ',', ".join([
    _cell("c.first_name"), _cell("c.last_name"), "c.phone", _cell("c.email"),
    _quoted("t.tags", "t.tags"), _cell("c.notes")]) + r", E'\r\n')")
#: The tags cell: each tag neutralised, joined with ``TAG_SEPARATOR`` in the array's order.
CSV_TAGS = sql.SQL(
    "LEFT JOIN LATERAL (SELECT string_agg(" + _NEUTRALISED.format(v="u.tag") + ", {sep} ORDER BY u.n) AS tags"
    " FROM unnest(c.tags) WITH ORDINALITY AS u(tag, n)) t ON true").format(sep=sql.Literal(TAG_SEPARATOR))


def csv_export(pool: ConnectionPool, account_id: UUID, flt: ContactFilter,
               batch: int = CSV_BATCH) -> Iterator[bytes]:
    """The matching contacts as UTF-8 CSV (RFC 4180, CRLF, header row), newest first.

    One chunk per fetched batch of lines, from a server-side cursor in one transaction.
    The first chunk (header and first batch) comes once the query has run, so a query
    that fails does so before any byte is sent.
    """
    where, params = flt.where(account_id)
    query = sql.SQL("SELECT {line} FROM contacts c {tags} WHERE {where}"
                    " ORDER BY c.created_at DESC, c.id DESC").format(line=CSV_LINE, tags=CSV_TAGS, where=where)
    with pool.connection() as conn, conn.transaction():
        with conn.cursor(name="contacts_csv_export") as cur:
            cur.execute(query, params)
            head = CSV_HEADER
            while True:
                rows = cur.fetchmany(batch)
                if rows or head:
                    yield (head + "".join([row[0] for row in rows])).encode("utf-8")
                if len(rows) < batch:
                    return
                head = ""

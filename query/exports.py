"""Exports: contacts streamed as CSV or as a JSON array, in chunks of many rows.

The CSV lines are written by PostgreSQL (``csv_export``): the query formats each row,
neutralised with ``command.imports.cells``' formula rule and quoted as ``csv.writer``
quotes (tests/integration/test_export_sql.py holds it to the csv module's bytes for any text), and
Python only joins the lines of each fetched batch. Building a ``ContactOut`` per row
and writing it through the csv module, as this did before, cost about 25 µs a row.

The JSON export is written the same way (``json_export``), each item byte for byte what
msgspec writes for the GET /contacts item (tested), instead of loading every column into
a ``ContactOut`` to encode it again (about 20 µs a row). Both stream from a server-side
cursor, one chunk per fetched batch, so memory stays bounded whatever the size.

Both are built from the one list of the contact's fields (``query.models.CONTACT_FIELDS``,
the fields of ``ContactOut``): each field's cell and JSON value are chosen by its type,
so a field added to the contact is exported with no other list to edit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import get_args, get_origin
from uuid import UUID

from msgspec.structs import FieldInfo
from psycopg import sql
from psycopg_pool import ConnectionPool

# One definition of the formula escaping and the tag separator, shared with the importer that undoes them.
from command.imports.cells import FORMULA_STARTS, TAG_SEPARATOR
from query.contacts import ContactFilter
from query.models import CONTACT_FIELDS
from query.tenancy import as_tenant

CSV_COLUMNS = ("first_name", "last_name", "phone", "email", "tags", "notes")
EXPORT_BATCH = 2000  # rows fetched from the server-side cursor at a time (about 150 kB of CSV)
CSV_HEADER = ",".join(CSV_COLUMNS) + "\r\n"


# -- the CSV written by PostgreSQL -----------------------------------------------------------

def _sql_char_class(chars: str) -> str:
    r"""A regex bracket expression matching ``chars``, for a PostgreSQL E'' literal (``-`` last)."""
    escapes = {"\t": r"\t", "\r": r"\r", "\n": r"\n", "'": "''", "\\": r"\\\\", "]": r"\\]", "^": r"\\^"}
    inner = "".join(escapes.get(ch, ch) for ch in chars if ch != "-")
    return "[" + inner + ("-" if "-" in chars else "") + "]"


#: The formula escape: one ' before a cell matching ^'*[formula start] (tests: import_samples.neutralise).
_NEUTRALISED = r"regexp_replace({v}, E'^(''*" + _sql_char_class(FORMULA_STARTS) + r")', E'''\\1')"


def _quoted(tested: str, shown: str) -> str:
    """csv.QUOTE_MINIMAL: quote a cell holding the delimiter, the quote or a line break."""
    return (f"""CASE WHEN {tested} ~ E'[",\\r\\n]' THEN '"' || replace({shown}, '"', '""') || '"'"""
            f" ELSE {shown} END")


def _cell(column: str) -> str:
    # Neutralising adds only a ', which never needs quoting: test the stored value.
    return _quoted(column, _NEUTRALISED.format(v=column))


def _rfc3339(column: str, quote: str = "") -> str:
    """A timestamptz as msgspec writes a UTC datetime (seconds, then .ffffff unless zero, then Z),
    between ``quote`` marks."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return ((f"'{quote}' || " if quote else "") + f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
            f" || CASE WHEN mod(extract(microseconds FROM {utc})::bigint, 1000000) = 0 THEN ''"
            f" ELSE to_char({utc}, '.US') END || 'Z{quote}'")


def _utc_time(column: str) -> str:
    """A timestamptz as RFC 3339 UTC text, as the JSON items write it; NULL is an empty cell."""
    return f"CASE WHEN {column} IS NULL THEN '' ELSE {_rfc3339(column)} END"


def _is_time(field: FieldInfo) -> bool:
    """Whether the field holds a time (``datetime``, or ``datetime | None``)."""
    return datetime in (field.type, *get_args(field.type))


def _csv_cell(field: FieldInfo) -> str:
    """The CSV cell of a contact field, chosen by its type (NULL is an empty cell: ``concat`` skips it).

    The phone (validated E.164) is the one text cell not neutralised; the tags come from ``CSV_TAGS``.
    """
    column = "c." + field.name
    if field.name == "phone":
        return column
    if field.name == "tags":
        return _quoted("t.tags", "t.tags")
    if field.type is bool:
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if _is_time(field):
        return _utc_time(column)
    if get_origin(field.type) is list:
        return f"array_to_string({column}, {TAG_SEPARATOR!r})"
    return _cell(column)


_FIELDS = {field.name: field for field in CONTACT_FIELDS}

#: The columns ``columns=`` may add after the default six: API name -> (CSV header, cell),
#: every other field of the contact but its id and ``deletedAt`` (exports hold active
#: contacts), in the documented order. The headers are the snake_case names the importer
#: reads; it reads ``is_opted_out`` back (an opted-out person stays opted out in the account
#: the file is imported into) and ignores the others, which it derives itself (status,
#: operator, country from the number) or which mean nothing in another account (list ids, times).
EXTRA_COLUMNS = {field.encode_name: (field.name, _csv_cell(field)) for field in CONTACT_FIELDS
                 if field.name not in (*CSV_COLUMNS, "id", "deleted_at")}


def csv_line(extra: tuple[str, ...] = ()) -> sql.Composable:
    """One CSV line (CRLF) per contact: the six default cells, then the ``extra`` columns."""
    cells = [_csv_cell(_FIELDS[name]) for name in CSV_COLUMNS] + [EXTRA_COLUMNS[name][1] for name in extra]
    return sql.SQL("concat(" + ", ',', ".join(cells) + r", E'\r\n')")


def csv_header(extra: tuple[str, ...] = ()) -> str:
    """The header line: the importer's field names."""
    return ",".join(CSV_COLUMNS + tuple(EXTRA_COLUMNS[name][0] for name in extra)) + "\r\n"


CSV_LINE = csv_line()
#: The tags cell: each tag neutralised, joined with ``TAG_SEPARATOR`` in the array's order.
CSV_TAGS = sql.SQL(
    "LEFT JOIN LATERAL (SELECT string_agg(" + _NEUTRALISED.format(v="u.tag") + ", {sep} ORDER BY u.n) AS tags"
    " FROM unnest(c.tags) WITH ORDINALITY AS u(tag, n)) t ON true").format(sep=sql.Literal(TAG_SEPARATOR))


def csv_export(pool: ConnectionPool, account_id: UUID, flt: ContactFilter,
               batch: int = EXPORT_BATCH, extra: tuple[str, ...] = ()) -> Iterator[bytes]:
    """The matching contacts as UTF-8 CSV (RFC 4180, CRLF, header row), newest first.

    ``extra`` names columns of ``EXTRA_COLUMNS`` written after the default six. One chunk
    per fetched batch of lines, from a server-side cursor in one transaction. The first
    chunk (header and first batch) comes once the query has run, so a query that fails
    does so before any byte is sent.
    """
    where, params = flt.where(account_id)
    query = sql.SQL("SELECT {line} FROM contacts c {tags} WHERE {where}"
                    " ORDER BY c.created_at DESC, c.id DESC").format(line=csv_line(extra), tags=CSV_TAGS,
                                                                     where=where)
    header = csv_header(extra)
    for number, (lines, _) in enumerate(_batches(pool, query, params, batch)):
        if number == 0 or lines:
            yield ((header if number == 0 else "") + "".join(lines)).encode("utf-8")


def _batches(pool: ConnectionPool, query: sql.Composable, params: dict, batch: int) -> Iterator[tuple[list[str], bool]]:
    """The query's one text column, a fetched batch at a time, each with whether it is the last."""
    with pool.connection() as conn, conn.transaction():
        as_tenant(conn, params["account"])
        with conn.cursor(name="contacts_export") as cur:
            cur.execute(query, params)
            while True:
                rows = cur.fetchmany(batch)
                last = len(rows) < batch
                yield [row[0] for row in rows], last
                if last:
                    return


# -- the JSON written by PostgreSQL ----------------------------------------------------------

def _json_text(column: str) -> str:
    return f"coalesce(to_json({column})::text, 'null')"


def _json_time(column: str) -> str:
    """A timestamptz as a JSON string, as msgspec writes it; NULL is null."""
    quoted = _rfc3339(column, quote='"')
    return f"CASE WHEN {column} IS NULL THEN 'null' ELSE {quoted} END"


def _json_value(field: FieldInfo) -> str:
    """A contact field's JSON value, written as msgspec writes its type."""
    column = "c." + field.name
    if field.type is bool:
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if _is_time(field):
        return _json_time(column)
    if type(None) in get_args(field.type):
        return _json_text(column)
    return f"to_json({column})::text"


def _json_item() -> sql.Composable:
    """``concat`` of each field's key and value, in ``ContactOut``'s order."""
    parts = []
    for number, field in enumerate(CONTACT_FIELDS):
        key = ("{" if number == 0 else ",") + f'"{field.encode_name}":'
        parts += [f"'{key}'", _json_value(field)]
    return sql.SQL("concat(" + ", ".join([*parts, "'}'"]) + ")")


#: One contact as JSON, byte for byte what ``msgspec.json.encode(ContactOut)`` writes
#: (the GET /contacts item), so the export equals the list (tests/integration/test_export_sql.py).
JSON_ITEM = _json_item()


def json_export(pool: ConnectionPool, account_id: UUID, flt: ContactFilter,
                batch: int = EXPORT_BATCH) -> Iterator[bytes]:
    """The matching contacts as a JSON array of GET /contacts items, newest first.

    Streamed like ``csv_export``: one chunk per fetched batch, the first once the query ran.
    """
    where, params = flt.where(account_id)
    query = sql.SQL("SELECT {item} FROM contacts c WHERE {where} ORDER BY c.created_at DESC, c.id DESC").format(
        item=JSON_ITEM, where=where)
    for number, (items, last) in enumerate(_batches(pool, query, params, batch)):
        head = "[" if number == 0 else ("," if items else "")
        yield (head + ",".join(items) + ("]" if last else "")).encode("utf-8")

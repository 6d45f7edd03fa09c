"""Rows of an import file: find the header, match its columns to contact fields, yield cleaned ``ImportRow``s.

Pure and streaming: no database, no HTTP, and rows are yielded one at a time
without reading the file whole (the readers are ``csv_reader`` and ``xlsx_reader``;
an .xlsx archive is scanned first and refused past ``FileLimits``). Columns are
matched by header name (aliases, or a client's ``mapping``); phones are passed
through as text for ``command.phones`` to judge.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from command.imports.cells import TAG_SEPARATORS, unneutralise
from command.imports.csv_reader import csv_records
from command.imports.formats import FileFormatError
from command.imports.limits import DEFAULT_LIMITS, HEADER_SEARCH_ROWS, FileLimits
from command.imports.xlsx_reader import calamine_records, check_xlsx_archive, xlsx_records

# full_name is split into first_name and last_name at its last space ("Mary Jane Wanjiru" ->
# "Mary Jane" + "Wanjiru"; one word is a first name) when the file has no first or last
# name column; beside a first-name column an aliased "Name" column is left out.
FIELDS = ("first_name", "last_name", "phone", "email", "tags", "notes", "opted_out", "full_name")
# Earlier aliases win when a file has several columns for one field ("phone" beats "mobile").
ALIASES = {
    "phone": ("phone", "phone_number", "phonenumber", "mobile", "mobile_number", "msisdn", "cell",
              "cellphone", "telephone", "tel", "number", "phone no",
              # as Outlook, Google Contacts and common sheets name them
              "mobile phone", "mobile no", "cell phone", "telephone number", "phone 1 - value",
              "primary phone", "whatsapp", "whatsapp number"),
    "first_name": ("first_name", "firstname", "first", "given_name", "givenname", "forename"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name"),
    "email": ("email", "e-mail", "email_address", "mail", "e-mail address", "e-mail 1 - value"),
    "tags": ("tags", "tag", "labels", "groups"),
    "notes": ("notes", "note", "comments", "comment", "remarks"),
    "opted_out": ("opted_out", "is_opted_out", "opt_out", "optout", "unsubscribed", "dnd", "do_not_contact"),
    "full_name": ("full_name", "name", "contact_name", "display_name", "customer_name"),
}
# An opted-out cell that is none of these counts as opted out: when in doubt, do not text.
NOT_OPTED_OUT = frozenset({"", "false", "no", "n", "0", "f", "subscribed", "opted in", "opted_in", "opted-in"})
_IGNORED_IN_HEADERS = re.compile(r"[\s_\-.\ufeff]+")


class ImportRow(msgspec.Struct):
    """One data row of an import file, its cells cleaned; ``row`` counts non-empty data rows from 1.

    ``line`` is the row number a spreadsheet shows for it: the header is line 1 (or
    lower down, below a title), blank rows count, and a CSV record holding a quoted line
    break is one line, as a spreadsheet shows it in one row. 0 when there is no file
    (``POST /contacts/bulk``: ``row`` is the item's place in the array).
    """

    row: int
    phone: str | None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    tags: list[str] = []
    notes: str | None = None
    is_opted_out: bool = False
    line: int = 0


def open_rows(path: Path, fmt: str, mapping: dict[str, str | None] | None = None, *,
              limits: FileLimits = DEFAULT_LIMITS) -> tuple[list[str], Iterator[ImportRow]]:
    """The file's headers and a lazy iterator of its rows; close or exhaust it to release the file."""
    if fmt == "csv":
        records = csv_records(Path(path), limits)
    elif fmt == "xlsx":
        cells = check_xlsx_archive(Path(path), limits)
        fast = cells <= limits.xlsx_fast_max_cells
        records = (calamine_records if fast else xlsx_records)(Path(path), limits)
    else:
        raise ValueError(f"unknown import format {fmt!r}")
    numbered = enumerate(records, 1)  # a record's number is its line, as a spreadsheet shows it
    try:
        headers, columns = _header(numbered, mapping or {})
    except BaseException:
        records.close()
        raise
    return headers, _rows(records, numbered, columns)



def _header(numbered: Iterator[tuple[int, list[str]]],
            mapping: dict[str, str | None]) -> tuple[list[str], dict[str, int]]:
    """The header row and its columns: the first of the first rows that names a phone column.

    When none of them does, the first non-empty row is the header the error names.
    """
    first_error: FileFormatError | None = None
    for line, cells in numbered:
        if not "".join(cells).strip():
            continue
        headers = [cell.strip() for cell in cells]
        headers[0] = headers[0].lstrip("\ufeff").strip()
        while headers and not headers[-1]:
            headers.pop()
        try:
            return headers, _columns(headers, mapping)
        except FileFormatError as exc:
            first_error = first_error or exc
        if line >= HEADER_SEARCH_ROWS:
            break
    if first_error is not None:
        raise first_error
    raise FileFormatError("the file is empty: it has no header row", field="file")


def _key(header: str) -> str:
    return _IGNORED_IN_HEADERS.sub("", header).casefold()


_ALIAS_RANKS = {_key(alias): (field, rank) for field, aliases in ALIASES.items()
                for rank, alias in enumerate(aliases)}
_FIELD_KEYS = {_key(field): field for field in FIELDS}  # "firstName" and "first name" are first_name


def _columns(headers: list[str], mapping: dict[str, str | None]) -> dict[str, int]:
    """Which column holds each field: the client's mapping first, then the best alias.

    A column mapped to ``null`` is ignored (no alias takes it); naming one that the file
    does not have is harmless.
    """
    keys = [_key(header) for header in headers]
    columns: dict[str, int] = {}
    ignored = {keys.index(_key(header)) for header, target in mapping.items()
               if target is None and _key(header) in keys}
    for header, target in mapping.items():
        if target is None:
            continue
        field = _FIELD_KEYS.get(_key(target))
        if field is None:
            raise FileFormatError(f"the mapping sends {header!r} to {target!r}, which is not one of: "
                                  f"{', '.join(FIELDS)}", field="mapping")
        if _key(header) not in keys:
            raise FileFormatError(f"the mapping names a column {header!r} that is not in the file; "
                                  f"headers found: {_listed(headers)}", field="mapping",
                                  extra={"headers": [header[:200] for header in headers]})
        if field in columns:
            raise FileFormatError(f"the mapping sends two columns to {field!r}", field="mapping")
        columns[field] = keys.index(_key(header))
    mapped = set(columns.values()) | ignored
    matches = sorted((_ALIAS_RANKS[key][1], index, _ALIAS_RANKS[key][0])
                     for index, key in enumerate(keys) if key in _ALIAS_RANKS and index not in mapped)
    for _, index, field in matches:  # best alias first, then leftmost
        columns.setdefault(field, index)
    if "full_name" in columns and "full_name" not in mapping_fields(mapping):
        # An aliased full-name column: split only when there is no name column besides it;
        # beside a last name it is the first name ("Name,Surname"); beside a first name, unused.
        if "first_name" in columns:
            del columns["full_name"]
        elif "last_name" in columns:
            columns["first_name"] = columns.pop("full_name")
    if "phone" not in columns:
        raise FileFormatError(f"no phone column found; headers found: {_listed(headers)}. Name the column "
                              f"\"phone\" (or mobile, msisdn, ...) or send a column mapping", field="file",
                              extra={"headers": [header[:200] for header in headers]})
    return columns


def mapping_fields(mapping: dict[str, str | None]) -> set[str]:
    """The fields a client's mapping names."""
    return {field for target in mapping.values() if target and (field := _FIELD_KEYS.get(_key(target)))}


def split_full_name(value: str | None) -> tuple[str | None, str | None]:
    """First and last name of a full name, split at its last space ("Jane Wanjiru" -> Jane, Wanjiru)."""
    if not value:
        return None, None
    first, _, last = value.rpartition(" ")
    return (first.strip(), last) if first.strip() else (last, None)


def _listed(headers: list[str]) -> str:
    """The headers for a message: the first 20, each cut to 50 characters, so an error never echoes a file."""
    listed = ", ".join(repr(header[:50] + ("…" if len(header) > 50 else "")) for header in headers[:20])
    return (listed + (f" and {len(headers) - 20} more" if len(headers) > 20 else "")) or "none"


def _rows(records: Iterator[list[str]], numbered: Iterator[tuple[int, list[str]]],
          columns: dict[str, int]) -> Iterator[ImportRow]:
    first, last, phone, email, tags, notes, opted_out, full = (columns.get(field) for field in FIELDS)
    number = 0
    try:
        for line, cells in numbered:
            if not "".join(cells).strip():
                continue  # an empty row is not a row
            number += 1
            first_name, last_name = _cell(cells, first), _cell(cells, last)
            if full is not None:
                split_first, split_last = split_full_name(_cell(cells, full))
                first_name, last_name = first_name or split_first, last_name or split_last
            yield ImportRow(row=number, line=line, phone=_cell(cells, phone), first_name=first_name,
                            last_name=last_name, email=_cell(cells, email),
                            tags=_tags(cells, tags), notes=_cell(cells, notes),
                            is_opted_out=opted_out is not None and (_cell(cells, opted_out) or "").lower()
                            not in NOT_OPTED_OUT)
    finally:
        records.close()


def _cell(cells: list[str], index: int | None) -> str | None:
    if index is None or index >= len(cells):
        return None
    value = cells[index].strip()
    if not value:
        return None
    return unneutralise(value) if value[0] == "'" else value


def _tags(cells: list[str], index: int | None) -> list[str]:
    if index is None or index >= len(cells):
        return []
    cell = cells[index].lower()
    if "'" not in cell:  # nothing escaped (most cells): no tag to unneutralise
        return list(dict.fromkeys(tag for tag in map(str.strip, TAG_SEPARATORS.split(cell)) if tag))
    # Each tag is unneutralised on its own: the exporter should escape each tag before joining them.
    tags = [unneutralise(tag.strip()) for tag in TAG_SEPARATORS.split(cell)]
    return list(dict.fromkeys(tag for tag in tags if tag))


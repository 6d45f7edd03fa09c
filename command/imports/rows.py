"""Contact import files: detect CSV or XLSX, then stream their rows as cleaned ``ImportRow``s.

Pure and streaming: no database, no HTTP, and rows are yielded one at a time
without reading the file whole. openpyxl keeps some of an .xlsx in memory (the
shared string table, every part but the worksheets, a little per row), so an
archive is scanned first with expat and refused past ``FileLimits``. Columns are
matched by header name (aliases, or a client's ``mapping``); phones are passed
through as text for ``command.phones`` to judge.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn
from xml.parsers import expat

import msgspec
import openpyxl
from python_calamine import CalamineWorkbook

from command.errors import DomainError

HEAD_BYTES = 64 * 1024  # what a caller should read for ``detect_format``
# Sample handed to csv.Sniffer: its quote-guessing regex is quadratic in the sample
# (16 KiB of ",'\"" took 3.6 s of CPU), so the sample stays small (about 0.2 s at worst).
SNIFF_CHARS = 4 * 1024
MAX_RECORD_CHARS = 1024 * 1024  # one CSV record (a line, or lines joined by quoted newlines)
MAX_COLUMNS = 200
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024  # an .xlsx archive, all members together
MAX_MEMBER_RATIO = 100  # compression ratio allowed for a member larger than RATIO_CHECKED_ABOVE
RATIO_CHECKED_ABOVE = 10 * 1024 * 1024
EXCEL_MAX_ROWS = 1_048_576  # Excel's own limits: no genuine workbook goes past them
EXCEL_MAX_COLUMNS = 16_384
DELIMITERS = ",;\t|"
ACCEPTED = "accepted: a CSV file (UTF-8 or Windows-1252 text) or an Excel workbook (.xlsx)"

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

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = "=+-@\t\r"
_NEEDS_QUOTE = re.compile(r"'*[" + re.escape(FORMULA_STARTS) + "]")
_QUOTED = re.compile(r"'+[" + re.escape(FORMULA_STARTS) + "]")
_IGNORED_IN_HEADERS = re.compile(r"[\s_\-.\ufeff]+")
TAG_SEPARATORS = re.compile(r"[;,]")
# Latin letters and combining marks (2 bytes in UTF-8) and every character of 3 bytes or
# more, surrogates left out (undecodable bytes arrive as U+DC80-U+DCFF).
_UTF8_PROOF = re.compile("[\u00c0-\u02af\u0300-\u036f\u0800-\ud7ff\ue000-\U0010ffff]")
_EXCEL_SEP = re.compile(r"sep=([,;\t|])\r?\n", re.IGNORECASE)
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x19\x1b-\x1f\x7f]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, under surrogateescape
_NOT_IN_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # the five bytes Windows-1252 leaves undefined
_UTF16 = "UTF-16 text (save it as \"CSV UTF-8\")"
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls) or a password-protected Office file"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (save it as \"CSV UTF-8\")"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (save it as \"CSV UTF-8\")"),
    (b"\xff\xfe", _UTF16),
    (b"\xfe\xff", _UTF16),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)


@dataclass(frozen=True)
class FileLimits:
    """What one import file may hold; past a limit it is refused (422) before it costs memory or time.

    The first three are settings (``CONTACTS_IMPORT_*``). The others bound what openpyxl
    keeps in memory while it reads a workbook. At each limit: the parts built whole
    180 MB, the row attributes 96 MB, the rows 95 MB (measured), the shared strings
    about 130 MB plus their text; so about 600 MB for a file built to reach all of them
    at once, against 66 MB measured for a typical 100,000-row workbook.
    """

    max_record_chars: int = MAX_RECORD_CHARS  # one CSV record
    max_columns: int = MAX_COLUMNS  # non-empty columns of one row
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES  # an .xlsx archive, all members together
    max_archive_members: int = 10_000  # a workbook has tens; the zip directory is read whole
    max_xml_token_bytes: int = 1024 * 1024  # one tag, or one text between two tags
    max_part_nodes: int = 500_000  # elements + attributes openpyxl builds whole, all parts together
    max_record_nodes: int = 200_000  # elements + attributes inside one row or one shared string
    max_shared_strings: int = 1_000_000
    max_shared_strings_bytes: int = 64 * 1024 * 1024  # kept in memory whole, as text
    max_row_attributes: int = 1_000_000  # openpyxl keeps the attributes of every formatted row
    # Workbooks of at most this many cells (all worksheets) are read with python-calamine:
    # about 20 times faster than openpyxl, but it holds the sheet in memory (95 MB measured
    # for a million cells), so larger ones stream through openpyxl instead.
    xlsx_fast_max_cells: int = 1_000_000


DEFAULT_LIMITS = FileLimits()


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


class UnsupportedFileError(DomainError):
    """The upload is not a CSV or XLSX file at all."""

    code = "unsupported_file"


class FileFormatError(DomainError):
    """The file is a CSV or XLSX file that cannot be imported as it is."""

    code = "invalid_file"


def neutralise(value: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula, and to one already so escaped."""
    # "=1" -> "'=1" and "'=1" -> "''=1", so unneutralise can always take exactly one quote away.
    return "'" + value if _NEEDS_QUOTE.match(value) else value


def unneutralise(value: str) -> str:
    """Undo ``neutralise``: drop one leading ``'`` from quotes followed by a formula start."""
    return value[1:] if value[:1] == "'" and _QUOTED.match(value) else value


# -- detecting the format -------------------------------------------------------------------

def detect_format(head: bytes, filename: str | None) -> Literal["csv", "xlsx"]:
    """Tell an .xlsx workbook from CSV text by the first bytes; the filename is only a hint."""
    if not head:
        raise FileFormatError("the file is empty", field="file")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        kind = _zip_kind(head, filename)
        if kind == "xlsx":
            return "xlsx"
        raise _unsupported(kind, filename)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            raise _unsupported(kind, filename)
    if _looks_like_utf16(head):
        raise _unsupported(_UTF16.replace("text", "text without a byte-order mark", 1), filename)
    text = _as_text(head)
    if text is None:
        raise _unsupported("binary data, not text", filename)
    if text.lstrip("\ufeff \t\r\n")[:20].lower().startswith(("<?xml", "<html", "<!doctype", "<table")):
        raise _unsupported("an HTML or XML document", filename)
    return "csv"


def _zip_kind(head: bytes, filename: str | None) -> str:
    """What a ZIP archive holds, judged by the member names of the local headers in ``head``."""
    names = []
    for match in re.finditer(rb"PK\x03\x04", head):
        start = match.start()
        size = int.from_bytes(head[start + 26:start + 28], "little")
        names.append(head[start + 30:start + 30 + size])
    if b"xl/workbook.bin" in names:
        return "an Excel binary workbook (.xlsb)"
    if any(name.startswith(b"xl/") for name in names):
        return "xlsx"
    if any(name.startswith(b"word/") for name in names):
        return "a Word document"
    if any(name.startswith(b"ppt/") for name in names):
        return "a PowerPoint presentation"
    if b"opendocument" in head:
        return "an OpenDocument file (.ods/.odt)"
    if filename and filename.lower().endswith((".xlsx", ".xlsm")):
        return "xlsx"  # names not in head; open_rows checks for xl/workbook.xml
    return "a ZIP archive that is not an Excel workbook"


def _looks_like_utf16(head: bytes) -> bool:
    """Mostly-ASCII UTF-16 without a BOM: every other byte is NUL, and the bytes between are not."""
    sample = head[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 8:
        return False
    return (odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even)) or \
        (even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd))


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # may end inside a character
    except UnicodeDecodeError:
        # A byte Windows-1252 leaves undefined does not make a text file binary: the
        # encoding check names it and its line (422) instead of calling the file binary.
        text = head.decode("cp1252", errors="replace")
    return None if len(_CONTROL_CHARS.findall(text)) * 100 > len(text) else text


def _unsupported(kind: str, filename: str | None) -> UnsupportedFileError:
    subject = f'the file "{filename}"' if filename else "the file"
    return UnsupportedFileError(f"{subject} is {kind}; {ACCEPTED}", field="file")


# -- reading rows ---------------------------------------------------------------------------

def open_rows(path: Path, fmt: str, mapping: dict[str, str | None] | None = None, *,
              limits: FileLimits = DEFAULT_LIMITS) -> tuple[list[str], Iterator[ImportRow]]:
    """The file's headers and a lazy iterator of its rows; close or exhaust it to release the file."""
    if fmt == "csv":
        records = _csv_records(Path(path), limits)
    elif fmt == "xlsx":
        cells = check_xlsx_archive(Path(path), limits)
        fast = cells <= limits.xlsx_fast_max_cells
        records = (_calamine_records if fast else _xlsx_records)(Path(path), limits)
    else:
        raise ValueError(f"unknown import format {fmt!r}")
    numbered = enumerate(records, 1)  # a record's number is its line, as a spreadsheet shows it
    try:
        headers, columns = _header(numbered, mapping or {})
    except BaseException:
        records.close()
        raise
    return headers, _rows(records, numbered, columns)


#: The header may sit below title rows ("Customer list, March"): it is the first of this
#: many rows that has a phone column (by alias or mapping).
HEADER_SEARCH_ROWS = 10


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
    # Each tag is unneutralised on its own: the exporter should escape each tag before joining them.
    tags = [unneutralise(tag.strip()) for tag in TAG_SEPARATORS.split(cells[index].lower())]
    return list(dict.fromkeys(tag for tag in tags if tag))


def _check_width(cells: list[str], where: str, max_columns: int) -> None:
    if len(cells) > max_columns:
        while cells and not cells[-1].strip():
            cells.pop()
        if len(cells) > max_columns:
            raise FileFormatError(f"{where} has {len(cells)} columns; at most {max_columns} are accepted",
                                  field="file")


# -- CSV ------------------------------------------------------------------------------------

def _csv_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
    """Each CSV record as a list of strings, with its size and width bounded."""
    encoding = _csv_encoding(path)
    # Process-wide, and the line reader below bounds records first: this only has to be large enough.
    csv.field_size_limit(max(limits.max_record_chars, csv.field_size_limit()))
    with path.open("rb") as raw:
        sample = raw.read(SNIFF_CHARS)
        raw.seek(len(codecs.BOM_UTF8) if sample.startswith(codecs.BOM_UTF8) else 0)
        head = sample.decode(encoding, errors="ignore").lstrip("\ufeff")
        # Excel writes (and reads) a first line "sep=;" naming the delimiter: honour it, skip it.
        excel_sep = _EXCEL_SEP.match(head)
        delimiter = excel_sep.group(1) if excel_sep else _delimiter(head)
        with io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            lines = _BoundedLines(text, limits.max_record_chars)
            reader = csv.reader(lines, delimiter=delimiter)
            if excel_sep:
                next(reader, None)
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise FileFormatError(f"line {reader.line_num} is not valid CSV: {exc}", field="file") from exc
                except UnicodeDecodeError as exc:
                    byte = exc.object[exc.start:exc.start + 1].hex()
                    raise FileFormatError(f"the file is neither UTF-8 nor Windows-1252 text (byte 0x{byte} after "
                                          f"line {lines.number})", field="file") from exc
                lines.record_chars = 0
                _check_width(cells, f"line {reader.line_num}", limits.max_columns)
                yield cells


def _csv_encoding(path: Path) -> str:
    """UTF-8 when the whole file is UTF-8; Windows-1252 when it has no UTF-8 beyond ASCII; else a 422.

    One pass in chunks, before any row is imported. A file that holds both UTF-8 text
    and bytes that are not UTF-8 (two files pasted together) is refused: read as
    Windows-1252, every UTF-8 name in it would be stored garbled ("ZoÃ«"). Windows-1252
    text can hold a valid UTF-8 pair by chance: an accented capital before a curly quote
    ("Ñ”" is D1 94, Cyrillic "є" in UTF-8). So a UTF-8 letter of the Latin scripts
    (accented, Yoruba "ọ", Twi "ɔ") or any character of three bytes or more (curly
    quotes, "€") is proof of UTF-8 text; other pairs count only if they outnumber the
    bad bytes, and so does the UTF-8 BOM. A NUL byte means the file is not text.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    line = 1  # of the chunk's first byte
    not_utf8 = not_cp1252 = None  # (line, byte) of the first such byte
    bad_bytes = multibyte_weight = 0  # bytes not UTF-8; bytes minus characters of the UTF-8 ones
    utf8_letter = False  # a character no Windows-1252 text spells by chance (see above)
    with path.open("rb") as raw:
        bom = raw.read(3) == codecs.BOM_UTF8
        raw.seek(0)
        while True:
            chunk = raw.read(256 * 1024)
            if (nul := chunk.find(b"\x00")) >= 0:
                where = line + chunk.count(b"\n", 0, nul)
                raise FileFormatError(f"line {where} holds a NUL byte: this is not a text file; {ACCEPTED}",
                                      field="file")
            text = decoder.decode(chunk, final=not chunk)
            multibyte_weight += len(chunk) - len(text)  # pending bytes of a split character even out
            if bad := _ESCAPED_BYTE.search(text):
                not_utf8 = not_utf8 or (line + text.count("\n", 0, bad.start()), ord(bad.group()) - 0xDC00)
                bad_bytes += len(_ESCAPED_BYTE.findall(text))
            utf8_letter = utf8_letter or _UTF8_PROOF.search(text) is not None
            if not_cp1252 is None and (bad := _NOT_IN_CP1252.search(chunk)):
                not_cp1252 = (line + chunk.count(b"\n", 0, bad.start()), bad.group()[0])
            if not chunk:
                break
            line += chunk.count(b"\n")
    if not_utf8 is None:
        return "utf-8"
    if bom or utf8_letter or multibyte_weight > bad_bytes:
        raise FileFormatError(f"the file mixes UTF-8 text with bytes that are not UTF-8 (byte 0x{not_utf8[1]:02x} "
                              f"on line {not_utf8[0]}); save the whole file as \"CSV UTF-8\"", field="file")
    if not_cp1252 is not None:
        raise FileFormatError(f"the file is neither UTF-8 nor Windows-1252 text (byte 0x{not_cp1252[1]:02x} on "
                              f"line {not_cp1252[0]}); save it as \"CSV UTF-8\"", field="file")
    return "cp1252"


def _delimiter(sample: str) -> str:
    """The sniffed delimiter when the header line has it, else the candidate most in the header line."""
    if "\n" in sample:
        sample = sample[:sample.rindex("\n")]  # drop a line cut by the sample size
    # The first line holding a delimiter: a title line above the header ("Customers, March"
    # aside) holds none, and must not decide the delimiter.
    lines = [line for line in sample.splitlines() if line.strip()][:HEADER_SEARCH_ROWS]
    header = next((line for line in lines if any(d in line for d in DELIMITERS)), lines[0] if lines else "")
    counts = {candidate: header.count(candidate) for candidate in DELIMITERS}
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and counts[sniffed]:
        return sniffed
    best = max(DELIMITERS, key=counts.__getitem__)
    return best if counts[best] else ","


class _BoundedLines:
    """Lines of a text file for csv.reader, failing once a record grows past MAX_RECORD_CHARS."""

    def __init__(self, text: io.TextIOWrapper, limit: int = MAX_RECORD_CHARS):
        self.text = text
        self.limit = limit
        self.number = 0
        self.record_chars = 0  # reset by the reader loop after each record
        self.record_start = 1

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)  # never holds more than the limit
        if not line:
            raise StopIteration
        self.number += 1
        if not self.record_chars:
            self.record_start = self.number
        self.record_chars += len(line)
        if self.record_chars > self.limit:
            if self.record_start == self.number:
                raise FileFormatError(f"line {self.number} is too long: a record may hold at most "
                                      f"{self.limit:,} characters", field="file")
            raise FileFormatError(f"the record from line {self.record_start} to line {self.number} is too long "
                                  f"(a quote left open?): a record may hold at most {self.limit:,} characters",
                                  field="file")
        return line


# -- XLSX -----------------------------------------------------------------------------------

def check_xlsx_archive(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> int:
    """Refuse a corrupt archive, a non-workbook, or a decompression bomb before a reader opens it.

    Returns how many cells the worksheets hold (all of them together).

    The sizes a zip declares bound what zipfile inflates (it stops at the declared
    size), so they are checked first; then every XML part is streamed through expat
    (``_scan_xml_part``) to refuse what openpyxl would build in memory or loop over.
    """
    try:
        with path.open("rb") as raw:
            # zipfile reads the whole central directory at once (a million entries: 23 s, 400 MB),
            # so count them first with its own reader of the end record (private, stable since 2.x).
            end = zipfile._EndRecData(raw)  # noqa: SLF001
        entries = end[zipfile._ECD_ENTRIES_TOTAL] if end else 0  # noqa: SLF001
        if entries > limits.max_archive_members:
            raise FileFormatError(f"the .xlsx file is a ZIP archive of {entries:,} members; a workbook has tens, "
                                  f"at most {limits.max_archive_members:,} are accepted", field="file")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(members, limits)
            built_whole = [0, 0]  # elements + attributes openpyxl builds whole, across all parts; cells
            for member in members:
                _scan_xml_part(archive, member, limits, built_whole)
            return built_whole[1]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise FileFormatError(f"the .xlsx file is corrupt: {exc}", field="file") from exc


def _check_members(members: list[zipfile.ZipInfo], limits: FileLimits) -> None:
    if "xl/workbook.xml" not in {member.filename for member in members}:
        raise _unsupported("a ZIP archive without xl/workbook.xml, not an Excel workbook", None)
    total = sum(member.file_size for member in members)
    if total > limits.max_uncompressed_bytes:
        raise FileFormatError(f"the .xlsx file expands to {total:,} bytes; at most "
                              f"{limits.max_uncompressed_bytes:,} are accepted", field="file")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECKED_ABOVE and ratio > MAX_MEMBER_RATIO:
            raise FileFormatError(f"the .xlsx file looks like a decompression bomb: {member.filename} is "
                                  f"compressed {ratio:,.0f} to 1", field="file")
        if member.filename == "xl/sharedStrings.xml" and member.file_size > limits.max_shared_strings_bytes:
            raise FileFormatError(f"the .xlsx file's shared string table is {member.file_size:,} bytes; at most "
                                  f"{limits.max_shared_strings_bytes:,} are accepted (save a workbook this large "
                                  f"as CSV)", field="file")


def _scan_xml_part(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: FileLimits,
                   built_whole: list[int]) -> None:
    """Stream one part through expat, counting what openpyxl would keep from it; raise past a limit.

    openpyxl parses worksheets and the shared string table as streams, but keeps
    something per row and per string; every other part it builds whole. Rows and
    cells are also held to Excel's own limits, and to ascending row numbers (openpyxl
    drops a row numbered below the one before, silently, and fills a gap up to a huge
    number row by row). No part may declare a DTD: Office files never do, and it is
    how entity-expansion and external-entity attacks start. The handlers are closures
    because they run once per element (about 10 % of the time openpyxl then takes).
    """
    name = member.filename
    sheet = re.fullmatch(r"xl/worksheets/[^/]+\.xml", name) is not None
    record_tag = "row" if sheet else "si" if name == "xl/sharedStrings.xml" else None
    max_record_nodes = limits.max_record_nodes
    records = row_attributes = last_row = 0
    depth = record_nodes = cells = 0  # inside the current row or shared string

    def fail(problem: str) -> NoReturn:
        raise FileFormatError(f"the .xlsx file is refused: {name} {problem}", field="file")

    def start(tag: str, attributes: list[str]) -> None:
        nonlocal depth, record_nodes, cells, records
        if depth:
            depth += 1
            record_nodes += 1 + len(attributes) // 2
            if record_nodes > max_record_nodes:
                fail(f"has a {record_tag} of more than {max_record_nodes:,} XML elements and attributes")
            if depth == 2 and sheet:
                cells += 1
                built_whole[1] += 1
                if cells > EXCEL_MAX_COLUMNS:
                    fail(f"row {last_row} has more than {EXCEL_MAX_COLUMNS:,} cells (Excel's limit)")
        elif record_tag and tag.rpartition(":")[2] == record_tag:
            depth, record_nodes, cells = 1, 1 + len(attributes) // 2, 0
            records += 1
            if sheet:
                row(attributes)
            elif records > limits.max_shared_strings:
                fail(f"holds more than {limits.max_shared_strings:,} shared strings (save a workbook this "
                     f"large as CSV)")
        else:
            built_whole[0] += 1 + len(attributes) // 2
            if built_whole[0] > limits.max_part_nodes:
                fail(f"takes the workbook past {limits.max_part_nodes:,} XML elements and attributes outside "
                     f"rows and shared strings (openpyxl builds those in memory whole)")

    def row(attributes: list[str]) -> None:
        nonlocal last_row, row_attributes
        keys = attributes[0::2]
        number = last_row + 1
        if "r" in keys:
            value = attributes[2 * keys.index("r") + 1]
            if not value.isdigit() or not 0 < int(value) <= EXCEL_MAX_ROWS:
                fail(f"has a row number {value[:20]}; rows are numbered 1 to {EXCEL_MAX_ROWS:,}")
            number = int(value)
        if number <= last_row:
            fail(f"has row {number} after row {last_row}: rows must come in order")
        if number > EXCEL_MAX_ROWS:
            fail(f"has more than {EXCEL_MAX_ROWS:,} rows (Excel's limit)")
        last_row = number
        # openpyxl keeps a row's attributes when one of them is more than its number and span.
        if any(":" not in key and key not in ("r", "spans") for key in keys):
            row_attributes += len(keys)
            if row_attributes > limits.max_row_attributes:
                fail(f"has more than {limits.max_row_attributes:,} attributes on its rows")

    def end(_: str) -> None:
        nonlocal depth
        if depth:
            depth -= 1

    def doctype(*_: object) -> None:
        fail("declares a DTD, which workbooks never do (it is how XML entity attacks start)")

    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    parser.StartDoctypeDeclHandler, parser.StartElementHandler, parser.EndElementHandler = doctype, start, end
    with archive.open(member) as stream:
        chunk = stream.read(64 * 1024)
        if chunk.lstrip(b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n")[:1] != b"<":
            return  # not XML (an image, a .bin part): openpyxl never parses it as XML
        since_tag = 0  # bytes since the last "<": expat holds one whole tag or text in memory
        try:
            while chunk:
                last = chunk.rfind(b"<")
                since_tag = since_tag + len(chunk) if last < 0 else len(chunk) - last - 1
                if since_tag > limits.max_xml_token_bytes:
                    fail(f"holds a tag or a text of more than {limits.max_xml_token_bytes:,} bytes")
                parser.Parse(chunk, False)
                chunk = stream.read(64 * 1024)
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise FileFormatError(f"the .xlsx file is corrupt: {name} is not well-formed XML "
                                  f"({expat.errors.messages[exc.code]}, line {exc.lineno})", field="file") from None


def _xlsx_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
    """Each row of the first worksheet as a list of strings (openpyxl read-only, cached values)."""
    # Any failure of the parser on these untrusted bytes means the file cannot be read.
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        raise FileFormatError(f"the .xlsx file is corrupt: {exc}", field="file") from exc
    try:
        if not workbook.worksheets:
            raise FileFormatError("the .xlsx file has no worksheet", field="file")
        yield from _first_sheet_with_data(_openpyxl_rows(sheet, limits) for sheet in workbook.worksheets)
    finally:
        workbook.close()


def _openpyxl_rows(sheet: object, limits: FileLimits) -> Iterator[list[str]]:
    sheet.reset_dimensions()  # type: ignore[attr-defined]  # a wrong stored size would silently cut rows
    values = sheet.iter_rows(values_only=True)  # type: ignore[attr-defined]
    number = 0
    while True:
        try:
            row = next(values)
        except StopIteration:
            return
        except MemoryError:
            raise
        except Exception as exc:
            raise FileFormatError(f"the .xlsx file is corrupt after row {number}: {exc}", field="file") from exc
        number += 1
        cells = [_cell_text(value) for value in row]
        _check_width(cells, f"row {number}", limits.max_columns)
        yield cells


def _first_sheet_with_data(sheets: Iterator[Iterator[list[str]]]) -> Iterator[list[str]]:
    """The rows of the first worksheet holding a non-empty cell (an empty first sheet is skipped).

    A sheet's leading empty rows are held back as a count until a cell with data shows
    up, then given with it, so line numbers stay the sheet's own.
    """
    for rows in sheets:
        empty = 0
        for cells in rows:
            if not "".join(cells).strip():
                empty += 1
                continue
            for _ in range(empty):
                yield []
            yield cells
            yield from rows
            return


def _calamine_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
    """The rows of the first worksheet as lists of strings, read by python-calamine (cached values)."""
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        if not workbook.sheet_names:
            raise FileFormatError("the .xlsx file has no worksheet", field="file")
    except FileFormatError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # any failure of the parser on these untrusted bytes
        raise FileFormatError(f"the .xlsx file is corrupt: {exc}", field="file") from exc
    yield from _first_sheet_with_data(_calamine_rows(workbook, index, limits)
                                      for index in range(len(workbook.sheet_names)))


def _calamine_rows(workbook: CalamineWorkbook, index: int, limits: FileLimits) -> Iterator[list[str]]:
    try:
        rows = workbook.get_sheet_by_index(index).iter_rows()
    except MemoryError:
        raise
    except Exception as exc:  # any failure of the parser on these untrusted bytes
        raise FileFormatError(f"the .xlsx file is corrupt: {exc}", field="file") from exc
    for number, row in enumerate(rows, 1):
        cells = [_cell_text(value) for value in row]
        _check_width(cells, f"row {number}", limits.max_columns)
        yield cells


def _cell_text(value: object) -> str:
    """A cell value as the text a person sees: 254712345678.0 -> "254712345678", dates in ISO."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime) and value.time() == dt.time() and value.tzinfo is None:
        return value.date().isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)

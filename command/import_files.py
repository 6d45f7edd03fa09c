"""Contact import files: detect CSV or XLSX, then stream their rows as cleaned ``ImportRow``s.

Pure and streaming: no database, no HTTP, and rows are yielded one at a time
without reading the file whole (openpyxl does keep an .xlsx's shared string table
in memory, bounded by the archive size limit). Columns are matched by header name
(aliases, or a client's ``mapping``); phones are passed through as text for
``command.phones`` to judge.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec
import openpyxl

from command.errors import DomainError

HEAD_BYTES = 64 * 1024  # what a caller should read for ``detect_format``
SNIFF_CHARS = 16 * 1024  # sample handed to csv.Sniffer
MAX_RECORD_CHARS = 1024 * 1024  # one CSV record (a line, or lines joined by quoted newlines)
MAX_COLUMNS = 200
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024  # an .xlsx archive, all members together
MAX_MEMBER_RATIO = 100  # compression ratio allowed for a member larger than RATIO_CHECKED_ABOVE
RATIO_CHECKED_ABOVE = 10 * 1024 * 1024
DELIMITERS = ",;\t|"
ACCEPTED = "accepted: a CSV file (UTF-8 or Windows-1252 text) or an Excel workbook (.xlsx)"

FIELDS = ("first_name", "last_name", "phone", "email", "tags", "notes")
# Earlier aliases win when a file has several columns for one field ("phone" beats "mobile").
ALIASES = {
    "phone": ("phone", "phone_number", "phonenumber", "mobile", "mobile_number", "msisdn", "cell",
              "cellphone", "telephone", "tel", "number", "phone no"),
    "first_name": ("first_name", "firstname", "first", "given_name", "givenname", "forename", "name"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name"),
    "email": ("email", "e-mail", "email_address", "mail"),
    "tags": ("tags", "tag", "labels", "groups"),
    "notes": ("notes", "note", "comments", "comment", "remarks"),
}

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = "=+-@\t\r"
_NEEDS_QUOTE = re.compile(r"'*[" + re.escape(FORMULA_STARTS) + "]")
_QUOTED = re.compile(r"'+[" + re.escape(FORMULA_STARTS) + "]")
_IGNORED_IN_HEADERS = re.compile(r"[\s_\-.\ufeff]+")
_TAG_SEPARATORS = re.compile(r"[;,]")
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x19\x1b-\x1f\x7f]")
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls) or a password-protected Office file"),
    (b"\xff\xfe", "UTF-16 text (save it as \"CSV UTF-8\")"),
    (b"\xfe\xff", "UTF-16 text (save it as \"CSV UTF-8\")"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)


class ImportRow(msgspec.Struct):
    """One data row of an import file, its cells cleaned; ``row`` counts non-empty data rows from 1."""

    row: int
    phone: str | None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    tags: list[str] = []
    notes: str | None = None


class UnsupportedFileError(DomainError):
    """The upload is not a CSV or XLSX file at all."""

    status_code = 415
    code = "unsupported_file"


class FileFormatError(DomainError):
    """The file is a CSV or XLSX file that cannot be imported as it is."""

    status_code = 422
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


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # may end inside a character
    except UnicodeDecodeError:
        try:
            text = head.decode("cp1252")
        except UnicodeDecodeError:
            return None
    return None if len(_CONTROL_CHARS.findall(text)) * 100 > len(text) else text


def _unsupported(kind: str, filename: str | None) -> UnsupportedFileError:
    subject = f'the file "{filename}"' if filename else "the file"
    return UnsupportedFileError(f"{subject} is {kind}; {ACCEPTED}", field="file")


# -- reading rows ---------------------------------------------------------------------------

def open_rows(path: Path, fmt: str, mapping: dict[str, str] | None = None, *,
              max_uncompressed: int = MAX_UNCOMPRESSED_BYTES) -> tuple[list[str], Iterator[ImportRow]]:
    """The file's headers and a lazy iterator of its rows; close or exhaust it to release the file."""
    if fmt == "csv":
        records = _csv_records(Path(path))
    elif fmt == "xlsx":
        check_xlsx_archive(Path(path), max_uncompressed=max_uncompressed)
        records = _xlsx_records(Path(path))
    else:
        raise ValueError(f"unknown import format {fmt!r}")
    try:
        headers = _header(records)
        columns = _columns(headers, mapping or {})
    except BaseException:
        records.close()
        raise
    return headers, _rows(records, columns)


def _header(records: Iterator[list[str]]) -> list[str]:
    for cells in records:
        if "".join(cells).strip():
            headers = [cell.strip() for cell in cells]
            headers[0] = headers[0].lstrip("\ufeff").strip()
            while headers and not headers[-1]:
                headers.pop()
            return headers
    raise FileFormatError("the file is empty: it has no header row", field="file")


def _key(header: str) -> str:
    return _IGNORED_IN_HEADERS.sub("", header).casefold()


_ALIAS_RANKS = {_key(alias): (field, rank) for field, aliases in ALIASES.items()
                for rank, alias in enumerate(aliases)}
_FIELD_KEYS = {_key(field): field for field in FIELDS}  # "firstName" and "first name" are first_name


def _columns(headers: list[str], mapping: dict[str, str]) -> dict[str, int]:
    """Which column holds each field: the client's mapping first, then the best alias."""
    keys = [_key(header) for header in headers]
    columns: dict[str, int] = {}
    for header, target in mapping.items():
        field = _FIELD_KEYS.get(_key(target))
        if field is None:
            raise FileFormatError(f"the mapping sends {header!r} to {target!r}, which is not one of: "
                                  f"{', '.join(FIELDS)}", field="mapping")
        if _key(header) not in keys:
            raise FileFormatError(f"the mapping names a column {header!r} that is not in the file; "
                                  f"headers found: {_listed(headers)}", field="mapping",
                                  extra={"headers": headers})
        if field in columns:
            raise FileFormatError(f"the mapping sends two columns to {field!r}", field="mapping")
        columns[field] = keys.index(_key(header))
    mapped = set(columns.values())
    matches = sorted((_ALIAS_RANKS[key][1], index, _ALIAS_RANKS[key][0])
                     for index, key in enumerate(keys) if key in _ALIAS_RANKS and index not in mapped)
    for _, index, field in matches:  # best alias first, then leftmost
        columns.setdefault(field, index)
    if "phone" not in columns:
        raise FileFormatError(f"no phone column found; headers found: {_listed(headers)}. Name the column "
                              f"\"phone\" (or mobile, msisdn, ...) or send a column mapping", field="file",
                              extra={"headers": headers})
    return columns


def _listed(headers: list[str]) -> str:
    return ", ".join(repr(header) for header in headers) or "none"


def _rows(records: Iterator[list[str]], columns: dict[str, int]) -> Iterator[ImportRow]:
    first, last, phone, email, tags, notes = (columns.get(field) for field in FIELDS)
    number = 0
    try:
        for cells in records:
            if not "".join(cells).strip():
                continue  # an empty row is not a row
            number += 1
            yield ImportRow(row=number, phone=_cell(cells, phone), first_name=_cell(cells, first),
                            last_name=_cell(cells, last), email=_cell(cells, email),
                            tags=_tags(cells, tags), notes=_cell(cells, notes))
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
    tags = [unneutralise(tag.strip()) for tag in _TAG_SEPARATORS.split(cells[index].lower())]
    return list(dict.fromkeys(tag for tag in tags if tag))


def _check_width(cells: list[str], where: str) -> None:
    if len(cells) > MAX_COLUMNS:
        while cells and not cells[-1].strip():
            cells.pop()
        if len(cells) > MAX_COLUMNS:
            raise FileFormatError(f"{where} has {len(cells)} columns; at most {MAX_COLUMNS} are accepted",
                                  field="file")


# -- CSV ------------------------------------------------------------------------------------

def _csv_records(path: Path) -> Iterator[list[str]]:
    """Each CSV record as a list of strings, with its size and width bounded."""
    encoding = _csv_encoding(path)
    # Process-wide; every caller sets the same value. The line reader below bounds records first.
    csv.field_size_limit(MAX_RECORD_CHARS)
    with path.open("rb") as raw:
        sample = raw.read(SNIFF_CHARS)
        raw.seek(len(codecs.BOM_UTF8) if sample.startswith(codecs.BOM_UTF8) else 0)
        delimiter = _delimiter(sample.decode(encoding, errors="ignore").lstrip("\ufeff"))
        with io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            lines = _BoundedLines(text)
            reader = csv.reader(lines, delimiter=delimiter)
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
                _check_width(cells, f"line {reader.line_num}")
                yield cells


def _csv_encoding(path: Path) -> str:
    """UTF-8 when the whole file decodes as UTF-8 (checked in chunks), else Windows-1252."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as raw:
        try:
            while chunk := raw.read(256 * 1024):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def _delimiter(sample: str) -> str:
    """The sniffed delimiter when the header line has it, else the candidate most in the header line."""
    if "\n" in sample:
        sample = sample[:sample.rindex("\n")]  # drop a line cut by the sample size
    header = next((line for line in sample.splitlines() if line.strip()), "")
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

    def __init__(self, text: io.TextIOWrapper):
        self.text = text
        self.number = 0
        self.record_chars = 0  # reset by the reader loop after each record

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_RECORD_CHARS + 1)  # never holds more than the limit
        if not line:
            raise StopIteration
        self.number += 1
        self.record_chars += len(line)
        if self.record_chars > MAX_RECORD_CHARS:
            raise FileFormatError(f"line {self.number} is too long: a record may hold at most "
                                  f"{MAX_RECORD_CHARS:,} characters", field="file")
        return line


# -- XLSX -----------------------------------------------------------------------------------

def check_xlsx_archive(path: Path, *, max_uncompressed: int = MAX_UNCOMPRESSED_BYTES) -> None:
    """Refuse a corrupt archive, a non-workbook, or a decompression bomb before openpyxl opens it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise FileFormatError(f"the .xlsx file is corrupt: {exc}", field="file") from exc
    if "xl/workbook.xml" not in {member.filename for member in members}:
        raise _unsupported("a ZIP archive without xl/workbook.xml, not an Excel workbook", None)
    total = sum(member.file_size for member in members)
    if total > max_uncompressed:
        raise FileFormatError(f"the .xlsx file expands to {total:,} bytes; at most {max_uncompressed:,} "
                              f"are accepted", field="file")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECKED_ABOVE and ratio > MAX_MEMBER_RATIO:
            raise FileFormatError(f"the .xlsx file looks like a decompression bomb: {member.filename} is "
                                  f"compressed {ratio:,.0f} to 1", field="file")


def _xlsx_records(path: Path) -> Iterator[list[str]]:
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
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()  # a wrong stored size would silently cut rows or columns
        values = sheet.iter_rows(values_only=True)
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
            _check_width(cells, f"row {number}")
            yield cells
    finally:
        workbook.close()


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

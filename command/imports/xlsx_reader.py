"""The XLSX reader: the zip-bomb and XML scan of a workbook, then its first sheet's rows by calamine or openpyxl."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from xml.parsers import expat

import openpyxl
from python_calamine import CalamineWorkbook

from command.imports.formats import FileFormatError, unsupported
from command.imports.limits import DEFAULT_LIMITS, FileLimits, check_width

MAX_MEMBER_RATIO = 100  # compression ratio allowed for a member larger than RATIO_CHECKED_ABOVE
RATIO_CHECKED_ABOVE = 10 * 1024 * 1024
EXCEL_MAX_ROWS = 1_048_576  # Excel's own limits: no genuine workbook goes past them
EXCEL_MAX_COLUMNS = 16_384


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
        raise unsupported("a ZIP archive without xl/workbook.xml, not an Excel workbook", None)
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


def xlsx_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
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
        check_width(cells, f"row {number}", limits.max_columns)
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


def calamine_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
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
        check_width(cells, f"row {number}", limits.max_columns)
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

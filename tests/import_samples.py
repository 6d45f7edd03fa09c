"""Import files for tests and for measuring throughput: contacts as CSV or XLSX, and a zip bomb.

Measure ``open_rows`` (and python-calamine, when installed) on this machine::

    python -m tests.import_samples --rows 100000
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import openpyxl

from command.imports.cells import FORMULA_STARTS
from command.imports.rows import open_rows

HEADERS = ("first_name", "last_name", "phone", "email", "tags", "notes")
_NEEDS_QUOTE = re.compile(r"'*[" + re.escape(FORMULA_STARTS) + "]")


def neutralise(value: str) -> str:
    """The export's formula escape in Python: ``'`` before a cell a spreadsheet would run, or one so escaped.

    The service writes it in SQL (query/exports.py); this is the reference the tests hold
    that SQL to, and what writes escaped cells into sample files.
    """
    # "=1" -> "'=1" and "'=1" -> "''=1", so unneutralise can always take exactly one quote away.
    return "'" + value if _NEEDS_QUOTE.match(value) else value


def contact_rows(count: int) -> Iterator[tuple[str, ...]]:
    """``count`` plausible contacts; notes hold a comma so CSV quoting is exercised."""
    for n in range(count):
        yield (f"Jane{n}", "Doe", f"2547{n % 10**8:08d}", f"jane{n}@example.com", "vip;nairobi",
               f"Met at conference {n}, Nairobi")


def write_csv(path: Path, rows: Iterable[Sequence[object]], headers: Sequence[str] = HEADERS,
              delimiter: str = ",", encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(headers)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: Iterable[Sequence[object]], headers: Sequence[str] = HEADERS) -> Path:
    """A workbook written by openpyxl in streaming mode (every string inline)."""
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Contacts")
    sheet.append(list(headers))
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_PARTS = {
    "[Content_Types].xml": f'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    f'<Default Extension="xml" ContentType="application/xml"/>'
    f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
    f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_TYPE}.worksheet+xml"/>'
    f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_TYPE}.sharedStrings+xml"/></Types>',
    "_rels/.rels": f'<Relationships xmlns="{_RELS}"><Relationship Id="rId1" '
    f'Type="{_DOC_RELS}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
    "xl/workbook.xml": f'<workbook xmlns="{_MAIN}" xmlns:r="{_DOC_RELS}"><sheets>'
    f'<sheet name="Contacts" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{_RELS}">'
    f'<Relationship Id="rId1" Type="{_DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_DOC_RELS}/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
}


def write_xlsx_shared_strings(path: Path, rows: Iterable[Sequence[object]],
                              headers: Sequence[str] = HEADERS) -> Path:
    """A minimal workbook storing text in a shared string table, as Excel and Google Sheets do.

    openpyxl 3.1 writes every string inline, which its reader parses far more slowly,
    so its own files are not representative of what users upload.
    """
    strings: dict[str, int] = {}
    table = [headers, *rows]
    dimension = f"A1:{chr(64 + max(map(len, table)))}{len(table)}"  # Excel always writes one
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, xml in _PARTS.items():
            archive.writestr(name, xml)
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(f'<worksheet xmlns="{_MAIN}"><dimension ref="{dimension}"/><sheetData>'.encode())
            for number, row in enumerate(table, start=1):
                cells = []
                for value in row:
                    if isinstance(value, (int, float)):
                        cells.append(f"<c><v>{value!r}</v></c>")
                    else:
                        cells.append(f'<c t="s"><v>{strings.setdefault(str(value), len(strings))}</v></c>')
                sheet.write(f'<row r="{number}">{"".join(cells)}</row>'.encode())
            sheet.write(b"</sheetData></worksheet>")
        with archive.open("xl/sharedStrings.xml", "w") as sst:
            sst.write(f'<sst xmlns="{_MAIN}" uniqueCount="{len(strings)}">'.encode())
            for text in strings:
                sst.write(f'<si><t xml:space="preserve">{escape(text)}</t></si>'.encode())
            sst.write(b"</sst>")
    return path


def write_zip_bomb(path: Path, member_size: int) -> Path:
    """An .xlsx-shaped zip whose sheet inflates to ``member_size`` bytes of spaces (streamed, ~230:1)."""
    chunk = b" " * (1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:  # fastest
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            for _ in range(member_size // len(chunk)):
                member.write(chunk)
    return path


def _timed(count_rows: Callable[[], int]) -> str:
    """Rows per second by wall clock and by this process's CPU time (fairer on a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = count_rows()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return f"{count / wall:>10,.0f} rows/s wall, {count / cpu:>10,.0f} rows/s CPU ({count:,} rows)"


def _open_rows_count(path: Path, fmt: str) -> int:
    _, rows = open_rows(path, fmt)
    return sum(1 for _ in rows)


def _openpyxl_count(path: Path) -> int:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    count = sum(1 for _ in workbook.worksheets[0].iter_rows(values_only=True)) - 1
    workbook.close()
    return count


def _calamine_count(path: Path) -> int:
    from python_calamine import CalamineWorkbook

    sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
    return sum(1 for _ in sheet.iter_rows()) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_csv(Path(tmp) / "contacts.csv", contact_rows(args.rows))
        xlsx_path = write_xlsx_shared_strings(Path(tmp) / "contacts.xlsx", contact_rows(args.rows))
        inline_path = write_xlsx(Path(tmp) / "inline.xlsx", contact_rows(args.rows))
        print(f"{args.rows:,} rows; CSV {csv_path.stat().st_size:,} B, XLSX {xlsx_path.stat().st_size:,} B")
        print("open_rows CSV:                     ", _timed(partial(_open_rows_count, csv_path, "csv")))
        for label, path in (("shared strings", xlsx_path), ("inline strings", inline_path)):
            print(f"open_rows XLSX, {label}:   ", _timed(partial(_open_rows_count, path, "xlsx")))
            print(f"openpyxl iter_rows, {label}:", _timed(partial(_openpyxl_count, path)))
            if importlib.util.find_spec("python_calamine"):
                print(f"calamine iter_rows, {label}:", _timed(partial(_calamine_count, path)))


if __name__ == "__main__":
    main()

"""What one import file may hold: ``FileLimits``, and the width check both readers apply to each row."""

from __future__ import annotations

from dataclasses import dataclass

from command.imports.formats import FileFormatError

MAX_RECORD_CHARS = 1024 * 1024  # one CSV record (a line, or lines joined by quoted newlines)
MAX_COLUMNS = 200
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024  # an .xlsx archive, all members together
#: The header may sit below title rows ("Customer list, March"): it is the first of this
#: many rows that has a phone column (by alias or mapping).
HEADER_SEARCH_ROWS = 10


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


def check_width(cells: list[str], where: str, max_columns: int) -> None:
    """Refuse a row of more than ``max_columns`` non-empty columns (its empty tail is dropped in place)."""
    if len(cells) > max_columns:
        while cells and not cells[-1].strip():
            cells.pop()
        if len(cells) > max_columns:
            raise FileFormatError(f"{where} has {len(cells)} columns; at most {max_columns} are accepted",
                                  field="file")


"""Import files: format detection, column matching, CSV and XLSX reading, limits. No database."""

from __future__ import annotations

import datetime as dt
import random
import re
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pytest

from command.imports.cells import FORMULA_STARTS, unneutralise
from command.imports.formats import FileFormatError, UnsupportedFileError, detect_format
from command.imports.limits import FileLimits
from command.imports.rows import ImportRow, open_rows
from service.errors import status_of
from tests.import_samples import (
    HEADERS, contact_rows, neutralise, write_csv, write_xlsx, write_xlsx_shared_strings, write_zip_bomb,
)


def read(path: Path, fmt: str = "csv", mapping: dict[str, str] | None = None) -> tuple[list[str], list[ImportRow]]:
    headers, rows = open_rows(path, fmt, mapping)
    return headers, list(rows)


def csv_file(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# -- columns --------------------------------------------------------------------------------

def test_columns_are_matched_by_header_name_in_any_order(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "notes,phone,tags,email,last_name,first_name\n"
                              "Met at conference,+254712345678,vip;nairobi,john@example.com,Doe,John\n")
    headers, rows = read(path)
    assert headers == ["notes", "phone", "tags", "email", "last_name", "first_name"]
    assert rows == [ImportRow(row=1, line=2, phone="+254712345678", first_name="John", last_name="Doe",
                              email="john@example.com", tags=["vip", "nairobi"], notes="Met at conference")]


def test_aliases_ignore_case_spaces_underscores_dashes_and_dots(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Given Name,SURNAME,Phone No.,E-Mail,Labels,Remarks,Shoe size\n"
                              "Amina,Odhiambo,0712345678,amina@example.com,VIP,Likes SMS,42\n")
    _, [row] = read(path)
    assert row == ImportRow(row=1, line=2, phone="0712345678", first_name="Amina", last_name="Odhiambo",
                            email="amina@example.com", tags=["vip"], notes="Likes SMS")


@pytest.mark.parametrize("header", ["phone", "Phone_Number", "PhoneNumber", "mobile", "Mobile Number", "MSISDN",
                                    "cell", "Cellphone", "telephone", "tel", "number", "phone no"])
def test_every_phone_alias_is_recognised(tmp_path: Path, header: str) -> None:
    _, [row] = read(csv_file(tmp_path, f"{header}\n0712345678\n"))
    assert row.phone == "0712345678"


def test_phone_beats_weaker_aliases_and_name_is_used_only_without_another_first_name(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "number,name,mobile,phone,first name\n1,Jane Doe,0700000001,0700000002,Jane\n")
    _, [row] = read(path)
    assert (row.phone, row.first_name) == ("0700000002", "Jane")
    _, [row] = read(csv_file(tmp_path, "Name,Mobile\nJane Doe,0700000001\n"))
    assert (row.phone, row.first_name, row.last_name) == ("0700000001", "Jane", "Doe")


@pytest.mark.parametrize("header", ["Name", "Full Name", "full_name", "FullName", "Contact Name"])
def test_a_full_name_column_is_split_at_its_last_space_without_name_columns(tmp_path: Path, header: str) -> None:
    _, rows = read(csv_file(tmp_path, f"Phone,{header}\n0700000001,Jane Wanjiru\n0700000002,Mary Jane Wanjiru\n"
                                      "0700000003,Cher\n0700000004,\n"))
    assert [(r.first_name, r.last_name) for r in rows] == [
        ("Jane", "Wanjiru"), ("Mary Jane", "Wanjiru"), ("Cher", None), (None, None)]


def test_a_name_column_beside_a_surname_is_the_first_name_and_beside_a_first_name_is_unused(tmp_path: Path) -> None:
    _, [row] = read(csv_file(tmp_path, "Phone,Name,Surname\n0700000001,Jane Akinyi,Wanjiru\n"))
    assert (row.first_name, row.last_name) == ("Jane Akinyi", "Wanjiru")
    _, [row] = read(csv_file(tmp_path, "Phone,Name,First Name\n0700000001,Jane Wanjiru,Janet\n"))
    assert (row.first_name, row.last_name) == ("Janet", None)


def test_mapping_keeps_a_full_name_whole_or_splits_any_column(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Phone,Full Name,Customer\n0700000001,Jane Wanjiru,Otieno Odhiambo\n")
    _, [row] = read(path, mapping={"Full Name": "firstName"})
    assert (row.first_name, row.last_name) == ("Jane Wanjiru", None)
    _, [row] = read(path, mapping={"Customer": "full_name", "Full Name": "notes"})
    assert (row.first_name, row.last_name, row.notes) == ("Otieno", "Odhiambo", "Jane Wanjiru")


def test_mapping_overrides_aliases(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Numéro,Prénom,Number,Phone\n0712345678,Zoë,42,0799999999\n")
    _, [row] = read(path, mapping={"Numéro": "phone", "prénom": "firstName", "Number": "notes"})
    assert (row.phone, row.first_name, row.notes) == ("0712345678", "Zoë", "42")


def test_mapping_to_an_unknown_field_or_a_missing_column_is_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Numéro,Name\n0712345678,Zoë\n")
    with pytest.raises(FileFormatError, match="'birthday'.*first_name, last_name, phone"):
        open_rows(path, "csv", {"Numéro": "birthday"})
    with pytest.raises(FileFormatError, match="'Telefon' that is not in the file.*'Numéro', 'Name'"):
        open_rows(path, "csv", {"Telefon": "phone"})
    with pytest.raises(FileFormatError, match="two columns"):
        open_rows(path, "csv", {"Numéro": "phone", "Name": "phone"})


def test_no_phone_column_is_an_error_naming_the_headers_found(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Name,Numéro,Ville\nZoë,0712345678,Nairobi\n")
    with pytest.raises(FileFormatError, match="no phone column.*'Name', 'Numéro', 'Ville'") as error:
        open_rows(path, "csv")
    assert status_of(error.value) == 422 and error.value.code == "invalid_file"
    assert error.value.extra == {"headers": ["Name", "Numéro", "Ville"]}


# -- CSV ------------------------------------------------------------------------------------

def test_utf8_bom_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    headers, [row] = read(csv_file(tmp_path, "phone,first_name\n0712345678,Zoë\n", encoding="utf-8-sig"))
    assert headers == ["phone", "first_name"]
    assert (row.phone, row.first_name) == ("0712345678", "Zoë")


def test_windows_1252_file_is_decoded(tmp_path: Path) -> None:
    _, [row] = read(csv_file(tmp_path, "first_name;phone;notes\nZoë;0712345678;café – “déjà vu”\n", "cp1252"))
    assert (row.first_name, row.notes) == ("Zoë", "café – “déjà vu”")


def test_windows_1252_is_detected_from_a_byte_far_beyond_the_first_chunk(tmp_path: Path) -> None:
    lines = [f"Jane{n},07{n:08d}" for n in range(50_000)] + ["Zoë,0799999999"]
    _, rows = read(csv_file(tmp_path, "first_name,phone\n" + "\n".join(lines) + "\n", "cp1252"))
    assert rows[-1].first_name == "Zoë" and len(rows) == 50_001


def test_a_bad_byte_after_ascii_chunks_is_named_on_its_own_line(tmp_path: Path) -> None:
    """ASCII chunks are skipped by the encoding check (most files), and still count their lines."""
    path = tmp_path / "c.csv"
    path.write_bytes(b"phone,first_name\n" + b"".join(b"07%08d,Jane\n" % n for n in range(50_000)) + b"0799999999,\x81\n")
    with pytest.raises(FileFormatError, match="neither UTF-8 nor Windows-1252 text \\(byte 0x81 on line 50002\\)"):
        read(path)


def test_a_character_cut_at_a_chunk_boundary_before_ascii_is_found_on_its_line(tmp_path: Path) -> None:
    """A UTF-8 lead byte ending the first 256 KiB chunk, then only ASCII: a byte that is not UTF-8, on its line."""
    body = "first_name,phone\nZoë,0711111111\n".encode() + b"".join(b"Jane%06d,07%08d\n" % (n, n)
                                                                     for n in range(20_000))
    cut = 256 * 1024 - 1  # the lead byte is the chunk's last byte
    line_start = body.rindex(b"\n", 0, cut) + 1
    line = body.count(b"\n", 0, line_start) + 1
    path = tmp_path / "c.csv"
    path.write_bytes(body[:line_start] + b"A" * (cut - line_start) + b"\xc3,0799999999\n" + b"Jane,0799999998\n")
    with pytest.raises(FileFormatError, match=f"mixes UTF-8 text with bytes that are not UTF-8 \\(byte 0xc3 on line {line}\\)"):
        read(path)


@pytest.mark.parametrize("utf8_names, cp1252_names", [
    (["Zoë"], ["André"]), (["Zoë", "José", "Chloé"], ["André", "Hélène", "Françoise Noël"])])
def test_a_file_mixing_utf8_and_windows_1252_is_refused_whichever_has_more(tmp_path: Path, utf8_names: list[str],
                                                                           cp1252_names: list[str]) -> None:
    """Two files pasted together: read either way, one half's names would be stored garbled."""
    path = tmp_path / "c.csv"
    path.write_bytes("phone,first_name\n".encode() + "".join(f"07123456{i:02d},{n}\n" for i, n in enumerate(utf8_names))
                     .encode() + "".join(f"07223456{i:02d},{n}\n" for i, n in enumerate(cp1252_names)).encode("cp1252"))
    with pytest.raises(FileFormatError, match="mixes UTF-8 text with bytes that are not UTF-8"):
        read(path)


def test_bytes_that_are_neither_utf8_nor_windows_1252_are_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"phone,first_name\n0712345678,Zo\xeb\n0712345679,\x81\n")
    with pytest.raises(FileFormatError, match="neither UTF-8 nor Windows-1252 text \\(byte 0x81"):
        read(path)


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    path = write_csv(tmp_path / "c.csv", [("Jane", "Doe", "0712345678", "j@example.com", "a,b", "x, y; z")],
                     delimiter=delimiter)
    _, [row] = read(path)
    assert (row.first_name, row.phone, row.tags, row.notes) == ("Jane", "0712345678", ["a", "b"], "x, y; z")


@pytest.mark.parametrize("sep_line", ["sep=;\r\n", "SEP=;\n"])
def test_excels_sep_line_names_the_delimiter_and_is_not_the_header(tmp_path: Path, sep_line: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text(sep_line + "first_name;phone;notes\r\nJane;0712345678;a, b\r\n", encoding="utf-8-sig")
    _, [row] = read(path)
    assert (row.row, row.first_name, row.phone, row.notes) == (1, "Jane", "0712345678", "a, b")


@pytest.mark.parametrize("phone_header, email_header", [("Mobile Phone", "E-mail Address"),  # Outlook
                                                         ("Phone 1 - Value", "E-mail 1 - Value"),  # Google Contacts
                                                         ("Mobile No.", "Email"), ("WhatsApp", "email")])
def test_headers_of_common_contact_exports_are_recognised(tmp_path: Path, phone_header: str, email_header: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text(f"First Name,{phone_header},{email_header}\nJane,0712345678,jane@example.com\n")
    _, [row] = read(path)
    assert (row.first_name, row.phone, row.email) == ("Jane", "0712345678", "jane@example.com")


def test_semicolon_file_with_commas_in_every_row_keeps_the_semicolon(tmp_path: Path) -> None:
    rows = [(f"Jane{n}", f"07{n:08d}", f"Met on {n}, in Nairobi, Kenya") for n in range(100)]
    path = write_csv(tmp_path / "c.csv", rows, headers=("first_name", "phone", "notes"), delimiter=";")
    _, read_rows = read(path)
    assert [r.notes for r in read_rows[:2]] == ["Met on 0, in Nairobi, Kenya", "Met on 1, in Nairobi, Kenya"]


def test_quoted_fields_keep_commas_quotes_and_newlines(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 'phone,notes,first_name\r\n0712345678,"Line one, still one\r\nline ""two""",Jane\r\n'
                              '0712345679,plain,Bob\r\n')
    _, rows = read(path)
    assert [(r.row, r.notes, r.first_name) for r in rows] == [
        (1, 'Line one, still one\r\nline "two"', "Jane"), (2, "plain", "Bob")]


def test_empty_rows_are_skipped_and_not_counted(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "\n\nphone,first_name\n\n0700000001,A\n,\n  ,  \n\n0700000002,B\n\n")
    _, rows = read(path)
    assert [(r.row, r.phone) for r in rows] == [(1, "0700000001"), (2, "0700000002")]


def test_rows_with_only_other_cells_count_and_have_no_phone(tmp_path: Path) -> None:
    _, rows = read(csv_file(tmp_path, "phone,first_name,extra\n,,x\n0700000001\n"))
    assert [(r.row, r.phone, r.first_name) for r in rows] == [(1, None, None), (2, "0700000001", None)]


def test_cells_are_stripped_and_tags_split_lowered_and_deduplicated(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 'phone,first_name,email,tags,notes\n'
                              ' 0712345678 ,  ,  a@b.co ," VIP; Nairobi ,vip,,;Agent " ,  \n')
    _, [row] = read(path)
    assert row == ImportRow(row=1, line=2, phone="0712345678", first_name=None, last_name=None, email="a@b.co",
                            tags=["vip", "nairobi", "agent"], notes=None)


def test_neutralised_cells_are_restored(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [(neutralise("=cmd"), neutralise("-Doe"), neutralise("+254712345678"),
                                           neutralise("@x.co"), ";".join(map(neutralise, ["=a", "'=b", "c"])),
                                           neutralise("'+1 is fine"))])
    _, [row] = read(path)
    assert (row.first_name, row.last_name, row.phone, row.email, row.tags, row.notes) == (
        "=cmd", "-Doe", "+254712345678", "@x.co", ["=a", "'=b", "c"], "'+1 is fine")


def test_header_only_file_has_no_rows_and_an_empty_file_is_an_error(tmp_path: Path) -> None:
    assert read(csv_file(tmp_path, "phone,first_name\r\n")) == (["phone", "first_name"], [])
    with pytest.raises(FileFormatError, match="empty"):
        open_rows(csv_file(tmp_path, "\n \n\n"), "csv")
    with pytest.raises(FileFormatError, match="empty"):
        detect_format(b"", "contacts.csv")


def test_rows_are_read_lazily(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "phone\n" + "0700000001\n" * 10 + "x" * 2_000_000 + "\n")
    _, rows = open_rows(path, "csv")
    assert next(rows).phone == "0700000001"  # the bad line further down has not been read yet
    with pytest.raises(FileFormatError, match="line 12 is too long"):
        list(rows)


def test_a_2_mb_field_on_one_line_is_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "phone,notes\n0712345678," + "x" * 2_000_000 + "\n")
    with pytest.raises(FileFormatError, match="line 2 is too long"):
        read(path)


def test_a_2_mb_quoted_field_over_many_lines_is_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, 'phone,notes\n0712345678,"' + "many short lines\n" * 130_000 + '"\n')
    with pytest.raises(FileFormatError, match="too long"):
        read(path)


def test_a_field_under_the_limit_but_over_the_csv_default_is_read(tmp_path: Path) -> None:
    _, [row] = read(csv_file(tmp_path, "phone,notes\n0712345678," + "x" * 500_000 + "\n"))
    assert len(row.notes or "") == 500_000


def test_10000_columns_is_an_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "phone," + ",".join(f"c{n}" for n in range(9_999)) + "\n1\n")
    with pytest.raises(FileFormatError, match="10,?000 columns; at most 200"):
        open_rows(path, "csv")
    wide_row = csv_file(tmp_path, "phone\n1" + ",x" * 10_000 + "\n", name="wide.csv")
    with pytest.raises(FileFormatError, match="line 2 has 10001 columns"):
        read(wide_row)


def test_trailing_empty_cells_do_not_count_as_columns(tmp_path: Path) -> None:
    _, [row] = read(csv_file(tmp_path, "phone" + "," * 500 + "\n0712345678" + "," * 500 + "\n"))
    assert row.phone == "0712345678"


@pytest.mark.slow  # about 10 s of CPU: `make test-unit` leaves it to `make test`
def test_200000_rows_are_read_in_bounded_memory(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", contact_rows(200_000))
    assert path.stat().st_size > 15_000_000
    tracemalloc.start()
    try:
        _, rows = open_rows(path, "csv")
        count = sum(1 for _ in rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 20 * 1024 * 1024, f"peak {peak:,} bytes"


# -- XLSX -----------------------------------------------------------------------------------

def test_xlsx_numbers_become_text_dates_iso_and_formulas_their_cached_value(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Phone", "First Name", "Notes", "Tags", None, None])
    sheet.append([254712345678, "Jane", "=1+1", "VIP"])
    sheet.append([254712345679.0, "=HYPERLINK(\"http://x\")", dt.datetime(2024, 5, 1), None])
    sheet.append([None, None, None, None])
    sheet.append(["+254712345680", "Zoë", dt.datetime(2024, 5, 1, 13, 30), 12.5])
    workbook.save(tmp_path / "c.xlsx")

    headers, rows = read(tmp_path / "c.xlsx", "xlsx")
    assert headers == ["Phone", "First Name", "Notes", "Tags"]
    # openpyxl stores formulas without a cached value: read with data_only, they are empty.
    assert [(r.row, r.phone, r.first_name, r.notes, r.tags) for r in rows] == [
        (1, "254712345678", "Jane", None, ["vip"]),
        (2, "254712345679", None, "2024-05-01", []),
        (3, "+254712345680", "Zoë", "2024-05-01T13:30:00", ["12.5"]),
    ]


def test_xlsx_neutralised_text_is_restored_and_mapping_applies(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "c.xlsx", [("0712345678", neutralise("=1+1"), neutralise("@me"))],
                      headers=("Numéro", "Prénom", "Notes"))
    _, [row] = read(path, "xlsx", {"Numéro": "phone", "Prénom": "first_name"})
    assert (row.phone, row.first_name, row.notes) == ("0712345678", "=1+1", "@me")


def test_xlsx_with_a_shared_string_table_as_excel_writes_it(tmp_path: Path) -> None:
    path = write_xlsx_shared_strings(tmp_path / "c.xlsx", [("Zoë", "N'Dour", 254712345678, "z@example.com",
                                                            "VIP, vip", "a & b <c>")])
    _, [row] = read(path, "xlsx")
    assert row == ImportRow(row=1, line=2, phone="254712345678", first_name="Zoë", last_name="N'Dour",
                            email="z@example.com", tags=["vip"], notes="a & b <c>")


def test_xlsx_reads_the_first_worksheet(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["phone"])
    workbook.active.append(["0700000001"])
    other = workbook.create_sheet("Other")
    other.append(["nothing here"])
    workbook.active = 1
    workbook.save(tmp_path / "c.xlsx")
    assert read(tmp_path / "c.xlsx", "xlsx")[1][0].phone == "0700000001"


def test_xlsx_with_a_wrong_stored_dimension_is_read_whole(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    for row in [HEADERS, *contact_rows(3)]:
        workbook.active.append(row)
    workbook.save(tmp_path / "c.xlsx")
    patched = tmp_path / "patched.xlsx"
    with zipfile.ZipFile(tmp_path / "c.xlsx") as src, zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data, replaced = re.subn(rb'<dimension ref="A1:F4"\s*/>', b'<dimension ref="A1:B2"/>', data)
                assert replaced == 1
            dst.writestr(item, data)
    headers, rows = read(patched, "xlsx")
    assert len(headers) == 6 and len(rows) == 3 and rows[2].notes == "Met at conference 2, Nairobi"


def test_both_xlsx_readers_give_the_same_rows(tmp_path: Path) -> None:
    """python-calamine reads workbooks up to a cell budget, openpyxl the larger ones: same rows either way."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([None, "Phone", "First Name", "Notes", "Tags", "Email"])
    sheet.append([None, 254712345678, "Jane", "=1+1", "VIP; new", "j@example.com"])
    sheet.append([None, 254712345679.0, neutralise("=cmd"), dt.datetime(2024, 5, 1), True, None])
    sheet.append([None, None, None, None, None, None])
    sheet.append([None, "+254712345680", "Zoë", dt.datetime(2024, 5, 1, 13, 30), 12.5, "z@example.com"])
    sheet.append([None, "0712345681", "a, \"quoted\"\nline", dt.date(2024, 1, 2), 0.1, None])
    workbook.save(tmp_path / "mixed.xlsx")
    files = [tmp_path / "mixed.xlsx", write_xlsx(tmp_path / "plain.xlsx", contact_rows(300)),
             write_xlsx_shared_strings(tmp_path / "shared.xlsx", [("Zoë", "N'Dour", 254712345678, "z@example.com",
                                                                   "VIP, vip", "a & b <c>")])]
    for path in files:
        fast = open_rows(path, "xlsx", limits=FileLimits())
        streamed = open_rows(path, "xlsx", limits=FileLimits(xlsx_fast_max_cells=0))
        fast_rows, streamed_rows = list(fast[1]), list(streamed[1])
        # calamine leaves out empty leading columns; the named headers and the rows are the same.
        assert [h for h in fast[0] if h] == [h for h in streamed[0] if h], path.name
        assert fast_rows == streamed_rows, path.name
        assert len(fast_rows) >= 1


def test_corrupt_xlsx_is_a_format_error(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", contact_rows(500)).read_bytes()
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes(good[: len(good) // 2])
    assert detect_format(truncated.read_bytes()[:65536], None) == "xlsx"
    with pytest.raises(FileFormatError, match="the .xlsx file is corrupt"):
        read(truncated, "xlsx")
    garbled = tmp_path / "garbled.xlsx"
    garbled.write_bytes(good[:200] + random.Random(1).randbytes(len(good) - 1200) + good[-1000:])
    with pytest.raises(FileFormatError, match="the .xlsx file is corrupt"):
        read(garbled, "xlsx")


def test_xlsx_decompression_bomb_is_refused_before_parsing(tmp_path: Path) -> None:
    bomb = write_zip_bomb(tmp_path / "bomb.xlsx", 300 * 1024 * 1024)
    assert bomb.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(FileFormatError, match="expands to 314,5"):
        open_rows(bomb, "xlsx")
    with pytest.raises(FileFormatError, match="decompression bomb"):
        open_rows(bomb, "xlsx", limits=FileLimits(max_uncompressed_bytes=10**12))


def test_xlsx_size_limit_is_a_parameter(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "c.xlsx", contact_rows(100))
    with pytest.raises(FileFormatError, match="at most 1,000 are accepted"):
        open_rows(path, "xlsx", limits=FileLimits(max_uncompressed_bytes=1000))
    assert len(read(path, "xlsx")[1]) == 100


def test_zip_without_a_workbook_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "c.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/other.xml", "<x/>")
    with pytest.raises(UnsupportedFileError, match="without xl/workbook.xml"):
        open_rows(path, "xlsx")


# -- detection ------------------------------------------------------------------------------

def test_xlsx_and_csv_are_detected_by_content_not_by_name(tmp_path: Path) -> None:
    xlsx = write_xlsx(tmp_path / "c.xlsx", contact_rows(3)).read_bytes()
    assert detect_format(xlsx[:65536], "contacts.csv") == "xlsx"
    assert detect_format(b"phone,first_name\r\n0712345678,Jane\r\n", "contacts.xlsx") == "csv"
    assert detect_format("\ufeffphone;prénom\n".encode(), None) == "csv"
    assert detect_format("phone;prénom\n0712;Zoë\n".encode("cp1252"), "x.txt") == "csv"
    assert detect_format("phone\n0712\n".encode()[:7] + "é".encode()[:1], None) == "csv"  # cut mid-character


@pytest.mark.parametrize(("head", "detected"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n", "PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Excel 97-2003 workbook"),
    (random.Random(0).randbytes(4096), "binary data"),
    (bytes(range(1, 32)) * 10, "binary data"),
    (b"\xff\xfep\x00h\x00o\x00n\x00e\x00", "UTF-16"),
    (b'<?xml version="1.0"?>\n<?mso-application progid="Excel.Sheet"?>', "HTML or XML"),
])
def test_other_files_are_unsupported_saying_what_they_are(head: bytes, detected: str) -> None:
    with pytest.raises(UnsupportedFileError, match=detected) as error:
        detect_format(head, "contacts.xls")
    assert 'the file "contacts.xls"' in str(error.value) and "accepted: a CSV file" in str(error.value)
    assert status_of(error.value) == 415 and error.value.code == "unsupported_file"


def test_zips_that_are_not_workbooks_are_unsupported(tmp_path: Path) -> None:
    for name, member in (("a.zip", "contacts.csv"), ("b.docx", "word/document.xml")):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr(member, "phone\n0712345678\n")
        with pytest.raises(UnsupportedFileError, match="ZIP archive|Word document"):
            detect_format((tmp_path / name).read_bytes(), name)


# -- neutralising ---------------------------------------------------------------------------

def test_neutralise_prefixes_formula_starts_and_already_escaped_ones() -> None:
    assert [neutralise(v) for v in ("=1+1", "+254", "-5", "@SUM", "\tx", "\rx", "'=1", "''+1", "'x", "a=1", "")] \
        == ["'=1+1", "'+254", "'-5", "'@SUM", "'\tx", "'\rx", "''=1", "'''+1", "'x", "a=1", ""]
    assert [unneutralise(v) for v in ("'=1", "''=1", "'x", "'", "=1", "")] == ["=1", "'=1", "'x", "'", "=1", ""]


def test_neutralise_round_trips_every_string() -> None:
    rng = random.Random(20240501)
    alphabet = FORMULA_STARTS + "'' a1é\n,;\""
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(50_000)]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))) for _ in range(5_000)]
    for value in values:
        escaped = neutralise(value)
        assert unneutralise(escaped) == value, repr(value)
        assert not escaped or escaped[0] not in FORMULA_STARTS, repr(value)


def test_mapping_null_ignores_a_column_an_alias_would_take(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Phone,Mobile,Name,Notes\n0700000001,0700000002,Jane Wanjiru,hi\n")
    _, [row] = read(path, mapping={"Phone": None, "name": None, "Absent": None})
    assert (row.phone, row.first_name, row.last_name, row.notes) == ("0700000002", None, None, "hi")


def test_the_header_is_found_below_title_rows(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Customer list\nExported 2026-03-01\n\nFirst Name;Phone\nJane;0700000001\n")
    headers, [row] = read(path)
    assert headers == ["First Name", "Phone"]
    assert (row.first_name, row.phone, row.row, row.line) == ("Jane", "0700000001", 1, 5)


def test_a_header_further_than_ten_rows_down_is_not_searched_for(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Title\n" * 10 + "phone\n0700000001\n")
    with pytest.raises(FileFormatError, match="no phone column found; headers found: 'Title'"):
        read(path)


def test_an_xlsx_whose_first_sheet_is_empty_is_read_from_the_first_sheet_with_data(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Cover"
    book.create_sheet("Empty too")
    data = book.create_sheet("Contacts")
    data["B3"] = "phone"
    data["B4"] = "0700000001"
    book.create_sheet("Later")["A1"] = "phone"
    path = tmp_path / "sheets.xlsx"
    book.save(path)
    for limits in (FileLimits(), FileLimits(xlsx_fast_max_cells=0)):  # python-calamine, then openpyxl
        headers, rows = open_rows(path, "xlsx", limits=limits)
        [row] = list(rows)
        assert headers[-1] == "phone" and (row.phone, row.line) == ("0700000001", 4), limits


def test_an_xlsx_of_empty_sheets_only_is_an_empty_file(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.create_sheet("Two")
    path = tmp_path / "empty.xlsx"
    book.save(path)
    for limits in (FileLimits(), FileLimits(xlsx_fast_max_cells=0)):
        with pytest.raises(FileFormatError, match="empty"):
            open_rows(path, "xlsx", limits=limits)

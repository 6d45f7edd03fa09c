"""Imports through HTTP: counts, reasons, lists, limits, idempotency, concurrency."""

from __future__ import annotations

import csv
import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import openpyxl
import psycopg
import pytest

from tests.support import Service
from tests.waits import wait_until

MIXED = (
    "Phone Number;First Name;Surname;E-mail;Tags;Notes\n"
    "0712 000 001;Amina;Otieno;amina@example.com;vip, nairobi;\"likes; semicolons\nand newlines\"\n"  # valid
    "+254 20 1234567;Land;Line;;;\n"                       # invalid: unknown_network
    "0712000001;Dup;InFile;;;\n"                            # skipped: duplicate in file
    "0799 111 222;Already;There;;;\n"                       # skipped: already exists
    "12;Bad;Phone;;;\n"                                     # skipped: unparseable
    ";No;Phone;;;\n"                                        # skipped: missing phone
    "+234 803 123 4567;Chidi;Okeke;not-an-email;;\n"        # valid (email dropped)
)


def _upload(api, content: bytes, name: str = "contacts.csv", **fields):
    return api.post("/api/v1/contacts/import", files={"file": (name, content, "application/octet-stream")},
                    data=fields)


def _report(api, import_id: str) -> list[dict]:
    text = api.get(f"/api/v1/contacts/imports/{import_id}/report.csv").text
    return list(csv.DictReader(io.StringIO(text)))


def test_mixed_file_counts_and_row_reasons(service: Service) -> None:
    api = service.client()
    existing = api.create_contact("0799111222")
    r = _upload(api, MIXED.encode("utf-8-sig"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("imported", "valid", "invalid", "skipped", "rows")} == {
        "imported": 3, "valid": 2, "invalid": 1, "skipped": 4, "rows": 7}
    assert body["imported"] == body["valid"] + body["invalid"]
    assert body["imported"] + body["skipped"] == body["rows"]
    reasons = {(int(r["row"]), r["reason"]) for r in _report(api, body["importId"])}
    assert reasons == {(2, "unknown_network"), (3, "duplicate_in_file"), (4, "already_exists"),
                       (5, "unparseable_phone"), (6, "missing_phone"), (7, "invalid_email_dropped")}
    already = next(r for r in _report(api, body["importId"]) if r["reason"] == "already_exists")
    assert already["contact_id"] == existing["id"]
    unparseable = next(r for r in _report(api, body["importId"]) if r["reason"] == "unparseable_phone")
    assert unparseable["detail"] == "phone is invalid: too short"  # no value from the file, no gap where it was
    amina = api.get("/api/v1/contacts", params={"search": "amina"}).json()["contacts"][0]
    assert amina["phone"] == "+254712000001" and amina["tags"] == ["vip", "nairobi"]
    assert amina["notes"] == "likes; semicolons\nand newlines" and amina["email"] == "amina@example.com"
    land = api.get("/api/v1/contacts", params={"search": "land"}).json()["contacts"][0]
    assert (land["status"], land["invalidReason"]) == ("invalid", "unknown_network")
    assert api.get("/api/v1/contacts").json()["total"] == 4
    job = api.get(f"/api/v1/contacts/imports/{body['importId']}").json()
    assert job["status"] == "completed" and job["counts"]["skipped"] == 4 and job["source"] == "csv"


def test_report_lines_are_the_rows_a_spreadsheet_shows_and_duplicates_name_the_earlier_line(
        service: Service) -> None:
    api = service.client()
    existing = api.create_contact("0799111333")
    content = ("phone,notes\n"          # line 1
               "0712000101,\"two\nlines\"\n"  # line 2 (one row in a spreadsheet)
               "\n"                       # line 3: blank
               "0799111333,\n"            # line 4: already in the account
               "0712 000 101,again\n"     # line 5: duplicate of line 2
               "12,\n")                   # line 6: unparseable
    r = _upload(api, content.encode())
    assert r.status_code == 201, r.text
    report = {r["reason"]: r for r in _report(api, r.json()["importId"])}
    assert {reason: (int(r["line"]), int(r["row"])) for reason, r in report.items()} == {
        "already_exists": (4, 2), "duplicate_in_file": (5, 3), "unparseable_phone": (6, 4)}
    assert report["duplicate_in_file"]["detail"] == "the number appears earlier in this import, on line 2"
    first = api.get("/api/v1/contacts", params={"search": "0712000101"}).json()["contacts"][0]
    assert report["duplicate_in_file"]["contact_id"] == first["id"]
    assert report["already_exists"]["contact_id"] == existing["id"]
    assert list(_report(api, r.json()["importId"])[0]) == ["line", "row", "outcome", "reason", "detail", "contact_id"]


def test_a_duplicate_in_a_later_batch_names_the_earlier_line_and_contact(service: Service) -> None:
    api = service.client()
    rows = [f"07130{i:05d}" for i in range(1005)] + ["0713000007"]
    r = _upload(api, ("phone\n" + "\n".join(rows) + "\n").encode())
    assert r.status_code == 201, r.text
    [dup] = _report(api, r.json()["importId"])
    assert (dup["reason"], dup["line"]) == ("duplicate_in_file", "1007")
    assert dup["detail"].endswith("on line 9")
    first = api.get("/api/v1/contacts", params={"search": "0713000007"}).json()["contacts"][0]
    assert dup["contact_id"] == first["id"]


def test_xlsx_report_lines_match_the_sheet_rows(service: Service, tmp_path) -> None:
    api = service.client()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["phone"])
    sheet.append(["0712000201"])
    sheet.append([None])
    sheet.append(["12"])
    path = tmp_path / "lines.xlsx"
    book.save(path)
    r = _upload(api, path.read_bytes(), name="lines.xlsx")
    assert r.status_code == 201, r.text
    [bad] = _report(api, r.json()["importId"])
    assert (bad["line"], bad["row"], bad["reason"]) == ("4", "2", "unparseable_phone")


def test_list_id_adds_every_imported_contact_and_counts_exactly(service: Service) -> None:
    api = service.client()
    lst = api.create_list("imported")
    rows = "phone,first_name\n" + "".join(f"07120{i:05d},N{i}\n" for i in range(50))
    body = _upload(api, rows.encode(), listId=lst["id"]).json()
    assert body["imported"] == 50
    assert api.get("/api/v1/contact-lists").json()[0]["contactCount"] == 50
    assert api.get("/api/v1/contacts", params={"listId": lst["id"]}).json()["total"] == 50


def test_unknown_list_is_422_before_anything_is_written(service: Service) -> None:
    api = service.client()
    r = _upload(api, b"phone\n0712000001\n", listId=str(uuid.uuid4()))
    assert r.status_code == 422 and r.json()["error"] == "unknown_lists"
    assert r.json()["errors"][0]["field"] == "listId"  # the field the import was sent with
    bulk = api.post("/api/v1/contacts/bulk", json={"listId": str(uuid.uuid4()), "contacts": [{"phone": "0712000001"}]})
    assert bulk.status_code == 422 and bulk.json()["errors"][0]["field"] == "listId"
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_a_form_with_two_files_is_422_and_imports_neither(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contacts/import", files=[("file", ("a.csv", b"phone\n0712000001\n")),
                                                   ("file", ("b.csv", b"phone\n0712000002\n"))])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"
    assert "more than one 'file'" in r.json()["message"]
    twice = _upload(api, b"phone\n0712000001\n", region=["KE", "NG"])
    assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "region"
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_file_without_phone_column_is_422_naming_headers(service: Service) -> None:
    api = service.client()
    r = _upload(api, b"name,city\nJohn,Nairobi\n")
    assert r.status_code == 422
    assert "name" in r.json()["message"] and "city" in r.json()["message"]
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_mapping_maps_client_headers(service: Service) -> None:
    api = service.client()
    r = _upload(api, "Numéro,Prénom\n0712000001,Zoë\n".encode(), mapping='{"Numéro": "phone", "Prénom": "first_name"}')
    assert r.status_code == 201, r.text
    assert api.get("/api/v1/contacts").json()["contacts"][0]["firstName"] == "Zoë"


def test_xlsx_import_with_numeric_phones(service: Service, tmp_path) -> None:
    api = service.client()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["First Name", "Mobile", "Tags"])
    sheet.append(["Wanjiru", 254712000001, "vip"])
    sheet.append(["Baraka", "0712 000 002", None])
    path = tmp_path / "c.xlsx"
    book.save(path)
    r = _upload(api, path.read_bytes(), name="c.xlsx")
    assert r.status_code == 201, r.text
    assert (r.json()["imported"], r.json()["skipped"]) == (2, 0)
    phones = sorted(c["phone"] for c in api.get("/api/v1/contacts").json()["contacts"])
    assert phones == ["+254712000001", "+254712000002"]


def test_unsupported_file_is_415(service: Service) -> None:
    api = service.client()
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    r = _upload(api, png, name="contacts.csv")
    assert r.status_code == 415, r.text


def test_upload_over_the_limit_is_413_and_writes_nothing(service: Service) -> None:
    import dataclasses

    api = service.client()
    small = dataclasses.replace(service.container.settings, import_max_bytes=1000)
    original, service.container.settings = service.container.settings, small
    try:
        r = _upload(api, ("phone\n" + "0712000001\n" * 500).encode())
    finally:
        service.container.settings = original
    assert r.status_code == 413
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_idempotency_key_replays_the_first_result(service: Service) -> None:
    api = service.client()
    content = b"phone\n0712000001\n0712000002\n"
    first = api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)},
                     headers={"Idempotency-Key": "upload-1"})
    again = api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)},
                     headers={"Idempotency-Key": "upload-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert api.get("/api/v1/contacts").json()["total"] == 2
    other = api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)},
                     headers={"Idempotency-Key": "upload-2"})
    assert other.json()["skipped"] == 2  # a new key is a new import: every number already exists


def test_a_retry_while_the_keyed_import_runs_is_409_and_once_it_ends_the_first_result(service: Service) -> None:
    """The running import holds its job: a retry with its key is told to wait, and never runs it a second time."""
    api = service.client()
    content = ("phone\n" + "".join(f"0712{i:06d}\n" for i in range(60_000))).encode()
    request = {"files": {"file": ("big.csv", content)}, "headers": {"Idempotency-Key": "slow-1"}}
    with ThreadPoolExecutor(1) as pool, psycopg.connect(service.container.database_url, autocommit=True) as db:
        first = pool.submit(lambda: api.post("/api/v1/contacts/import", timeout=300, **request))
        import_id = wait_until(lambda: db.execute("SELECT id FROM imports WHERE account_id = %s AND rows_read > 0",
                                                  (api.account_id,)).fetchone(), "a batch stored", 60, 0.01)[0]
        retry = api.post("/api/v1/contacts/import", **request)
        assert retry.status_code == 409, retry.text
        assert retry.json()["error"] == "import_in_progress" and retry.json()["importId"] == str(import_id)
        done = first.result()
    assert done.status_code == 201 and done.json()["imported"] == 60_000, done.text
    again = api.post("/api/v1/contacts/import", **request)
    assert again.status_code == 200 and again.json() == done.json()
    assert api.get("/api/v1/contacts").json()["total"] == 60_000


def test_an_idempotency_key_reused_for_other_data_is_422_and_imports_nothing(service: Service) -> None:
    api = service.client()
    lst = api.create_list("K")
    first = _upload_keyed(api, b"phone\n0712000011\n0712000012\n", "k1")
    assert first.status_code == 201 and first.json()["imported"] == 2
    for response in (_upload_keyed(api, b"phone\n0712000013\n", "k1"),  # another file
                     _upload_keyed(api, b"phone\n0712000011\n0712000012\n", "k1", listId=lst["id"]),
                     _upload_keyed(api, b"phone\n0712000011\n0712000012\n", "k1", region="NG"),
                     api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "0712000014"}]},
                              headers={"Idempotency-Key": "k1"}),  # the other endpoint
                     api.post("/api/v1/contacts/import", files={"file": ("a.csv", b"phone\n0712000016\n")},
                              headers={"Idempotency-Key": "k1", "Prefer": "respond-async"})):  # queued
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "idempotency_key_reused"
        assert response.json()["importId"] == first.json()["importId"]
    assert api.get("/api/v1/contacts").json()["total"] == 2
    assert api.get("/api/v1/contact-lists").json()[0]["contactCount"] == 0
    # The same request again is still the replay; so is a JSON retry of a JSON import.
    assert _upload_keyed(api, b"phone\n0712000011\n0712000012\n", "k1").json() == first.json()
    body = {"contacts": [{"phone": "0712000015", "tags": ["a"]}], "region": "KE"}
    j1 = api.post("/api/v1/contacts/bulk", json=body, headers={"Idempotency-Key": "j1"})
    j2 = api.post("/api/v1/contacts/bulk", json=body, headers={"Idempotency-Key": "j1"})
    assert (j1.status_code, j2.status_code) == (201, 200) and j2.json() == j1.json()
    body["contacts"][0]["tags"] = ["b"]
    assert api.post("/api/v1/contacts/bulk", json=body, headers={"Idempotency-Key": "j1"}).status_code == 422
    assert api.get("/api/v1/contacts").json()["total"] == 3


def _upload_keyed(api, content: bytes, key: str, **fields):
    return api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)}, data=fields,
                    headers={"Idempotency-Key": key})


def test_json_bulk_import_takes_phones_given_as_json_numbers(service: Service) -> None:
    """A browser's spreadsheet parser gives numeric cells as numbers: one must not refuse the whole request."""
    api = service.client()
    r = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": 712345679}, {"phone": 2348031234567},
                                                             {"phone": "0712345680"}]})
    assert r.status_code == 201 and r.json()["imported"] == 3, r.text
    phones = sorted(c["phone"] for c in api.get("/api/v1/contacts").json()["contacts"])
    assert phones == ["+2348031234567", "+254712345679", "+254712345680"]
    assert api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": 7.5}]}).status_code == 422


def test_imports_keep_opt_outs_given_in_a_column_or_in_json(service: Service) -> None:
    """Contacts moved between accounts must not become messageable again."""
    api = service.client()
    content = (b"phone,first_name,Opted Out\n0712000301,Yes,yes\n0712000302,No,no\n0712000303,Blank,\n"
               b"0712000304,Odd,maybe\n")
    assert _upload(api, content).json()["imported"] == 4
    bulk = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "0712000305", "firstName": "Json",
                                                                 "isOptedOut": True}, {"phone": "0712000306"}]})
    assert bulk.status_code == 201, bulk.text
    opted = {c["firstName"]: c["isOptedOut"] for c in api.get("/api/v1/contacts").json()["contacts"]}
    assert opted == {"Yes": True, "No": False, "Blank": False, "Odd": True, "Json": True, None: False}
    assert api.get("/api/v1/contacts", params={"isOptedOut": "true"}).json()["total"] == 3


def test_json_bulk_import_has_the_same_semantics(service: Service) -> None:
    api = service.client()
    lst = api.create_list("bulk")
    r = api.post("/api/v1/contacts/bulk", json={"listId": lst["id"], "contacts": [
        {"firstName": "Jane", "lastName": "Doe", "phone": "+254712345678", "email": "jane@example.com",
         "tags": ["VIP"], "notes": "Met at Nairobi conference"},
        {"phone": "0712345678"}, {"phone": "nope"}, {"firstName": "no phone"}]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["imported"], body["valid"], body["invalid"], body["skipped"], body["rows"]) == (1, 1, 0, 3, 4)
    jane = api.get("/api/v1/contacts").json()["contacts"][0]
    assert jane["tags"] == ["vip"] and jane["listIds"] == [lst["id"]]
    assert api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "1", "bogus": 1}]}).status_code == 422


def test_imported_contacts_behave_like_any_other(service: Service) -> None:
    api = service.client()
    body = _upload(api, b"phone,first_name\n0712000001,Imported\n").json()
    contact = api.get("/api/v1/contacts").json()["contacts"][0]
    updated = api.patch(f"/api/v1/contacts/{contact['id']}", json={"lastName": "Later", "tags": ["x"]}).json()
    assert (updated["firstName"], updated["lastName"], updated["tags"]) == ("Imported", "Later", ["x"])
    assert api.delete(f"/api/v1/contacts/{contact['id']}").status_code == 204
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": [contact["id"]]}).json() == {"restored": 1}
    api.delete(f"/api/v1/contacts/{contact['id']}")
    assert api.delete_json("/api/v1/contacts/trash", {"ids": [contact["id"]]}).json() == {"purged": 1}
    assert api.create_contact("0712000001")["firstName"] is None  # the number is free again
    assert body["imported"] == 1


def test_import_jobs_are_private_to_their_account(service: Service) -> None:
    owner, intruder = service.client(), service.client()
    body = _upload(owner, b"phone\n0712000001\n").json()
    assert intruder.get(f"/api/v1/contacts/imports/{body['importId']}").status_code == 404
    assert intruder.get(f"/api/v1/contacts/imports/{body['importId']}/report.csv").status_code == 404
    assert intruder.get("/api/v1/contacts").json()["total"] == 0


def test_concurrent_overlapping_imports_make_one_contact_per_number(service: Service) -> None:
    api = service.client()
    files = ["phone\n" + "".join(f"07130{i:05d}\n" for i in range(start, start + 300)) for start in (0, 100, 200)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda text: _upload(api, text.encode()).json(), files))
    assert sum(r["imported"] for r in results) == 500
    assert sum(r["imported"] + r["skipped"] for r in results) == 900
    assert api.get("/api/v1/contacts").json()["total"] == 500


@pytest.mark.parametrize("content", [b"", b"phone\n"])
def test_empty_files_import_nothing(service: Service, content: bytes) -> None:
    api = service.client()
    r = _upload(api, content)
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        assert r.json()["rows"] == 0
    assert api.get("/api/v1/contacts").json()["total"] == 0


def _wait_for_job(api, import_id: str, timeout: float = 60) -> dict:
    return api.wait_for_job(f"/api/v1/contacts/imports/{import_id}", timeout)


def test_async_import_answers_202_and_the_worker_completes_it(service: Service) -> None:
    api = service.client()
    rows = "phone,first_name\n" + "".join(f"07140{i:05d},N{i}\n" for i in range(2500)) + "12,bad\n"
    r = api.post("/api/v1/contacts/import", files={"file": ("big.csv", rows.encode())},
                 headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/contacts/imports/{r.json()['id']}"
    job = _wait_for_job(api, r.json()["id"])
    assert job["status"] == "completed", job
    assert job["counts"] == {"rows": 2501, "imported": 2500, "valid": 2500, "invalid": 0, "skipped": 1}
    assert api.get("/api/v1/contacts").json()["total"] == 2500


def test_async_import_with_a_bad_header_is_422_at_once(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contacts/import", files={"file": ("x.csv", b"name\nx\n")},
                 headers={"Prefer": "respond-async"})
    assert r.status_code == 422


def test_a_resumed_import_continues_after_its_last_stored_row(service: Service, tmp_path) -> None:
    from command.context import Actor
    from command.imports.rows import open_rows
    from command.imports.service import ImportService
    from service import import_jobs

    api = service.client()
    path = tmp_path / "resume.csv"
    path.write_text("phone\n" + "".join(f"07150{i:05d}\n" for i in range(2500)))
    actor = Actor(api.account_id, "tester", "resume-test")
    importer = ImportService(service.container.app)
    job, _ = importer.start(actor, source="csv", filename="resume.csv", list_id=None, idempotency_key=None)
    _, rows = open_rows(path, "csv")
    first = [next(rows) for _ in range(1000)]
    rows.close()
    job = importer._import_batch(actor, job, importer._parse(actor, first, None))  # one batch, then died
    import_jobs.enqueue(service.container, actor, job, path, "csv", None, None)
    result = _wait_for_job(api, str(job.id))
    assert result["status"] == "completed"
    assert result["counts"] == {"rows": 2500, "imported": 2500, "valid": 2500, "invalid": 0, "skipped": 0}
    assert api.get("/api/v1/contacts").json()["total"] == 2500


def test_a_batch_that_loses_a_number_while_stored_is_redone_and_so_is_the_batch_resolved_behind_it(
        service: Service) -> None:
    from command.context import Actor
    from command.imports.rows import ImportRow
    from command.imports.service import ImportService

    api = service.client()
    actor = Actor(api.account_id, "tester", "race-test")
    app = service.container.app
    raced = []

    class RacedOnce(ImportService):
        def _store(self, actor, prepared):
            # A single create takes a number of the first batch while that batch is stored (the
            # first batch only: the one behind it is stored by another thread meanwhile).
            if not raced and prepared.before is None:
                created = api.post("/api/v1/contacts", json={"phone": "0717000002"})
                assert created.status_code == 201, created.text
                raced.append(uuid.UUID(created.json()["id"]))
            super()._store(actor, prepared)

    phones = ["0717000001", "0717000002", "0717000003",  # batch 1: its second number is taken meanwhile
              "0717000003", "0717000004"]                 # batch 2, resolved while batch 1 was stored
    importer = RacedOnce(app, batch_size=3)
    job, _ = importer.start(actor, source="csv", filename="race.csv", list_id=None, idempotency_key=None)
    outcome = importer.run(actor, job, [ImportRow(row=i, phone=p, line=i + 1) for i, p in enumerate(phones, 1)])
    assert outcome.counts == {"read": 5, "imported": 3, "valid": 3, "invalid": 0, "skipped": 2}
    report = {int(r["row"]): r for r in _report(api, str(job.id))}
    assert (report[2]["reason"], report[2]["contact_id"]) == ("already_exists", str(raced[0]))
    third = api.get("/api/v1/contacts", params={"search": "0717000003"}).json()["contacts"]
    assert len(third) == 1 and (report[4]["reason"], report[4]["contact_id"]) == ("duplicate_in_file", third[0]["id"])
    assert api.get("/api/v1/contacts").json()["total"] == 4


def test_batches_stored_two_at_a_time_keep_the_jobs_order_in_the_log(service: Service) -> None:
    """Two batches are stored at once; the second appends only after the first, so the job's
    events are in version order in the notification log (which the relay publishes in)."""
    from command.context import Actor
    from command.imports.rows import ImportRow
    from command.imports.service import ImportService

    api = service.client()
    actor = Actor(api.account_id, "tester", "order-test")
    importer = ImportService(service.container.app, batch_size=40)
    job, _ = importer.start(actor, source="csv", filename="order.csv", list_id=None, idempotency_key=None)
    rows = [ImportRow(row=i, phone=f"07175{i:05d}", line=i + 1, tags=["t"]) for i in range(1, 2001)]
    unit_of_work = service.container.app.unit_of_work
    append = unit_of_work._append

    def first_batch_slow_to_append(cur, events, stored, messages):  # the batch behind it is ready first
        if any(s.originator_id == job.id and s.originator_version == 2 for s in stored):
            time.sleep(0.3)
        append(cur, events, stored, messages)

    unit_of_work._append = first_batch_slow_to_append
    try:
        assert importer.run(actor, job, rows).counts["imported"] == 2000
    finally:
        del unit_of_work._append
    with service.container.pool.connection() as conn, conn.cursor() as cur:
        versions = [r[0] for r in cur.execute("SELECT originator_version FROM contacts_events WHERE originator_id = %s"
                                              " ORDER BY notification_id", (job.id,)).fetchall()]
    assert versions == list(range(1, 53))  # started, 50 batches, completed
    assert api.get("/api/v1/contacts", params={"tags": "t"}).json()["total"] == 2000


def test_a_file_broken_part_way_reports_what_was_stored(service: Service) -> None:
    api = service.client()
    good = "".join(f"07160{i:05d}\n" for i in range(1500))
    content = ("phone,notes\n" + good + '0716099999,"' + "x" * (1024 * 1024 + 10) + '"\n').encode()
    r = _upload(api, content)
    assert r.status_code == 422, r.text[:300]
    body = r.json()
    assert body["error"] == "import_failed" and body["imported"] == 1000  # the first batch was stored
    job = api.get(f"/api/v1/contacts/imports/{body['importId']}").json()
    assert job["status"] == "failed" and job["counts"]["imported"] == 1000
    assert job["error"] == body["message"] and "Error" not in job["error"]  # the user's words, not a class name
    assert api.get("/api/v1/contacts").json()["total"] == 1000


def test_projection_batches_are_bounded_by_stored_size(service: Service) -> None:
    from command.notification_log import bounded_limit

    api = service.client()
    _upload(api, ("phone\n" + "".join(f"07180{i:05d}\n" for i in range(3000))).encode())
    head = service.container.head()
    with service.container.pool.connection() as conn, conn.cursor() as cur:
        start = head - 5  # this import's five events: started, three batches, completed
        assert bounded_limit(cur, start, 1000, 10 ** 9) == 5   # everything fits
        assert bounded_limit(cur, start, 1000, 1) == 1         # always at least one event
        assert bounded_limit(cur, start, 3, 10 ** 9) == 3      # and never more than asked
        sizes = [r[0] for r in cur.execute("SELECT pg_column_size(state) FROM contacts_events WHERE notification_id"
                                           " > %s ORDER BY notification_id", (start + 1,)).fetchall()]
        assert sizes[0] > 100_000  # an import batch of 1,000 contacts
        # Stored uncompressed: compressing it held the events table's lock twice as long.
        assert cur.execute("SELECT pg_column_compression(state) FROM contacts_events WHERE notification_id = %s",
                           (start + 2,)).fetchone()[0] is None
        assert bounded_limit(cur, start + 1, 1000, sizes[0] + sizes[1]) == 2
        assert bounded_limit(cur, start + 1, 1000, sizes[0] + sizes[1] - 1) == 1


def test_a_queued_async_import_says_queued_until_a_worker_claims_it(fresh_database: str, nats_url: str) -> None:
    from tests.support import ThreadedWorker, start_service

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        r = api.post("/api/v1/contacts/import", files={"file": ("q.csv", b"phone\n0712000001\n0712000002\n")},
                     headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        assert api.get(r.headers["location"]).json()["status"] == "queued"
        # The same request sent synchronously with its key: the queued job is the workers', not this request's.
        keyed = api.post("/api/v1/contacts/import", files={"file": ("q.csv", b"phone\n0712000003\n")},
                         headers={"Prefer": "respond-async", "Idempotency-Key": "q-1"})
        retry = api.post("/api/v1/contacts/import", files={"file": ("q.csv", b"phone\n0712000003\n")},
                         headers={"Idempotency-Key": "q-1"})
        assert retry.status_code == 409 and retry.json()["importId"] == keyed.json()["id"], retry.text
        assert api.get(keyed.headers["location"]).json()["status"] == "queued"
        svc.worker = ThreadedWorker(svc.container, nats_url).start()
        job = _wait_for_job(api, r.json()["id"])
        assert job["status"] == "completed" and job["counts"]["imported"] == 2
        assert _wait_for_job(api, keyed.json()["id"])["counts"]["imported"] == 1
    finally:
        svc.close()


def test_a_full_name_column_is_imported_as_first_and_last_name(service: Service) -> None:
    api = service.client()
    r = _upload(api, b"Full Name,Phone\nJane Wanjiru,0712000301\n")
    assert r.status_code == 201, r.text
    [jane] = api.get("/api/v1/contacts").json()["contacts"]
    assert (jane["firstName"], jane["lastName"]) == ("Jane", "Wanjiru")
    export = api.get("/api/v1/contacts/export").text.splitlines()
    assert export[1].startswith("Jane,Wanjiru,+254712000301")
    r = _upload(api, b"Name,Phone\nAcme Traders Ltd,0712000302\n", mapping='{"Name": "firstName"}')
    assert r.status_code == 201, r.text
    acme = api.get("/api/v1/contacts", params={"search": "acme"}).json()["contacts"][0]
    assert (acme["firstName"], acme["lastName"]) == ("Acme Traders Ltd", None)


def test_a_title_row_an_ignored_column_and_an_empty_first_sheet_import_as_users_expect(
        service: Service, tmp_path) -> None:
    api = service.client()
    r = _upload(api, b"Contacts for March\n\nphone,name,mobile\n0712000401,Jane Wanjiru,0799000001\n",
                mapping='{"mobile": null, "name": null}')
    assert r.status_code == 201, r.text
    [jane] = api.get("/api/v1/contacts").json()["contacts"]
    assert (jane["phone"], jane["firstName"]) == ("+254712000401", None)
    book = openpyxl.Workbook()
    book.active.title = "Read me"
    book.create_sheet("Data").append(["phone"])
    book["Data"].append(["0712000402"])
    path = tmp_path / "second-sheet.xlsx"
    book.save(path)
    r = _upload(api, path.read_bytes(), name="second-sheet.xlsx")
    assert r.status_code == 201 and r.json()["imported"] == 1, r.text
    r = _upload(api, b"phone\n0712000403\n", mapping='{"phone": 5}')
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mapping"


def test_newest_first_lists_and_exports_keep_an_imports_file_order_across_batches(service: Service) -> None:
    api = service.client()
    before = api.create_contact("0798000000")["id"]
    # Numbers in no sorted order, over two batches, so neither id nor phone order could pass.
    numbers = [f"0717{(i * 7919) % 100000:06d}" for i in range(1200)]
    r = _upload(api, ("phone\n" + "\n".join(numbers) + "\n").encode())
    assert r.status_code == 201 and r.json()["imported"] == 1200, r.text
    after = api.create_contact("0798000001")["id"]
    expected = ["+254" + n[1:] for n in numbers]
    listed = []
    for page in range(1, 14):
        listed += api.get("/api/v1/contacts", params={"page": page, "pageSize": 100}).json()["contacts"]
    assert listed[0]["id"] == after and listed[-1]["id"] == before
    assert [c["phone"] for c in listed[1:-1]] == expected
    exported = [line.split(",")[2] for line in api.get("/api/v1/contacts/export").text.splitlines()[1:]]
    assert exported[1:-1] == expected
    data = api.get("/api/v1/contacts/export-data").json()
    assert [c["phone"] for c in data[1:-1]] == expected
    # Deep pages, found from the per-second counts, agree with the plain walk.
    from query.contacts import ContactFilter, page_contacts

    deep = page_contacts(service.container.pool, api.account_id, ContactFilter(), 7, 100, anchor_min_skip=1)
    assert [c.phone for c in deep.contacts] == [c["phone"] for c in listed[600:700]]


def _stop_the_database_after(database_url: str, account_id: uuid.UUID, rows: int) -> int:
    """Once the account's import has stored ``rows`` rows, end every other session of the database (as a
    failover or an administrator would); the rows stored by then."""
    with psycopg.connect(database_url, autocommit=True) as db:
        wait_until(lambda: db.execute("SELECT coalesce(max(rows_read), 0) >= %s FROM imports WHERE account_id = %s",
                                      (rows, account_id)).fetchone()[0], f"{rows:,} rows stored", 60, 0.005)
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return db.execute("SELECT rows_read FROM imports WHERE account_id = %s", (account_id,)).fetchone()[0]


def _stopped_part_way(response, stored_at_least: int) -> dict:
    """The answer of an import the database stopped: 503 as any request it fails, with what was stored."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["error"] == "database_unavailable" and body["importId"] in body["message"], body
    assert stored_at_least <= body["rows"] < 30_000 and body["imported"] + body["skipped"] == body["rows"], body
    assert body["reportUrl"] == f"/api/v1/contacts/imports/{body['importId']}/report.csv"
    return body


def test_an_import_the_database_stops_part_way_answers_503_with_what_it_stored_and_its_keyed_retry_resumes_it(
        fresh_database: str, nats_url: str) -> None:
    """Not the file's fault, so not a 500 nor a failed job: the same request, retried with its key, finishes it."""
    from tests.support import start_service

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        content = ("phone\n" + "".join(f"0712{i:06d}\n" for i in range(30_000))).encode()
        request = {"files": {"file": ("big.csv", content)}, "headers": {"Idempotency-Key": "wizard-9"}}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(lambda: api.post("/api/v1/contacts/import", timeout=300, **request))
            stored = _stop_the_database_after(fresh_database, api.account_id, 2000)
            body = _stopped_part_way(first.result(), stored)
        assert "retry with the same Idempotency-Key to resume it" in body["message"], body
        job = api.get(f"/api/v1/contacts/imports/{body['importId']}").json()
        assert job["status"] == "running" and job["counts"]["rows"] == body["rows"], job  # to be resumed
        time.sleep(int(first.result().headers["retry-after"]))  # as a client does
        retried = api.post("/api/v1/contacts/import", timeout=300, **request)
        assert retried.status_code == 201, retried.text
        done = retried.json()
        assert done["importId"] == body["importId"] and (done["rows"], done["imported"]) == (30_000, 30_000), done
        assert api.get("/api/v1/contacts").json()["total"] == 30_000
    finally:
        svc.close()


def test_a_keyed_import_whose_statements_are_cancelled_part_way_gives_its_lease_back_and_its_retry_resumes_it(
        fresh_database: str, nats_url: str) -> None:
    """A fault that leaves every connection up (statements cancelled, as statement_timeout or an operator's
    pg_cancel_backend does): the lease's pooled connection goes back holding no lock, so the retry, sent to
    another API process, resumes the job instead of meeting 409 import_in_progress for as long as that
    connection lives."""
    from tests.support import start_service

    svc = start_service(fresh_database, nats_url, with_worker=False)
    other = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        content = ("phone\n" + "".join(f"0712{i:06d}\n" for i in range(30_000))).encode()
        request = {"files": {"file": ("big.csv", content)}, "headers": {"Idempotency-Key": "wizard-10"}}
        with ThreadPoolExecutor(1) as pool, psycopg.connect(fresh_database, autocommit=True) as db:
            first = pool.submit(lambda: api.post("/api/v1/contacts/import", timeout=300, **request))
            wait_until(lambda: db.execute("SELECT coalesce(max(rows_read), 0) >= 2000 FROM imports"
                                          " WHERE account_id = %s", (api.account_id,)).fetchone()[0],
                       "2,000 rows stored", 60, 0.005)
            while not first.done():
                db.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND pid <> pg_backend_pid() AND state = 'active'")
                time.sleep(0.002)
            body = _stopped_part_way(first.result(), 2000)
        assert "retry with the same Idempotency-Key to resume it" in body["message"], body
        retried = other.client(api.account_id).post("/api/v1/contacts/import", timeout=300, **request)
        assert retried.status_code == 201, retried.text
        assert (retried.json()["importId"], retried.json()["rows"]) == (body["importId"], 30_000), retried.text
        assert api.get("/api/v1/contacts").json()["total"] == 30_000
    finally:
        other.close()
        svc.close()


def test_an_unkeyed_import_the_database_stops_part_way_is_marked_failed_and_sending_it_again_imports_the_rest(
        fresh_database: str, nats_url: str) -> None:
    """No retry can name a job sent without a key: it is failed (not left running), and the file sent again
    imports the rows it had not stored, each number once."""
    from tests.support import start_service

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        content = ("phone\n" + "".join(f"0712{i:06d}\n" for i in range(30_000))).encode()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(lambda: _upload(api, content))
            stored = _stop_the_database_after(fresh_database, api.account_id, 2000)
            body = _stopped_part_way(first.result(), stored)
        assert "send the file again to import the rest" in body["message"], body
        job = api.get(f"/api/v1/contacts/imports/{body['importId']}").json()
        assert job["status"] == "failed" and job["error"].startswith("interrupted: "), job
        assert job["counts"]["imported"] == body["imported"] == api.get("/api/v1/contacts").json()["total"]
        again = _upload(api, content)
        assert again.status_code == 201, again.text
        assert (again.json()["imported"], again.json()["skipped"]) == (30_000 - body["imported"], body["imported"])
        assert api.get("/api/v1/contacts").json()["total"] == 30_000
    finally:
        svc.close()


class _ProcessDied(BaseException):
    """What a killed process's import sees: it stops where it is, nothing caught, nothing recorded."""


def test_the_worker_marks_failed_an_unkeyed_import_whose_process_died_and_leaves_the_others_running(
        fresh_database: str, nats_url: str) -> None:
    from command.context import Actor
    from command.imports.rows import ImportRow
    from command.imports.service import ImportService
    from service import job_leases
    from tests.support import ThreadedWorker, start_service

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        actor = Actor(api.account_id, "tester", "abandoned-test")
        importer = ImportService(svc.container.app)

        def died_after_a_batch(prefix: str, key: str | None = None) -> str:
            job, _ = importer.start(actor, source="csv", filename="a.csv", list_id=None, idempotency_key=key)

            def rows():
                for i in range(1, 1500):
                    yield ImportRow(row=i, line=i + 1, phone=f"{prefix}{i:06d}")
                raise _ProcessDied
            with pytest.raises(_ProcessDied):
                importer.run(actor, job, rows())
            return str(job.id)

        unkeyed, keyed, held = died_after_a_batch("0710"), died_after_a_batch("0711", "k-1"), died_after_a_batch("0713")
        with psycopg.connect(svc.container.database_url, autocommit=True) as other_process:
            assert job_leases.lock_job(other_process, uuid.UUID(held))  # a live process runs this one
            assert job_leases.fail_abandoned(svc.container, older_than_s=3600) == []  # each stored a batch just now
            svc.worker = ThreadedWorker(svc.container, nats_url, abandoned_after_s=0.5).start()
            job = wait_until(lambda: (j := api.get(f"/api/v1/contacts/imports/{unkeyed}").json())["status"] != "running"
                             and j, "the abandoned import marked failed", 30, 0.2)
            assert job["status"] == "failed" and job["error"] == job_leases.ABANDONED_REASON, job
            assert job["counts"]["imported"] == 1000  # what it stored stays, and is counted
            time.sleep(1.5)  # two more looks
            assert api.get(f"/api/v1/contacts/imports/{held}").json()["status"] == "running"
        # A retry with its key resumes the keyed one (docs/imports.md, "Retries").
        assert api.get(f"/api/v1/contacts/imports/{keyed}").json()["status"] == "running"
    finally:
        svc.close()


def test_an_async_retry_of_a_keyed_import_whose_process_died_queues_it_and_a_worker_finishes_it(
        service: Service, tmp_path) -> None:
    """The wizard's retry of a synchronous import, sent asynchronously this time: 202 and the job resumed by a
    worker after its last stored row, instead of 409 import_in_progress for a job nobody runs."""
    import hashlib
    from types import SimpleNamespace

    from command.context import Actor
    from command.imports.rows import open_rows
    from command.imports.service import ImportService
    from service import job_leases, request_hashes

    api = service.client()
    content = ("phone\n" + "".join(f"0716{i:06d}\n" for i in range(2500))).encode()
    path = tmp_path / "wizard.csv"
    path.write_bytes(content)
    actor = Actor(api.account_id, "tester", "async-retry-test")
    importer = ImportService(service.container.app)
    job, _ = importer.start(actor, source="csv", filename="wizard.csv", list_id=None, idempotency_key="w-async",
                            request_hash=request_hashes.file_hash(SimpleNamespace(digest=hashlib.sha256(content)),
                                                                None, None, None))
    _, rows = open_rows(path, "csv")

    def until_killed():
        for row in rows:
            if row.row > 1500:
                raise _ProcessDied
            yield row
    with pytest.raises(_ProcessDied):
        importer.run(actor, job, until_killed())
    rows.close()
    request = {"files": {"file": ("wizard.csv", content)}, "headers": {"Idempotency-Key": "w-async"}}
    with psycopg.connect(service.container.database_url, autocommit=True) as live_process:
        assert job_leases.lock_job(live_process, job.id)
        refused = api.post("/api/v1/contacts/import", files=request["files"],
                           headers={**request["headers"], "Prefer": "respond-async"})
        assert refused.status_code == 409 and refused.json()["error"] == "import_in_progress", refused.text
    queued = api.post("/api/v1/contacts/import", files=request["files"],
                      headers={**request["headers"], "Prefer": "respond-async"})
    assert queued.status_code == 202 and queued.json()["id"] == str(job.id), queued.text
    done = _wait_for_job(api, str(job.id))
    assert done["status"] == "completed", done
    assert done["counts"] == {"rows": 2500, "imported": 2500, "valid": 2500, "invalid": 0, "skipped": 0}
    assert api.get("/api/v1/contacts").json()["total"] == 2500
    again = api.post("/api/v1/contacts/import", **request)  # and the result, as for any finished import
    assert again.status_code == 200 and again.json()["imported"] == 2500, again.text


def test_a_queued_job_that_keeps_failing_is_claimed_again_after_a_pause_not_in_a_loop(
        fresh_database: str, nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued job (an import, a select-all bulk action) that stops on an error stays queued to be resumed. The
    slot it freed looked for work at once and claimed it again: while the database stayed full, say, the worker
    spun through claim, fail, claim, logging each time. Now it is claimed again after RESUME_AFTER_S."""
    from service import bulk_jobs, import_jobs
    from tests.support import ThreadedWorker, start_service

    runs: list[float] = []

    def failing(container, claimed) -> None:
        runs.append(time.monotonic())
        raise psycopg.errors.DiskFull("could not extend file: No space left on device")

    monkeypatch.setattr(bulk_jobs, "run", failing)
    monkeypatch.setattr(import_jobs, "RESUME_AFTER_S", 1.0)
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        with psycopg.connect(fresh_database, autocommit=True) as db:
            db.execute("INSERT INTO import_queue (import_id, account_id, actor, request_id, format)"
                       " VALUES (%s, %s, 'tester', 'r', %s)", (uuid.uuid4(), uuid.uuid4(), bulk_jobs.BULK_FORMAT))
        svc.worker = ThreadedWorker(svc.container, nats_url).start()
        wait_until(lambda: len(runs) >= 2, "the job claimed twice", 30, 0.05)
        time.sleep(2.5)
    finally:
        svc.close()
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:])]
    assert len(runs) <= 6 and min(gaps) >= 0.9, (len(runs), gaps)  # about once a second, not hundreds of times


def test_an_idempotency_key_is_the_accounts_own_another_account_with_the_same_key_neither_sees_nor_resumes_the_job(
        service: Service, tmp_path) -> None:
    """Keys are per account: another account sending the same key and file gets an import of its own, never
    the first account's result, its importId, a 409 naming its job, nor a resumption of its job left running."""
    from command.context import Actor
    from command.imports.rows import ImportRow
    from command.imports.service import ImportService

    first, other = service.client(), service.client()
    importer = ImportService(service.container.app)
    actor = Actor(first.account_id, "tester", "tenancy-test")
    job, _ = importer.start(actor, source="csv", filename="a.csv", list_id=None, idempotency_key="shared-key")

    def until_killed():
        for i in range(1, 1500):
            yield ImportRow(row=i, line=i + 1, phone=f"0717{i:06d}")
        raise _ProcessDied
    with pytest.raises(_ProcessDied):
        importer.run(actor, job, until_killed())  # the first account's job: left running, nobody holds it
    content = ("phone\n" + "".join(f"0717{i:06d}\n" for i in range(1, 1500))).encode()
    request = {"files": {"file": ("a.csv", content)}, "headers": {"Idempotency-Key": "shared-key"}}
    for answer in (other.post("/api/v1/contacts/import", **request),
                   other.post("/api/v1/contacts/import", files=request["files"],
                              headers={**request["headers"], "Prefer": "respond-async"})):
        assert answer.status_code in (200, 201, 202) and str(job.id) not in answer.text, answer.text
    wait_until(lambda: other.get("/api/v1/contacts").json()["total"] == 1499, "the other account's import", 60)
    mine = first.get(f"/api/v1/contacts/imports/{job.id}").json()
    assert mine["status"] == "running" and mine["counts"]["rows"] == 1000, mine  # not resumed by the other account
    assert first.get("/api/v1/contacts").json()["total"] == 1000
    assert other.get(f"/api/v1/contacts/imports/{job.id}").status_code == 404

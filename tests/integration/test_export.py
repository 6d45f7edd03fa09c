"""Exports through HTTP: CSV download, JSON export data, and export by email to a real SMTP server."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import io
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller

from command.imports.cells import FORMULA_STARTS, unneutralise
from command.imports.rows import open_rows
from service.embedded import free_port
from tests.import_samples import neutralise
from tests.support import Service, new_database, start_service

HEADER = ["first_name", "last_name", "phone", "email", "tags", "notes"]
MAX_FILE_BYTES = 100_000
PER_HOUR = 3


def _csv(api, **params: Any) -> list[list[str]]:
    r = api.get("/api/v1/contacts/export", params=params)
    assert r.status_code == 200, r.text
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    assert rows[0] == HEADER
    return rows[1:]


def _phones(api, **params: Any) -> list[str]:
    return [row[2] for row in _csv(api, **params)]


def _all_items(api, **params: Any) -> list[dict]:
    items, page = [], 1
    while True:
        body = api.get("/api/v1/contacts", params={"page": page, "pageSize": 100, **params}).json()
        items += body["contacts"]
        if len(items) >= body["total"]:
            return items
        page += 1


# --- neutralising formulas (no I/O) -------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("=SUM(A1)", "'=SUM(A1)"), ("+1", "'+1"), ("-2", "'-2"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'=1", "''=1"), ("''+1", "'''+1"), ("'plain", "'plain"), ("'", "'"), ("a=1", "a=1"), ("", ""),
])
def test_neutralise_prefixes_a_quote_to_formula_starts_and_to_quoted_ones(value: str, expected: str) -> None:
    assert neutralise(value) == expected


@pytest.mark.parametrize("value", ["=1", "'=1", "''=1", "'", "''", "'a", "a", "", "-", "'-", "x'=1", "'\t", "@"])
def test_unneutralise_undoes_neutralise_exactly(value: str) -> None:
    assert unneutralise(neutralise(value)) == value
    assert neutralise(value)[:1] not in FORMULA_STARTS or not value


# --- GET /contacts/export -----------------------------------------------------------

def test_csv_export_is_a_download_with_header_rows_and_joined_tags(service: Service) -> None:
    api = service.client()
    api.create_contact("0712345678", firstName="John", lastName="Doe", email="john@example.com",
                       tags=["vip", "nairobi"], notes="Met at conference")
    api.create_contact("0722000000")
    r = api.get("/api/v1/contacts/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="contacts-\d{8}-\d{6}\.csv"', r.headers["content-disposition"])
    assert r.text.startswith("first_name,last_name,phone,email,tags,notes\r\n")
    assert r.text.splitlines()[2] == "John,Doe,+254712345678,john@example.com,vip;nairobi,Met at conference"
    assert _csv(api) == [["", "", "+254722000000", "", "", ""],
                         ["John", "Doe", "+254712345678", "john@example.com", "vip;nairobi", "Met at conference"]]


def test_csv_quotes_commas_quotes_and_newlines(service: Service) -> None:
    api = service.client()
    notes = 'Says "hi", then\nleaves;\r\nback, later'
    api.create_contact("0712345678", firstName="Doe, Jane", notes=notes)
    text = api.get("/api/v1/contacts/export").text
    assert '"Doe, Jane"' in text and '"Says ""hi"", then\nleaves;\r\nback, later"' in text
    assert _csv(api) == [["Doe, Jane", "", "+254712345678", "", "", notes]]


def test_csv_neutralises_formulas_but_not_the_phone(service: Service) -> None:
    api = service.client()
    api.create_contact("+254712345678", firstName="=SUM(A1)", lastName="+1", email="-x@example.com",
                       tags=["@x", "vip"], notes="-2")
    api.create_contact("0722000000", firstName="'=1", lastName="@home", notes="'plain")
    rows = _csv(api)
    assert rows == [["''=1", "'@home", "+254722000000", "", "", "'plain"],
                    ["'=SUM(A1)", "'+1", "+254712345678", "'-x@example.com", "'@x;vip", "'-2"]]
    assert [[unneutralise(cell) for cell in row] for row in rows][0][:2] == ["'=1", "@home"]


def test_csv_export_reads_back_through_the_importer_unchanged(service: Service, tmp_path: Path) -> None:
    api = service.client()
    tricky = ["=SUM(A1)", "'=1", "''+1", "+1", "-2", "@x", "'plain", "a, \"b\"\nc", "Zoë"]
    for i, value in enumerate(tricky):
        api.create_contact(f"07110000{i:02d}", firstName=value, lastName=value[::-1], notes=value,
                           email=f"-{i}@example.com", tags=["vip", value.lower().replace(",", "")])
    path = tmp_path / "export.csv"
    path.write_bytes(api.get("/api/v1/contacts/export").content)
    _, rows = open_rows(path, "csv")
    imported = [(r.phone, r.first_name, r.last_name, r.email, r.tags, r.notes) for r in rows]
    expected = [(c["phone"], c["firstName"], c["lastName"], c["email"], c["tags"], c["notes"])
                for c in _all_items(api)]
    assert imported == expected


def test_csv_export_adds_the_chosen_columns_with_headers_the_importer_reads(service: Service) -> None:
    api = service.client()
    vip = api.create_list("vip")
    out = api.create_contact("0712345678", firstName="Out", isOptedOut=True, listIds=[vip["id"]])
    land = api.create_contact("+254201234567", firstName="Land")
    r = api.get("/api/v1/contacts/export", params={"columns": "isOptedOut, status,invalidReason,operator,country,"
                                                               "listIds,createdAt,updatedAt"})
    assert r.status_code == 200, r.text
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["first_name", "last_name", "phone", "email", "tags", "notes", "is_opted_out", "status",
                       "invalid_reason", "operator", "country", "list_ids", "created_at", "updated_at"]
    assert rows[1][:12] == ["Land", "", "+254201234567", "", "", "", "false", "invalid", "unknown_network", "",
                            "KE", ""]
    assert rows[2][:12] == ["Out", "", "+254712345678", "", "", "", "true", "valid", "", "Safaricom", "KE",
                            vip["id"]]
    assert (rows[1][12], rows[2][12], rows[2][13]) == (land["createdAt"], out["createdAt"], out["updatedAt"])
    # The default stays the API page's six columns; the order of columns= is kept.
    assert api.get("/api/v1/contacts/export").text.startswith("first_name,last_name,phone,email,tags,notes\r\n")
    assert api.get("/api/v1/contacts/export", params={"columns": "country,is_opted_out"}).text.startswith(
        "first_name,last_name,phone,email,tags,notes,country,is_opted_out\r\n")


def test_an_unknown_export_column_is_a_422_naming_columns(service: Service) -> None:
    api = service.client()
    r = api.get("/api/v1/contacts/export", params={"columns": "isOptedOut,password"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "columns" and "'password'" in r.json()["message"]


def test_export_with_opt_outs_then_import_into_another_account_keeps_them_opted_out(service: Service) -> None:
    source, target = service.client(), service.client()
    source.create_contact("0712345678", firstName="Out", isOptedOut=True)
    source.create_contact("0722000000", firstName="In")
    exported = source.get("/api/v1/contacts/export", params={"columns": "isOptedOut,status,listIds,createdAt"})
    r = target.post("/api/v1/contacts/import", files={"file": ("export.csv", exported.content)})
    assert r.status_code == 201 and r.json()["imported"] == 2, r.text
    got = {c["firstName"]: c["isOptedOut"] for c in target.get("/api/v1/contacts").json()["contacts"]}
    assert got == {"Out": True, "In": False}


def test_csv_export_uses_the_list_filters(service: Service) -> None:
    api = service.client()
    vip = api.create_list("vip")
    a = api.create_contact("0711000001", firstName="Alice", tags=["vip", "nairobi"], listIds=[vip["id"]])
    b = api.create_contact("0711000002", firstName="Bob", tags=["vip"], isOptedOut=True)
    c = api.create_contact("0711000003", firstName="Carol", tags=["nairobi"])
    assert _phones(api, listId=vip["id"]) == [a["phone"]]
    assert _phones(api, isOptedOut="true") == [b["phone"]]
    assert _phones(api, isOptedOut="false") == [c["phone"], a["phone"]]
    assert _phones(api, tags=" VIP , Nairobi ") == [a["phone"]]
    assert _phones(api, tags="vip") == [b["phone"], a["phone"]]
    assert _phones(api, search="car") == [c["phone"]]
    assert _phones(api, search="0711 000 002") == [b["phone"]]
    assert _phones(api) == [c["phone"], b["phone"], a["phone"]]
    assert api.get("/api/v1/contacts/export", params={"listId": "nope"}).status_code == 422


def test_exports_leave_out_trashed_contacts_and_other_accounts(service: Service) -> None:
    api, other = service.client(), service.client()
    keep = api.create_contact("0711000001", firstName="Keep")
    gone = api.create_contact("0711000002", firstName="Gone")
    other.create_contact("0711000003", firstName="Secret")
    assert api.delete(f"/api/v1/contacts/{gone['id']}").status_code == 204
    assert _phones(api) == [keep["phone"]]
    assert [c["id"] for c in api.get("/api/v1/contacts/export-data").json()] == [keep["id"]]
    assert "Secret" not in api.get("/api/v1/contacts/export").text
    assert _phones(service.client()) == []
    assert service.client().get("/api/v1/contacts/export-data").json() == []


def test_export_routes_win_over_the_contact_id_route_and_need_a_token(service: Service) -> None:
    anonymous = service.anonymous()
    for path in ("/api/v1/contacts/export", "/api/v1/contacts/export-data"):
        assert anonymous.get(path).status_code == 401
        assert service.client().get(path).status_code == 200
    assert service.client().get("/api/v1/contacts/export-email").status_code == 405


# --- GET /contacts/export-data ------------------------------------------------------

def test_export_data_equals_the_list_items_for_the_same_filter(service: Service) -> None:
    api = service.client()
    vip = api.create_list("vip")
    for i in range(7):
        api.create_contact(f"07110000{i:02d}", firstName=f"N{i}", tags=["vip"] if i % 2 else ["x"],
                           listIds=[vip["id"]] if i % 3 else [], notes=f'n "{i}"\n', email=f"n{i}@example.com")
    for params in ({}, {"listId": vip["id"]}, {"tags": "VIP"}, {"search": "n1"}, {"isOptedOut": "true"}):
        r = api.get("/api/v1/contacts/export-data", params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json() == _all_items(api, **params), params
    assert len(api.get("/api/v1/contacts/export-data").json()) == 7


def test_times_are_utc_and_equal_in_list_and_export_whatever_the_server_time_zone(fresh_database: str,
                                                                                    nats_url: str) -> None:
    import psycopg

    name = fresh_database.rsplit("/", 1)[1]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET timezone = \'Africa/Nairobi\'')
    svc = start_service(fresh_database, nats_url)
    try:
        api = svc.client()
        api.create_contact("0711000099", firstName="Amina")
        item = api.get("/api/v1/contacts").json()["contacts"][0]
        assert item["createdAt"].endswith("Z") and item["updatedAt"].endswith("Z"), item
        assert api.get("/api/v1/contacts/export-data").json() == [item]
    finally:
        svc.close()


def test_large_export_streams_every_row(service: Service) -> None:
    api = service.client()
    total = 3000
    r = api.post("/api/v1/contacts/bulk", json={"contacts": [
        {"phone": f"0711{i:06d}", "firstName": f"F{i}", "tags": ["bulk"]} for i in range(total)]})
    assert r.status_code == 201 and r.json()["imported"] == total
    with api.stream("GET", "/api/v1/contacts/export") as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        chunks = list(r.iter_raw())
    assert len(chunks) > 1
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))
    assert len(rows) == total + 1 and len({row[2] for row in rows[1:]}) == total
    items = api.get("/api/v1/contacts/export-data", params={"tags": "bulk"}).json()
    assert len(items) == total and {c["phone"] for c in items} == {row[2] for row in rows[1:]}


# --- POST /contacts/export-email ----------------------------------------------------

class Mailbox:
    """aiosmtpd handler keeping accepted envelopes; refuses some recipients, and one QUIT, on purpose."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802, ANN001
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
        if any(r.startswith("reject-data") for r in envelope.rcpt_tos):
            return "554 5.6.0 message content rejected"
        self.envelopes.append(envelope)
        session.quit_fails = any(r.startswith("quit-fails") for r in envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server, session, envelope):  # noqa: N802, ANN001
        return "421 4.3.0 shutting down" if getattr(session, "quit_fails", False) else "221 Bye"


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def mail_database(postgres_server: str) -> str:
    return new_database(postgres_server)


@pytest.fixture(scope="module")
def mail_service(mail_database: str, nats_url: str, mailbox: tuple[Mailbox, int]) -> Iterator[Service]:
    """A service that mails through the local SMTP server, with a small file limit and hourly quota."""
    svc = start_service(mail_database, nats_url, with_worker=False, smtp_url=f"smtp://127.0.0.1:{mailbox[1]}",
                        mail_from="exports@contacts.test", export_email_max_bytes=MAX_FILE_BYTES,
                        export_email_per_hour=PER_HOUR)
    yield svc
    svc.close()


def _mail(content: bytes = b"first_name\r\nJohn\r\n", **extra: Any) -> dict[str, Any]:
    return {"email": "user@example.com", "filename": "contacts-export.csv",
            "fileBase64": base64.b64encode(content).decode(), "mimeType": "text/csv", "count": 87, **extra}


def test_export_email_delivers_the_file_as_an_attachment(mail_service: Service, mailbox) -> None:
    box, _ = mailbox
    content = bytes(range(256)) * 300  # binary, every byte value, 76.8 kB
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(
        content, email="User@Example.com", filename="contacts export é.xlsx", mimeType=xlsx, count=87))
    assert r.status_code == 200 and r.content == b""
    envelope = box.envelopes[-1]
    assert envelope.mail_from == "exports@contacts.test" and envelope.rcpt_tos == ["user@example.com"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["To"] == "user@example.com" and message["From"] == "exports@contacts.test"
    assert "87 contacts" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == xlsx
    assert attachment.get_filename() == "contacts export é.xlsx"
    assert attachment.get_content() == content


def test_export_email_count_is_optional_and_csv_arrives_intact(mail_service: Service, mailbox) -> None:
    box, _ = mailbox
    content = "first_name,notes\r\nJosé,\"a, b\"\r\n".encode()
    body = _mail(content)
    del body["count"]
    assert mail_service.client().post("/api/v1/contacts/export-email", json=body).status_code == 200
    message = email.message_from_bytes(box.envelopes[-1].content, policy=email.policy.default)
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/csv" and attachment.get_filename() == "contacts-export.csv"
    assert attachment.get_payload(decode=True) == content


def test_export_email_without_a_mail_provider_is_503(service: Service) -> None:
    r = service.client().post("/api/v1/contacts/export-email", json=_mail())
    assert r.status_code == 503
    assert r.json()["status"] == 503 and "CONTACTS_SMTP_URL" in r.json()["message"]


@pytest.mark.parametrize("address", ["refuse@example.com", "reject-data@example.com"])
def test_export_email_refused_by_the_provider_is_502(mail_service: Service, address: str) -> None:
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(email=address))
    assert r.status_code == 502
    assert r.json()["error"] == "mail_delivery_failed" and re.search(r"55[04]", r.json()["message"])


def test_export_email_to_an_unreachable_provider_is_502(mail_database: str, nats_url: str) -> None:
    svc = start_service(mail_database, nats_url, with_worker=False, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    try:
        r = svc.client().post("/api/v1/contacts/export-email", json=_mail())
        assert r.status_code == 502 and "could not be reached" in r.json()["message"]
    finally:
        svc.close()


def test_export_email_provider_without_auth_is_502_saying_so(mail_database: str, nats_url: str, mailbox) -> None:
    svc = start_service(mail_database, nats_url, with_worker=False, smtp_url=f"smtp://u:p@127.0.0.1:{mailbox[1]}")
    try:
        r = svc.client().post("/api/v1/contacts/export-email", json=_mail())
        assert r.status_code == 502 and r.json()["error"] == "mail_delivery_failed"
        message = r.json()["message"]
        assert "does not support" in message and "AUTH" in message and "could not be reached" not in message
    finally:
        svc.close()


def test_export_email_never_sends_a_password_unencrypted_to_another_host(mail_database: str, nats_url: str) -> None:
    """No STARTTLS on offer: credentials go only to this machine (as Go's net/smtp); elsewhere, 502 and no send."""
    box = Mailbox()
    remote = Controller(box, hostname="127.0.0.2", port=free_port())  # loopback, but not "this host" by name
    remote.start()
    svc = start_service(mail_database, nats_url, with_worker=False,
                        smtp_url=f"smtp://user:secret@{remote.hostname}:{remote.port}")
    try:
        r = svc.client().post("/api/v1/contacts/export-email", json=_mail())
        assert r.status_code == 502 and r.json()["error"] == "mail_delivery_failed"
        assert "never sent unencrypted" in r.json()["message"] and "STARTTLS" in r.json()["message"]
        assert box.envelopes == []
    finally:
        svc.close()
        remote.stop()


def test_export_email_accepted_before_a_failed_quit_is_200(mail_service: Service, mailbox) -> None:
    box, _ = mailbox
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(email="quit-fails@example.com"))
    assert r.status_code == 200 and box.envelopes[-1].rcpt_tos == ["quit-fails@example.com"]


def test_export_email_with_an_empty_file_is_422(mail_service: Service, mailbox) -> None:
    box, _ = mailbox
    before = len(box.envelopes)
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(b""))
    assert r.status_code == 422 and r.json()["error"] == "validation_failed"
    assert r.json()["errors"][0]["field"] == "fileBase64" and "the file is empty" in r.json()["message"]
    assert len(box.envelopes) == before


@pytest.mark.parametrize("change, field", [
    ({"email": "not-an-address"}, "email"), ({"email": "a,b@example.com"}, "email"), ({"email": ""}, "email"),
    ({"email": "a@b.c\r\nBcc: x@y.z"}, "email"),
    ({"fileBase64": "not base64!"}, "fileBase64"), ({"fileBase64": "abc"}, "fileBase64"),
    ({"filename": ""}, "filename"), ({"filename": "../x.csv"}, "filename"), ({"filename": "a\\b.csv"}, "filename"),
    ({"filename": "a\nb.csv"}, "filename"), ({"filename": "x" * 201}, "filename"), ({"filename": ".."}, "filename"),
    ({"mimeType": "text/html"}, "mimeType"), ({"mimeType": 3}, "mimeType"), ({"count": -1}, "count"),
    ({"extra": 1}, "extra"),
])
def test_export_email_rejects_bad_input_with_422_naming_the_field(mail_service: Service, mailbox,
                                                                   change: dict, field: str) -> None:
    box, _ = mailbox
    before = len(box.envelopes)
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(**change))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == 422 and body["errors"][0]["field"] == field
    assert len(box.envelopes) == before


def test_export_email_missing_field_or_bad_json(mail_service: Service) -> None:
    api = mail_service.client()
    body = _mail()
    del body["fileBase64"]
    r = api.post("/api/v1/contacts/export-email", json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "fileBase64"
    r = api.post("/api/v1/contacts/export-email", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_body"


def test_export_email_with_a_string_that_is_not_utf8_is_a_400_and_mails_nothing(mail_service: Service,
                                                                                 mailbox) -> None:
    box, _ = mailbox
    before = len(box.envelopes)
    body = msgspec.json.encode(_mail()).replace(b'"filename":"', b'"filename":"\xff', 1)
    r = mail_service.client().post("/api/v1/contacts/export-email", content=body,
                                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_body", r.text
    assert len(box.envelopes) == before


@pytest.mark.parametrize("size", [MAX_FILE_BYTES + 1, 3 * MAX_FILE_BYTES])
def test_export_email_over_the_size_limit_is_413(mail_service: Service, size: int) -> None:
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(b"x" * size))
    assert r.status_code == 413
    assert r.json()["status"] == 413 and str(MAX_FILE_BYTES) in r.json()["message"]


def test_export_email_sent_chunked_past_the_size_limit_is_413_and_mails_nothing(mail_service: Service,
                                                                               mailbox) -> None:
    """Without ``Content-Length`` nothing can be refused up front: the body is counted as it arrives and
    refused once past the limit (the message of the body's limit, not of a file decoded whole)."""
    box, _ = mailbox
    mailed = len(box.envelopes)
    body = json.dumps(_mail(b"x" * 3 * MAX_FILE_BYTES)).encode()
    pieces = (body[i:i + 16_384] for i in range(0, len(body), 16_384))
    r = mail_service.client().post("/api/v1/contacts/export-email", content=pieces,
                                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["message"] == f"the file is larger than the limit of {MAX_FILE_BYTES} bytes"
    assert len(box.envelopes) == mailed


def test_export_email_at_the_size_limit_is_sent(mail_service: Service) -> None:
    r = mail_service.client().post("/api/v1/contacts/export-email", json=_mail(b"x" * MAX_FILE_BYTES))
    assert r.status_code == 200


def test_export_email_hourly_limit_per_account_holds_across_replicas(mail_service: Service, mail_database: str,
                                                                     nats_url: str, mailbox) -> None:
    replica = start_service(mail_database, nats_url, with_worker=False, smtp_url=mail_service.settings.smtp_url,
                            export_email_per_hour=PER_HOUR)
    try:
        first = mail_service.client()
        second = replica.client(first.account_id)
        assert first.post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
        assert second.post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
        assert first.post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
        for api in (second, first):
            r = api.post("/api/v1/contacts/export-email", json=_mail())
            assert r.status_code == 429
            assert 3500 <= int(r.headers["retry-after"]) <= 3600
            assert r.json()["status"] == 429 and r.json()["error"] == "too_many_requests"
        assert mail_service.client().post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
    finally:
        replica.close()


def test_export_email_failed_sends_do_not_count_against_the_hourly_limit(mail_service: Service, mail_database: str,
                                                                         nats_url: str, mailbox) -> None:
    box, _ = mailbox
    unreachable = start_service(mail_database, nats_url, with_worker=False,
                                smtp_url=f"smtp://127.0.0.1:{free_port()}", export_email_per_hour=PER_HOUR)
    try:
        api = mail_service.client()
        down = unreachable.client(api.account_id)
        failing = [(down, "user@example.com")] + [(api, "refuse@example.com")] * (PER_HOUR - 1)
        for client, address in failing:  # unreachable, then refused: PER_HOUR sends, none delivered
            assert client.post("/api/v1/contacts/export-email", json=_mail(email=address)).status_code == 502
        r = api.post("/api/v1/contacts/export-email", json=_mail(email="counted@example.com"))
        assert r.status_code == 200 and box.envelopes[-1].rcpt_tos == ["counted@example.com"]
    finally:
        unreachable.close()


def test_export_email_failed_sends_give_their_slot_back_under_concurrency(mail_service: Service) -> None:
    api = mail_service.client()
    assert api.post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
    with ThreadPoolExecutor(4 * PER_HOUR) as pool:
        statuses = list(pool.map(lambda _: api.post("/api/v1/contacts/export-email",
                                                    json=_mail(email="refuse@example.com")).status_code,
                                 range(4 * PER_HOUR)))
    assert 502 in statuses and set(statuses) <= {502, 429}  # 429 only while failing sends held the slots
    for _ in range(PER_HOUR - 1):
        assert api.post("/api/v1/contacts/export-email", json=_mail()).status_code == 200
    assert api.post("/api/v1/contacts/export-email", json=_mail()).status_code == 429


def test_reads_answer_while_slow_mail_sends_are_in_progress(mail_service: Service, mailbox,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A send to a slow provider holds a thread for its seconds. Sends held the loop's executor, which
    runs every sync handler (six threads on two cores): six slow sends kept GET /contacts waiting.
    Seven sends (from seven accounts, within their quotas) are held here; reads still answer."""
    from service import exports
    from tests.waits import Held, wait_until

    sends = Held(monkeypatch, exports, "send_mail")
    clients = [mail_service.client() for _ in range(7)]
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = [pool.submit(api.post, "/api/v1/contacts/export-email", json=_mail()) for api in clients]
        try:
            wait_until(lambda: sends.calls >= 4, lambda: f"{sends.calls} sends in progress", timeout=20)
            r = mail_service.client().http.get("/api/v1/contacts", timeout=10)
            assert r.status_code == 200, r.text
        finally:
            sends.release()
        assert [a.result().status_code for a in answers] == [200] * len(clients)


@pytest.mark.parametrize("path", ["/api/v1/contacts/export", "/api/v1/contacts/export-data"])
def test_an_export_the_database_stops_mid_stream_fails_as_a_download_never_as_a_short_file(
        fresh_database: str, nats_url: str, path: str) -> None:
    """The answer has begun (200, chunked) when the database goes: the stream ends without its last chunk, so
    the client's download fails (curl, browsers, httpx) rather than saving a file cut at a row boundary."""
    import httpx
    import psycopg

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        content = ("phone,first_name\n" + "".join(f"0712{i:06d},Name{i}\n" for i in range(60_000))).encode()
        assert api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)}, timeout=300).json()[
            "imported"] == 60_000
        received = 0
        # Connected before the export starts, so that the sessions end a query's time after its answer
        # begins: the export cannot have been read whole from the database (service/spool.py) by then.
        with psycopg.connect(fresh_database, autocommit=True) as db, \
                pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            with api.http.stream("GET", path, timeout=120) as response:
                assert response.status_code == 200 and response.headers["transfer-encoding"] == "chunked"
                db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE datname = current_database() AND pid <> pg_backend_pid()")
                for chunk in response.iter_bytes():
                    received += len(chunk)
        assert received > 0  # it had begun (and the framing says it did not end)
    finally:
        svc.close()


def test_exports_to_clients_that_stop_reading_leave_the_database_connections_to_every_other_request(
        fresh_database: str, nats_url: str) -> None:
    """A download is read from the database at its pace and spooled (service/spool.py): a client on a slow
    network, or one that stopped reading, holds no connection of the read pool and no open transaction."""
    import socket
    from contextlib import ExitStack

    import httpx
    import psycopg

    from tests.waits import wait_until

    svc = start_service(fresh_database, nats_url, with_worker=False, db_pool_size=2)
    try:
        api = svc.client()
        content = ("phone,first_name,last_name\n" + "".join(
            f"0712{i:06d},Firstname{i:06d},Lastname{i:06d}\n" for i in range(40_000))).encode()
        assert api.post("/api/v1/contacts/import", files={"file": ("a.csv", content)}, timeout=300).json()[
            "imported"] == 40_000
        # A small receive buffer: each export (about 12 MB of JSON) is far more than the sockets hold. Two of
        # them, as many as the pool has connections (CONTACTS_DB_POOL_SIZE=2).
        slow = httpx.Client(base_url=svc.url, headers=api.http.headers, timeout=120, transport=httpx.HTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)]))
        with slow, ExitStack() as downloads:
            chunks = [downloads.enter_context(slow.stream("GET", path)).iter_bytes()
                      for path in ("/api/v1/contacts/export-data", "/api/v1/contacts/export-data")]
            first = [next(c) for c in chunks]  # both begun; neither read further for now

            def sessions_in_a_transaction() -> int:
                with psycopg.connect(fresh_database) as db:
                    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND pid <> pg_backend_pid() AND state <> 'idle'").fetchone()[0]

            # They used to keep their transactions (and both connections of the pool) until their clients
            # had read everything, and every other read of the process answered 503 meanwhile.
            wait_until(lambda: sessions_in_a_transaction() == 0, "the exports let their connections go", 30)
            other = svc.client()
            other.create_contact("0733000001")
            for _ in range(5):
                assert other.get("/api/v1/contacts").status_code == 200
            bodies = [head + b"".join(rest) for head, rest in zip(first, chunks)]
        for body in bodies:  # each whole, once its client read it
            exported = json.loads(body)
            assert len({c["firstName"] for c in exported}) == len(exported) == 40_000
    finally:
        svc.close()


def test_a_download_the_temporary_directory_cannot_take_answers_503_naming_it(
        service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Downloads are spooled through TMPDIR (service/spool.py): one missing, not writable or full is a clear 503
    before any byte, not a 500."""
    import tempfile

    api = service.client()
    api.create_contact("0712000123")
    imported = api.post("/api/v1/contacts/import", files={"file": ("a.csv", b"phone\n0712000124\nnope\n")}).json()
    downloads = ("/api/v1/contacts/export", "/api/v1/contacts/export-data", imported["reportUrl"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    for path in downloads:
        r = api.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"] == "export_unavailable" and str(tmp_path / "gone") in r.json()["message"], r.text
    monkeypatch.undo()
    assert [api.get(path).status_code for path in downloads] == [200, 200, 200]

"""Fuzzing the whole API from its own OpenAPI document (schemathesis) over real HTTP.

Every operation gets schema-valid and schema-breaking requests (schemathesis' examples,
coverage and fuzzing phases). With a valid token no answer may be a 5xx, every answer
must be documented (status code, content type, headers, body schema), every 4xx must be
a JSON error naming the problem, schema-breaking input must be refused and schema-valid
input accepted. With a missing, malformed, expired or wrongly signed token every request
to an API route must be a documented 401.

``CONTACTS_FUZZ_EXAMPLES`` sets the fuzzing examples per operation (``make fuzz`` runs 500);
``CONTACTS_FUZZ_OPERATIONS``, a regular expression, picks operations by operationId.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import schemathesis
from _pytest.nodeid import coerce_node_id
from _pytest.nodes import Node
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api_docs import OPERATIONS
from service.auth import mint_token
from service.embedded import free_port
from tests.support import SECRET, AccountClient, Service, new_database, start_service

# schemathesis 4.32 names each operation's subtest by assigning ``node._nodeid``; pytest 9.2
# replaced that attribute with ``_id`` (a NodeId), so route the assignment there.
if pytest.version_tuple >= (9, 2) and not hasattr(Node, "_nodeid"):
    Node._nodeid = property(lambda node: node.nodeid,
                            lambda node, value: setattr(node, "_id", coerce_node_id(value)))

EXAMPLES = int(os.environ.get("CONTACTS_FUZZ_EXAMPLES", "15"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                         suppress_health_check=list(HealthCheck))
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]

# Operations whose rules go beyond what JSON Schema can say, and the statuses with which they
# may refuse a schema-valid request (as a JSON error naming the field: ``clear_error_body``).
# Every other operation must accept every schema-valid request (2xx, or 404/409/429).
BEYOND_THE_SCHEMA = {
    # the phone must be a real number (libphonenumber), the email look like a@b.c, listIds name the account's lists
    "createContact": ["422"],
    "updateContact": ["422"],
    # a cursor must be one the service gave out for this sort and these filters, and not come with page
    "listContacts": ["422"],
    # exactly one of ids (contactIds) and filter, and a filter that names some contacts (or all: true)
    **dict.fromkeys(("bulkDeleteContacts", "addContactsToList", "removeContactsFromList", "bulkTagContacts",
                     "bulkUntagContacts", "bulkOptOutContacts", "bulkOptInContacts"), ["422"]),
    # the name is trimmed (Python's whitespace, wider than JSON Schema's \\s) and must not be empty then
    "createContactList": ["422"],
    "updateContactList": ["422"],
    # the file must be a CSV or XLSX (415 otherwise) with a phone column; mapping a JSON object of known fields
    "importContactsFile": ["415", "422"],
    # listId must name one of the account's lists; region a known region
    "importContactsJson": ["422"],
    # fileBase64 must be base64, mimeType a supported type, filename a bare name, email an address
    "emailContactsExport": ["422"],
}
# schemathesis' default, less 5xx; plus 412: an If-Match naming a version the resource is not at
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "412", "429"]


def _config(*, phases: dict[str, Any] | None = None) -> SchemathesisConfig:
    # The documented examples run in a test of their own (test_documented_examples_...):
    # schemathesis cannot combine them with ``@schema.given``.
    phases = phases or {"examples": {"enabled": False}}
    return SchemathesisConfig.from_dict({
        # The tests set the Authorization header themselves: a valid token, or each bad one.
        "generation": {"with-security-parameters": False},
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        "operations": [{"include-operation-id": operation_id,
                        "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *refusals]}}}
                       for operation_id, refusals in BEYOND_THE_SCHEMA.items()],
        "phases": phases,
    })


@schemathesis.check
def clear_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx is a JSON error body naming the problem; a 422 to a JSON object names the field(s) at fault."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    assert isinstance(body, dict), f"a {response.status_code} body is not a JSON object: {response.text[:200]}"
    assert body.get("status") == response.status_code, f"`status` is not {response.status_code}: {body}"
    assert isinstance(body.get("error"), str) and body["error"], f"no `error` code: {body}"
    assert isinstance(body.get("message"), str) and body["message"].strip(), f"no `message`: {body}"
    if response.status_code == 422 and body["error"] != "import_failed" and isinstance(case.body, dict):
        # "" is a name too: an unknown field called "" is named exactly as sent
        named = [e for e in body.get("errors") or [] if isinstance(e.get("field"), str)]
        assert named, f"a 422 names no field: {body}"
    return True


class Mailbox:
    """Accepts every message, so export-email reaches the mail provider instead of answering 503."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def fuzz_service(postgres_server: str, nats_url: str) -> Iterator[Service]:
    """The app with its worker and a mail provider, on a database of its own."""
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    svc = start_service(new_database(postgres_server), nats_url, smtp_url=f"smtp://127.0.0.1:{smtp.port}")
    yield svc
    svc.close()
    smtp.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_service: Service) -> Any:
    """The OpenAPI document the running service serves (its written examples are tried on their own, below)."""
    return schemathesis.openapi.from_url(f"{fuzz_service.url}/schema/openapi.json",
                                         config=_config(phases={"examples": {"enabled": False}}))


@pytest.fixture(scope="module")
def api_schema_examples(fuzz_service: Service) -> Any:
    """The same document, for its written request examples only."""
    return schemathesis.openapi.from_url(f"{fuzz_service.url}/schema/openapi.json", config=_config(phases={
        "examples": {"enabled": True}, "coverage": {"enabled": False}, "fuzzing": {"enabled": False},
        "stateful": {"enabled": False}}))


@pytest.fixture(scope="module")
def api_schema_for_bad_tokens(fuzz_service: Service) -> Any:
    """The same document, without the coverage phase: the token is refused before the input is read."""
    return schemathesis.openapi.from_url(f"{fuzz_service.url}/schema/openapi.json",
                                         config=_config(phases={"coverage": {"enabled": False}}))


class SeededAccount:
    """A fresh account with a list, contacts (one in the trash) and an import: real ids to aim at."""

    def __init__(self, api: AccountClient, ids: dict[str, list[str]]):
        self.api = api
        self.ids = ids

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.api.headers["Authorization"]}


@pytest.fixture(scope="module")
def account(fuzz_service: Service) -> SeededAccount:
    api = fuzz_service.client()
    listed = api.create_list("Fuzzed")
    contacts = [api.create_contact(f"+2547120000{i:02d}", firstName=f"F{i}", tags=["fuzz"],
                                   listIds=[listed["id"]]) for i in range(3)]
    assert api.delete(f"/api/v1/contacts/{contacts[-1]['id']}").status_code == 204
    imported = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "+254712000099"}, {"phone": "x"}]})
    assert imported.status_code == 201, imported.text
    return SeededAccount(api=api, ids={"list_id": [listed["id"]], "contact_id": [c["id"] for c in contacts],
                                       "import_id": [imported.json()["importId"]]})


schema = schemathesis.pytest.from_fixture("api_schema")
schema_for_bad_tokens = schemathesis.pytest.from_fixture("api_schema_for_bad_tokens")
# Only operations with written request examples (service/api_docs.py): the others have none to send.
schema_examples = schemathesis.pytest.from_fixture("api_schema_examples").include(
    operation_id=[op_id for op_id, doc in OPERATIONS.items() if doc.request])
if os.environ.get("CONTACTS_FUZZ_OPERATIONS"):
    schema = schema.include(operation_id_regex=os.environ["CONTACTS_FUZZ_OPERATIONS"])
    schema_examples = schema_examples.include(operation_id_regex=os.environ["CONTACTS_FUZZ_OPERATIONS"])
    schema_for_bad_tokens = schema_for_bad_tokens.include(
        operation_id_regex=os.environ["CONTACTS_FUZZ_OPERATIONS"])


def _use_known_ids(case: Any, account: SeededAccount, data: st.DataObject) -> None:
    """Half of the time, aim a path id at the account's real list, contact or import.

    Only a generated id that is a UUID is swapped, so a case meant to break the path stays broken.
    """
    for name, value in list((case.path_parameters or {}).items()):
        known = account.ids.get(name)
        if known and _is_uuid(value) and data.draw(st.booleans(), label=f"real {name}"):
            case.path_parameters[name] = data.draw(st.sampled_from(known), label=name)


@schema.parametrize()
@schema.given(data=st.data())
@FUZZ_SETTINGS
def test_fuzz_with_a_valid_token(case: Any, data: st.DataObject, fuzz_service: Service,
                                 account: SeededAccount) -> None:
    """No 5xx, every answer documented, bad input refused clearly, for a real account's requests."""
    _use_known_ids(case, account, data)
    case.call_and_validate(base_url=fuzz_service.url, headers=account.headers)


@schema_examples.parametrize()
@settings(FUZZ_SETTINGS, max_examples=50)
def test_the_written_examples_are_answered_as_documented(case: Any, fuzz_service: Service,
                                                         account: SeededAccount) -> None:
    """Each request example of the document, sent as it is, gets a documented answer (no 5xx)."""
    case.call_and_validate(base_url=fuzz_service.url, headers=account.headers)


def _bad_tokens() -> dict[str, str | None]:
    now = int(time.time())
    claims = {"account_id": str(uuid.uuid4()), "sub": "fuzzer", "exp": now + 3600}
    return {
        "missing": None,
        "not bearer": "Basic " + base64.b64encode(b"user:pass").decode(),
        "empty bearer": "Bearer ",
        "not a jwt": "Bearer not.a.jwt",
        "wrongly signed": "Bearer " + mint_token("another-secret-another-secret-1234", uuid.uuid4(), "fuzzer"),
        "expired": "Bearer " + jwt.encode({**claims, "exp": now - 60}, SECRET, algorithm="HS256"),
        "account not a uuid": "Bearer " + jwt.encode({**claims, "account_id": "acme"}, SECRET, algorithm="HS256"),
        "unsigned (alg none)": "Bearer " + jwt.encode(claims, None, algorithm="none"),
    }


BAD_TOKENS = _bad_tokens()


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _path_routes(case: Any) -> bool:
    """Whether the path reaches the operation's route: every API path id is a UUID (else 404 before auth)."""
    return all(_is_uuid(value) for value in (case.path_parameters or {}).values())


@schema_for_bad_tokens.include(path_regex="^/api/").parametrize()
@settings(FUZZ_SETTINGS, max_examples=max(3, EXAMPLES // 3))
def test_fuzz_with_bad_tokens_is_always_a_documented_401(case: Any, fuzz_service: Service) -> None:
    """Whatever the request to an API route, each bad token is a documented 401 saying what is wrong."""
    routed = _path_routes(case)
    for kind, authorization in BAD_TOKENS.items():
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if authorization is not None:
            headers["Authorization"] = authorization
        case.headers = headers
        response = case.call(base_url=fuzz_service.url)
        if not routed:
            assert response.status_code == 404 and response.json()["error"] == "not_found", (kind, response.text)
            continue
        assert response.status_code == 401, (kind, response.status_code, response.text)
        body = response.json()
        assert response.headers.get("www-authenticate") == ["Bearer"], (kind, response.headers)
        assert body["error"] == "unauthorized" and body["message"], (kind, body)
        case.validate_response(response, checks=CONFORMANCE)


# --- What the fuzzer found, pinned as plain tests -------------------------------------


def test_nul_in_text_is_a_422_naming_the_field_and_later_writes_still_work(service: Service) -> None:
    """A NUL stored in an event could never reach the read tables, and every later write waited on it."""
    api = service.client()
    refused = [
        api.post("/api/v1/contact-lists", json={"name": "a\x00b"}),
        api.post("/api/v1/contacts", json={"phone": "+254712345678", "firstName": "Jo\x00hn"}),
        api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "+254712345679", "notes": "\x00"}]}),
        api.get("/api/v1/contacts", params={"search": "a\x00"}),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["message"] and response.json()["errors"][0]["field"], response.text
    assert [e["field"] for r in refused[:2] + refused[3:] for e in r.json()["errors"]] == \
        ["name", "firstName", "search"]
    assert api.create_list("After")["name"] == "After"
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_a_malformed_multipart_body_is_a_400(service: Service) -> None:
    api = service.client()
    response = api.post("/api/v1/contacts/import", content=b"--b\r\nbad\rheader\r\n\r\nx\r\n--b--\r\n",
                        headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_body" and "multipart" in response.json()["message"]


def test_a_body_that_is_not_an_object_names_no_field(service: Service) -> None:
    response = service.client().post("/api/v1/contact-lists", json=[1])
    assert response.json() == {"status": 422, "error": "validation_failed",
                               "message": "Expected `object`, got `array`"}


def test_the_import_report_is_csv_with_one_charset(service: Service) -> None:
    api = service.client()
    imported = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "nope"}]}).json()
    report = api.get(imported["reportUrl"])
    assert report.status_code == 200 and report.headers["content-type"] == "text/csv; charset=utf-8"


def test_the_openapi_document_says_what_the_api_does(service: Service) -> None:
    doc = service.anonymous().get("/schema/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    assert "security" not in doc and "security" not in paths["/health"]["get"]
    assert paths["/api/v1/contacts"]["post"]["security"] == [{"bearer": []}]
    create = paths["/api/v1/contacts"]["post"]["responses"]
    assert {"201", "400", "401", "409", "413", "422", "429", "503"} <= set(create)
    error_schema = create["409"]["content"]["application/json"]["schema"]["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[error_schema]["required"]) == {"status", "error", "message"}
    assert create["409"]["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]["enum"] == \
        ["concurrent_modification", "phone_taken"]
    assert schemas["ContactCreate"]["additionalProperties"] is False
    email = paths["/api/v1/contacts/export-email"]["post"]["requestBody"]["content"]["application/json"]
    assert email["schema"]["additionalProperties"] is False and "fileBase64" in email["schema"]["required"]
    upload = paths["/api/v1/contacts/import"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]

"""The OpenAPI document as a client team reads it: error contract, headers, words, examples, docs pages.

What the service really answers is held to the document by tests/integration/test_fuzz.py (each error
status's schema allows only the codes listed for that operation); these tests check the
document against the HTTP layer's error table and the docs pages against the network.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

import service.app  # noqa: F401 - imports every module that defines a DomainError
from command.errors import DomainError
from service.api_docs import ERRORS
from service.app import create_app
from service.errors import CODES, STATUS
from service.settings import Settings
from tests.support import Service


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.fixture(scope="module")
def docs() -> Iterator[TestClient]:
    """The app's documentation routes; they need no database (the container is never touched)."""
    app = create_app(types.SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def document(docs: TestClient) -> dict[str, Any]:
    return docs.get("/schema/openapi.json").json()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_every_domain_error_has_its_status_and_its_code_in_the_http_table() -> None:
    for cls in [DomainError, *_subclasses(DomainError)]:
        assert cls in STATUS, f"{cls.__module__}.{cls.__name__} has no HTTP status in service/errors.py"
        assert not hasattr(cls, "status_code"), f"{cls.__name__} carries an HTTP status: map it in STATUS"
        if cls is not DomainError:  # the base is never raised itself
            assert cls.code in CODES and CODES[cls.code].status == STATUS[cls], cls


def test_each_operation_documents_exactly_its_error_codes_each_with_when(document: dict[str, Any]) -> None:
    documented: set[str] = set()
    for method, path, operation in _operations(document):
        if not path.startswith("/api/"):
            continue
        codes = ERRORS[operation["operationId"]]
        errors = {status: response for status, response in operation["responses"].items() if int(status) >= 400}
        listed = {}
        for status, response in errors.items():
            content = response["content"]["application/json"]
            schema = content["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
            enum = schema["allOf"][1]["properties"]["error"]["enum"]
            for code in enum:
                assert CODES[code].status == int(status)
                assert f"`{code}`: {CODES[code].when}" in response["description"]
                assert content["examples"][code]["value"]["error"] == code
                listed[code] = int(status)
        assert sorted(listed) == sorted(set(codes)), (method, path)
        assert "401" in errors and "503" in errors, (method, path)
        documented |= set(listed)
    assert documented == set(CODES), "codes the service can answer that no operation documents"


def test_no_operation_documents_an_error_the_service_never_sends(document: dict[str, Any]) -> None:
    text = str(document)
    assert "status_code" not in text and "'extra'" not in text  # Litestar's default 400 body
    create_list = document["paths"]["/api/v1/contact-lists"]["get"]["responses"]
    assert set(create_list) == {"200", "401", "422", "503"}  # 422: an unknown query parameter, on every operation
    delete = document["paths"]["/api/v1/contacts/{contact_id}"]["delete"]["responses"]
    assert "413" not in delete and "400" not in delete  # it takes no body
    assert "mail_not_configured" not in str(document["paths"]["/api/v1/contacts"])
    imports = document["paths"]["/api/v1/contacts/import"]["post"]["responses"]
    assert "invalid_file" in imports["422"]["content"]["application/json"]["schema"]["allOf"][1]["properties"][
        "error"]["enum"]


def test_headers_are_documented_where_they_apply(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        names = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert "X-Request-Id" in names, (method, path)
        for status, response in operation["responses"].items():
            headers = response["headers"]
            assert headers["X-Request-Id"]["required"] is True, (method, path, status)
            if status in ("429",):
                assert headers["Retry-After"]["required"] is True
            if status == "503" and path.startswith("/api/"):
                assert "Retry-After" in headers
            if status == "401":
                assert headers["WWW-Authenticate"]["required"] is True
            if status in ("201", "202"):
                assert headers["Location"]["required"] is True, (method, path, status)
    file_import = document["paths"]["/api/v1/contacts/import"]["post"]
    assert {p["name"] for p in file_import["parameters"]} >= {"Idempotency-Key", "Prefer", "X-Request-Id"}
    assert "Content-Disposition" in document["paths"]["/api/v1/contacts/export"]["get"]["responses"]["200"]["headers"]


def test_a_201_names_the_new_resource_in_location(service: Service) -> None:
    api = service.client()
    created = api.post("/api/v1/contact-lists", json={"name": "Nairobi customers"})
    assert created.status_code == 201
    assert created.headers["location"] == f"/api/v1/contact-lists/{created.json()['id']}"
    contact = api.post("/api/v1/contacts", json={"phone": "0712 345 678", "listIds": [created.json()["id"]]})
    assert contact.headers["location"] == f"/api/v1/contacts/{contact.json()['id']}"
    assert api.get(contact.headers["location"]).json()["phone"] == "+254712345678"
    imported = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "+234 803 123 4567"}]})
    assert imported.status_code == 201
    assert api.get(imported.headers["location"]).json()["counts"]["imported"] == 1
    from_file = api.post("/api/v1/contacts/import", files={"file": ("lagos.csv", b"phone\n0803 765 4321\n")},
                         data={"region": "NG"})
    assert from_file.status_code == 201
    assert from_file.headers["location"] == f"/api/v1/contacts/imports/{from_file.json()['importId']}"
    queued = api.post("/api/v1/contacts/import", files={"file": ("more.csv", b"phone\n0803 765 4322\n")},
                      data={"region": "NG"}, headers={"Prefer": "respond-async"})
    assert queued.status_code == 202 and queued.headers["location"] == f"/api/v1/contacts/imports/{queued.json()['id']}"
    again = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "+234 803 123 4567"}]},
                     headers={"Idempotency-Key": "k1"})
    replay = api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "+234 803 123 4567"}]},
                      headers={"Idempotency-Key": "k1"})
    assert again.status_code == 201 and replay.status_code == 200 and "location" not in replay.headers


def _references(page: str) -> list[str]:
    return re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_every_file_from_the_service_itself(docs: TestClient, page: str) -> None:
    """Offline, a docs page that fetches a script from a CDN is a blank page."""
    answer = docs.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    references = _references(answer.text)
    assert {ref.rsplit("/", 1)[1] for ref in references} >= {"swagger-ui-bundle.js", "swagger-ui.css",
                                                            "swagger-ui-standalone-preset.js"}
    external = [ref for ref in references if not ref.startswith("/")] + re.findall(r"https?://[^\s\"'<>]+",
                                                                                     answer.text.split("spec:")[0])
    assert not external, f"the page loads files from elsewhere: {external}"
    for ref in references:
        file = docs.get(ref)
        assert file.status_code == 200 and len(file.content) > 100, ref
        if ref.endswith(".js"):
            assert "javascript" in file.headers["content-type"], ref
    assert docs.get("/schema/scalar").status_code == 404  # its page was CDN-only: gone rather than blank


def test_every_operation_parameter_field_and_tag_is_described_in_words(document: dict[str, Any]) -> None:
    summaries = []
    for method, path, operation in _operations(document):
        summary = operation["summary"]
        assert " " in summary and not re.fullmatch(r"[A-Z][A-Za-z]+", summary), (method, path, summary)
        assert len(operation["description"]) > 40, (method, path)
        summaries.append(summary)
        for parameter in operation["parameters"]:
            assert parameter.get("description"), (method, path, parameter["name"])
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert body.get("examples"), (method, path)
            for name, prop in body["schema"].get("properties", {}).items():
                assert prop.get("description"), (method, path, name)
    assert len(set(summaries)) == len(summaries), "two operations share a summary"
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("description"), name
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), (name, field)
    assert all(tag.get("description") for tag in document["tags"])


def test_examples_are_written_not_generated(document: dict[str, Any]) -> None:
    """Generated examples were noise (a phone of "Sm-:XTi{0\\w", an import status "LZjQQrDxkwhWjGDYPstc")."""
    create = document["paths"]["/api/v1/contacts"]["post"]
    phones = [e["value"]["phone"] for e in create["requestBody"]["content"]["application/json"]["examples"].values()]
    assert "0712 345 678" in phones and "+234 803 123 4567" in phones
    assert create["responses"]["201"]["content"]["application/json"]["example"]["phone"] == "+254712345678"
    for name in ("ImportJob", "ImportResult", "ImportCounts", "ContactCreate"):
        assert "examples" not in document["components"]["schemas"][name], name
    job = document["paths"]["/api/v1/contacts/import"]["post"]["responses"]["202"]["content"]["application/json"]
    assert "examples" not in job and "examples" not in str(job.get("schema"))
    example = document["paths"]["/api/v1/contacts/imports/{import_id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["example"]
    counts = example["counts"]
    assert example["status"] in ("running", "completed", "failed")
    assert counts["imported"] == counts["valid"] + counts["invalid"]
    assert counts["rows"] == counts["imported"] + counts["skipped"]
    assert example["updatedAt"] >= example["createdAt"]


def test_the_api_reference_in_docs_is_the_served_document(document: dict[str, Any]) -> None:
    """docs/api.md is for readers without a running service; regenerate it with python -m service.api_docs."""
    from pathlib import Path

    from service.api_docs import markdown

    assert (Path(__file__).parents[2] / "docs" / "api.md").read_text() == markdown(document)


def test_the_docs_page_renders_offline_in_headless_chromium() -> None:
    """`make docs-check`: Chromium resolving no host but 127.0.0.1 renders every operation, not a blank page."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium): the docs page was not rendered")
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "scripts/docs_check.py"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"docs-check: (\d+) of \1 operations rendered", done.stdout), done.stdout


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every written example of the document with the schema it illustrates: bodies, answers, parameters."""
    for method, path, operation in _operations(document):
        bodies = [("request", operation.get("requestBody", {}).get("content", {}))]
        bodies += [(status, response.get("content", {})) for status, response in operation["responses"].items()]
        for where, content in bodies:
            for media_type, media in content.items():
                for name, example in media.get("examples", {}).items():
                    yield f"{method} {path} {where} {media_type} {name}", media.get("schema", {}), example["value"]
        for parameter in operation.get("parameters", []):
            for name, example in parameter.get("examples", {}).items():
                yield f"{method} {path} {parameter['name']} {name}", parameter["schema"], example["value"]


def test_the_document_passes_openapi_spec_validator_and_each_example_matches_its_schema(
        document: dict[str, Any]) -> None:
    """What a client team's tools read: the document is valid OpenAPI 3.1 to openapi-spec-validator, and
    every written example validates against its own schema (a client generated from the schemas accepts it)."""
    from openapi_schema_validator import OAS31Validator
    from openapi_spec_validator import validate

    validate(document)
    wrong = []
    examples = list(_examples(document))
    for where, schema, value in examples:
        # The schema's $refs point into the document's components: resolved from a root that holds them.
        errors = list(OAS31Validator({**schema, "components": document["components"]}).iter_errors(value))
        wrong += [f"{where}: {error.message}" for error in errors]
    assert not wrong, "\n".join(wrong)
    assert len(examples) > 150, len(examples)  # bodies, answers and parameters were all walked
    assert any("database_unavailable_part_way" in where for where, _, _ in examples)

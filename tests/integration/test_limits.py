"""Rate limits and body-size limits on every write endpoint.

Table-driven over the app's own route list: a new write route fails
``test_every_write_route_is_in_the_table`` until it is added here (and so is checked).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service.imports import BULK_MAX_BYTES
from tests.support import Service, start_service

# A token comes back every 5 s: a burst and the request after it must fit in that time for the
# last to be refused. At 60 a minute (one a second) the import route's four requests took
# 0.78 s of that second under two busy loops; the cost is a 5 s Retry-After slept once.
PER_MINUTE, BURST = 12, 3
ANY_ID = str(uuid.uuid4())

# (method, path template) → (concrete path, a small valid-looking JSON body or None, its body limit).
# Limits: "request" is CONTACTS_REQUEST_MAX_BYTES (1 MiB here); the others have their own.
WRITES: dict[tuple[str, str], tuple[str, Any, str]] = {
    ("POST", "/api/v1/contact-lists"): ("/api/v1/contact-lists", {"name": "x"}, "request"),
    ("PATCH", "/api/v1/contact-lists/{list_id:uuid}"): (f"/api/v1/contact-lists/{ANY_ID}", {"name": "x"},
                                                        "request"),
    ("DELETE", "/api/v1/contact-lists/{list_id:uuid}"): (f"/api/v1/contact-lists/{ANY_ID}", None, "request"),
    ("POST", "/api/v1/contact-lists/{list_id:uuid}/contacts"): (f"/api/v1/contact-lists/{ANY_ID}/contacts",
                                                                {"contactIds": []}, "request"),
    ("DELETE", "/api/v1/contact-lists/{list_id:uuid}/contacts"): (f"/api/v1/contact-lists/{ANY_ID}/contacts",
                                                                  {"contactIds": []}, "request"),
    ("POST", "/api/v1/contacts"): ("/api/v1/contacts", {"phone": "0712345678"}, "request"),
    ("PATCH", "/api/v1/contacts/{contact_id:uuid}"): (f"/api/v1/contacts/{ANY_ID}", {"firstName": "x"},
                                                      "request"),
    ("DELETE", "/api/v1/contacts/{contact_id:uuid}"): (f"/api/v1/contacts/{ANY_ID}", None, "request"),
    ("POST", "/api/v1/contacts/bulk-delete"): ("/api/v1/contacts/bulk-delete", {"ids": []}, "request"),
    ("POST", "/api/v1/contacts/bulk-tag"): ("/api/v1/contacts/bulk-tag", {"ids": [], "tags": ["x"]}, "request"),
    ("POST", "/api/v1/contacts/bulk-untag"): ("/api/v1/contacts/bulk-untag", {"ids": [], "tags": ["x"]}, "request"),
    ("POST", "/api/v1/contacts/bulk-opt-out"): ("/api/v1/contacts/bulk-opt-out", {"ids": []}, "request"),
    ("POST", "/api/v1/contacts/bulk-opt-in"): ("/api/v1/contacts/bulk-opt-in", {"ids": []}, "request"),
    ("POST", "/api/v1/contacts/trash/restore"): ("/api/v1/contacts/trash/restore", {"ids": []}, "request"),
    ("DELETE", "/api/v1/contacts/trash"): ("/api/v1/contacts/trash", {"ids": []}, "request"),
    ("POST", "/api/v1/contacts/bulk"): ("/api/v1/contacts/bulk", {"contacts": []}, "bulk"),
    ("POST", "/api/v1/contacts/import"): ("/api/v1/contacts/import", None, "import"),
    ("POST", "/api/v1/contacts/export-email"): ("/api/v1/contacts/export-email", {"email": "a@b.co"}, "email"),
}


@pytest.fixture(scope="module")
def limited(postgres_server: str, nats_url: str) -> Iterator[Service]:
    """A service with a low write limit (12 a minute, bursts of 3) and the default body limit."""
    from tests.support import new_database

    svc = start_service(new_database(postgres_server), nats_url, with_worker=False,
                        rate_limit_writes_per_minute=PER_MINUTE, rate_limit_burst=BURST,
                        smtp_url="smtp://127.0.0.1:9", import_max_bytes=2 * 1024 * 1024)
    yield svc
    svc.close()


def _write_routes(service: Service) -> set[tuple[str, str]]:
    app = service.server.server.config.app
    return {(m, r.path) for r in app.routes if r.path.startswith("/api/")
            for m in r.methods & {"POST", "PUT", "PATCH", "DELETE"}}


def _send(api, method: str, path: str, body: Any):
    if path.endswith("/import"):
        return api.request(method, path, files={"file": ("c.csv", b"phone\n0712000001\n")})
    return api.request(method, path, json=body) if body is not None else api.request(method, path)


def test_every_write_route_is_in_the_table(service: Service) -> None:
    assert _write_routes(service) == set(WRITES), sorted(_write_routes(service) ^ set(WRITES))


def test_writes_past_the_burst_answer_429_with_retry_after_and_write_nothing(limited: Service) -> None:
    api = limited.client()
    for i in range(BURST):
        api.create_contact(f"07120000{i:02d}")
    refused = api.post("/api/v1/contacts", json={"phone": "0712000099"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "writes a minute" in refused.json()["message"]
    # Reads are not limited, and the refused create stored nothing.
    assert api.get("/api/v1/contacts").json()["total"] == BURST
    # Another account has its own bucket.
    limited.client().create_contact("0712000099")
    # After Retry-After seconds a write goes through again.
    time.sleep(int(refused.headers["Retry-After"]))
    api.create_contact("0712000099")


@pytest.mark.parametrize("route", sorted(WRITES))
def test_every_write_endpoint_is_rate_limited(limited: Service, route: tuple[str, str]) -> None:
    api = limited.client()
    path, body, _ = WRITES[route]
    for _ in range(BURST):  # use the burst up, whatever each call answers
        assert _send(api, route[0], path, body).status_code != 429
    r = _send(api, route[0], path, body)
    assert r.status_code == 429, (route, r.status_code, r.text[:200])
    assert int(r.headers["Retry-After"]) >= 1


def _oversized(kind: str, service: Service) -> int:
    settings = service.settings
    return {"request": settings.request_max_bytes, "bulk": BULK_MAX_BYTES, "import": settings.import_max_bytes,
            "email": 4 * settings.export_email_max_bytes // 3 + settings.export_email_max_bytes // 6}[kind] \
        + 256 * 1024


@pytest.mark.parametrize("route", sorted(WRITES))
def test_every_write_endpoint_refuses_an_oversized_body_with_413(limited: Service,
                                                                  route: tuple[str, str]) -> None:
    api = limited.client()
    path, body, kind = WRITES[route]
    size = _oversized(kind, limited)
    if kind == "import":
        r = api.request(route[0], path, files={"file": ("c.csv", b"phone\n" + b"0712000001\n" * (size // 11))})
    else:
        padding = "x" * size
        r = api.request(route[0], path, content=b'{"name": "' + padding.encode() + b'"}',
                        headers={"Content-Type": "application/json"})
    # Routes that take no body never read one: the body costs nothing and the answer is the usual one.
    expected = 404 if body is None and kind == "request" else 413
    assert r.status_code == expected, (route, r.status_code, r.text[:200])
    assert r.json()["status"] == expected
    if expected == 413 and kind in ("request", "bulk"):
        limit = limited.settings.request_max_bytes if kind == "request" else BULK_MAX_BYTES
        assert r.json()["message"] == f"the request body is larger than the {limit} bytes this endpoint accepts"
    assert api.get("/api/v1/contacts").json()["total"] == 0
    assert api.get("/api/v1/contact-lists").json() == []

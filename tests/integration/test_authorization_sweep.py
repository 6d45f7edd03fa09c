"""Every route that takes an id answers 404 to another account and changes nothing.

Table-driven over the app's own route list: a new route with an id in its path fails
this test until it is added to the table below (and so is checked too).
"""

from __future__ import annotations

from typing import Any

import pytest

from service import bulk
from tests.support import Service

# (method, path template) → request body (None: no body). Ids are filled from the owner's data.
CALLS: dict[tuple[str, str], Any] = {
    ("GET", "/api/v1/contacts/{contact_id:uuid}"): None,
    ("PATCH", "/api/v1/contacts/{contact_id:uuid}"): {"firstName": "hijacked"},
    ("DELETE", "/api/v1/contacts/{contact_id:uuid}"): None,
    ("GET", "/api/v1/contacts/{contact_id:uuid}/history"): None,
    ("GET", "/api/v1/contact-lists/{list_id:uuid}"): None,
    ("PATCH", "/api/v1/contact-lists/{list_id:uuid}"): {"name": "hijacked"},
    ("DELETE", "/api/v1/contact-lists/{list_id:uuid}"): None,
    ("GET", "/api/v1/contact-lists/{list_id:uuid}/history"): None,
    ("POST", "/api/v1/contact-lists/{list_id:uuid}/contacts"): {"contactIds": []},
    ("DELETE", "/api/v1/contact-lists/{list_id:uuid}/contacts"): {"contactIds": []},
    ("GET", "/api/v1/contacts/imports/{import_id:uuid}"): None,
    ("GET", "/api/v1/contacts/bulk-actions/{job_id:uuid}"): None,
    ("GET", "/api/v1/contacts/imports/{import_id:uuid}/report.csv"): None,
}


def _routes(service: Service) -> set[tuple[str, str]]:
    app = service.server.server.config.app
    found = set()
    for route in app.routes:
        if "{" not in route.path or not route.path.startswith("/api/"):
            continue  # the OpenAPI docs' own routes are public
        for method in route.methods - {"OPTIONS", "HEAD"}:
            found.add((method, route.path))
    return found


def _owner_view(api) -> dict[str, Any]:
    return {"contacts": api.get("/api/v1/contacts").json(), "lists": api.get("/api/v1/contact-lists").json(),
            "tags": api.get("/api/v1/contacts/tags").json(), "trash": api.get("/api/v1/contacts/trash").json()}


def test_every_id_route_is_covered_by_the_sweep(service: Service) -> None:
    assert _routes(service) <= set(CALLS), sorted(_routes(service) - set(CALLS))


def test_another_accounts_ids_answer_404_and_change_nothing(service: Service,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    owner, intruder = service.client(), service.client()
    lst = owner.create_list("owned")
    contact = owner.create_contact("0712345678", firstName="Owner", tags=["mine"], listIds=[lst["id"]])
    imported = owner.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone\n0712000001\n")}).json()
    monkeypatch.setattr(bulk, "BULK_SYNC_MAX", 0)  # any filter runs as a job
    job = owner.post("/api/v1/contacts/bulk-tag", json={"tags": ["mine"], "filter": {"tags": ["mine"]}})
    assert job.status_code == 202, job.text
    assert owner.wait_for_job(job.headers["Location"], 30)["status"] == "completed"
    ids = {"contact_id": contact["id"], "list_id": lst["id"], "import_id": imported["importId"],
           "job_id": job.json()["id"]}
    before = _owner_view(owner)
    for (method, template), body in CALLS.items():
        path = template
        for name, value in ids.items():
            path = path.replace("{" + name + ":uuid}", value)
        r = intruder.request(method, path, json=body) if body is not None else intruder.request(method, path)
        assert r.status_code == 404, (method, template, r.status_code, r.text[:200])
    # Bulk endpoints take ids in the body: another account's ids count as nothing.
    assert intruder.post("/api/v1/contacts/bulk-delete", json={"ids": [contact["id"]]}).json() == {"deleted": 0}
    assert intruder.post("/api/v1/contacts/trash/restore", json={"ids": [contact["id"]]}).json() == {"restored": 0}
    assert intruder.delete_json("/api/v1/contacts/trash", {"ids": [contact["id"]]}).json() == {"purged": 0}
    assert intruder.get(f"/api/v1/contacts/{contact['id']}", params={"version": 1}).status_code == 404
    assert intruder.get("/api/v1/contacts/export").text.count("\n") == 1  # header only
    assert intruder.get("/api/v1/contacts/export-data").json() == []
    assert _owner_view(owner) == before

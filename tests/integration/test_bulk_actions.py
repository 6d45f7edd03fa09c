"""Select-all bulk actions: ids or a filter, exact counts, empty filters refused, large sets as jobs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service import bulk
from tests.support import AccountClient, Service, read_stream
from tests.waits import wait_until


def _contacts(api: AccountClient, n: int, start: int = 0, **extra: Any) -> list[dict]:
    return [api.create_contact(f"+2547130{start + i:05d}", **extra) for i in range(n)]


def _all(api: AccountClient, **params: Any) -> list[dict]:
    return api.get("/api/v1/contacts", params={"pageSize": 100, **params}).json()["contacts"]


def test_bulk_tag_and_untag_by_filter_count_only_contacts_changed(service: Service) -> None:
    api = service.client()
    vip = _contacts(api, 3, tags=["vip"])
    plain = _contacts(api, 2, start=10)
    already = api.create_contact("+254713000099", tags=["vip", "gold"])
    r = api.post("/api/v1/contacts/bulk-tag", json={"tags": ["Gold", "gold"], "filter": {"tags": ["vip"]}})
    assert r.status_code == 200 and r.json() == {"tagged": 3}, r.text
    tagged = {c["id"]: c["tags"] for c in _all(api)}
    assert all(tagged[c["id"]] == ["vip", "gold"] for c in [*vip, already])
    assert all(tagged[c["id"]] == [] for c in plain)
    assert api.get("/api/v1/contacts", params={"tags": "gold"}).json()["total"] == 4

    r = api.post("/api/v1/contacts/bulk-untag", json={"tags": ["vip"], "ids": [vip[0]["id"], plain[0]["id"]]})
    assert r.json() == {"untagged": 1}, r.text
    assert api.get(f"/api/v1/contacts/{vip[0]['id']}").json()["tags"] == ["gold"]
    history = api.get(f"/api/v1/contacts/{vip[0]['id']}/history").json()
    assert [e["type"] for e in history][-2:] == ["contacts.contact.updated.v1", "contacts.contact.updated.v1"]


def test_bulk_opt_out_and_in_by_filter(service: Service) -> None:
    api = service.client()
    news = api.create_list("news")
    members = _contacts(api, 4, listIds=[news["id"]])
    _contacts(api, 2, start=10)
    api.patch(f"/api/v1/contacts/{members[0]['id']}", json={"isOptedOut": True})
    r = api.post("/api/v1/contacts/bulk-opt-out", json={"filter": {"listId": news["id"]}})
    assert r.json() == {"optedOut": 3}, r.text
    assert api.get("/api/v1/contacts", params={"isOptedOut": "true"}).json()["total"] == 4
    r = api.post("/api/v1/contacts/bulk-opt-in", json={"filter": {"isOptedOut": True, "listId": news["id"]}})
    assert r.json() == {"optedIn": 4}, r.text
    assert api.get("/api/v1/contacts", params={"isOptedOut": "true"}).json()["total"] == 0


def test_bulk_delete_and_list_membership_by_filter(service: Service) -> None:
    api = service.client()
    news, vip = api.create_list("news"), api.create_list("vip")
    wanjiku = _contacts(api, 3, firstName="Wanjiku")
    others = _contacts(api, 2, start=10, firstName="Otieno")
    r = api.post(f"/api/v1/contact-lists/{news['id']}/contacts", json={"filter": {"search": "wanjiku"}})
    assert r.json() == {"added": 3}, r.text
    r = api.post(f"/api/v1/contact-lists/{news['id']}/contacts", json={"filter": {"all": True}})
    assert r.json() == {"added": 2}, r.text  # only the two not yet in it
    r = api.request("DELETE", f"/api/v1/contact-lists/{news['id']}/contacts",
                    json={"filter": {"search": "otieno"}})
    assert r.json() == {"removed": 2}, r.text
    assert api.get("/api/v1/contact-lists").json()[0]["contactCount"] == 3
    # The ids form works as before.
    assert api.post(f"/api/v1/contact-lists/{vip['id']}/contacts",
                    json={"contactIds": [others[0]["id"]]}).json() == {"added": 1}
    r = api.post("/api/v1/contacts/bulk-delete", json={"filter": {"listId": news["id"]}})
    assert r.json() == {"deleted": 3}, r.text
    assert {c["id"] for c in _all(api)} == {c["id"] for c in others}
    assert {c["id"] for c in api.get("/api/v1/contacts/trash").json()} == {c["id"] for c in wanjiku}
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": [others[1]["id"]]}).json() == {"deleted": 1}


def test_a_filter_matching_nothing_changes_nothing(service: Service) -> None:
    api = service.client()
    contacts = _contacts(api, 2)
    before = api.get("/api/v1/contacts").json()
    for path, body in (("/api/v1/contacts/bulk-delete", {}), ("/api/v1/contacts/bulk-tag", {"tags": ["x"]}),
                       ("/api/v1/contacts/bulk-opt-out", {})):
        r = api.post(path, json={**body, "filter": {"tags": ["nobody-has-this"]}})
        assert r.status_code == 200 and list(r.json().values()) == [0], r.text
    assert api.get("/api/v1/contacts").json() == before
    assert [e["type"] for e in api.get(f"/api/v1/contacts/{contacts[0]['id']}/history").json()] == [
        "contacts.contact.created.v1"]


@pytest.mark.parametrize("body, field", [
    ({}, "ids"),
    ({"filter": {}}, "filter"),
    ({"filter": {"all": False}}, "filter"),
    ({"filter": {"tags": [], "search": "  "}}, "filter"),
    ({"ids": [], "filter": {"all": True}}, "filter"),
    ({"filter": {"colour": "red"}}, "colour"),
])
def test_an_empty_or_double_selection_is_422_naming_the_field(service: Service, body: dict, field: str) -> None:
    api = service.client()
    contact = api.create_contact("+254713000001")
    for path, extra in (("/api/v1/contacts/bulk-delete", {}), ("/api/v1/contacts/bulk-tag", {"tags": ["x"]}),
                        ("/api/v1/contacts/bulk-untag", {"tags": ["x"]}), ("/api/v1/contacts/bulk-opt-out", {}),
                        ("/api/v1/contacts/bulk-opt-in", {})):
        r = api.post(path, json={**extra, **body})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["field"] == field, (path, r.json())
    lst = api.create_list("l")
    list_body = {("contactIds" if k == "ids" else k): v for k, v in body.items()}
    r = api.post(f"/api/v1/contact-lists/{lst['id']}/contacts", json=list_body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == ("contactIds" if field == "ids" else field)
    assert api.get(f"/api/v1/contacts/{contact['id']}").json()["tags"] == []
    assert api.get("/api/v1/contacts").json()["total"] == 1


def test_bulk_tag_needs_tags(service: Service) -> None:
    api = service.client()
    for body in ({"filter": {"all": True}}, {"filter": {"all": True}, "tags": []},
                 {"filter": {"all": True}, "tags": ["a,b"]}):
        r = api.post("/api/v1/contacts/bulk-tag", json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("tags"), r.text


def test_another_accounts_contacts_and_lists_are_never_touched(service: Service) -> None:
    owner, intruder = service.client(), service.client()
    mine = owner.create_list("mine")
    contact = owner.create_contact("+254713000002", listIds=[mine["id"]], tags=["vip"])
    intruder.create_contact("+254713000003", tags=["vip"])
    assert intruder.post("/api/v1/contacts/bulk-delete", json={"filter": {"listId": mine["id"]}}).json() == {
        "deleted": 0}
    assert intruder.post("/api/v1/contacts/bulk-tag", json={"tags": ["x"], "filter": {"all": True}}).json() == {
        "tagged": 1}
    assert intruder.post("/api/v1/contacts/bulk-opt-out", json={"ids": [contact["id"]]}).json() == {"optedOut": 0}
    assert intruder.post(f"/api/v1/contact-lists/{mine['id']}/contacts",
                         json={"filter": {"all": True}}).status_code == 404
    assert owner.get(f"/api/v1/contacts/{contact['id']}").json()["tags"] == ["vip"]


def test_a_large_selection_runs_as_a_job_with_progress_and_a_nats_completion(service: Service,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "BULK_SYNC_MAX", 5)
    monkeypatch.setattr("service.bulk_jobs.STEP", 4)
    api = service.client()
    imported = api.post("/api/v1/contacts/bulk", json={"contacts": [
        {"phone": f"+2547140{i:05d}", "tags": ["lead"] if i % 3 else []} for i in range(30)]})
    assert imported.status_code == 201, imported.text
    leads = api.get("/api/v1/contacts", params={"tags": "lead"}).json()["total"]
    assert leads == 20
    r = api.post("/api/v1/contacts/bulk-tag", json={"tags": ["hot"], "filter": {"tags": ["lead"]}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/api/v1/contacts/bulk-actions/{job['id']}"
    assert (job["action"], job["matched"], job["status"]) == ("tag", 20, job["status"])
    assert job["status"] in ("queued", "running", "completed")
    job = api.wait_for_job(r.headers["Location"], 30)
    assert (job["status"], job["processed"], job["changed"], job["error"]) == ("completed", 20, 20, None)
    assert job["finishedAt"] is not None
    assert api.get("/api/v1/contacts", params={"tags": "lead,hot"}).json()["total"] == 20
    assert api.get("/api/v1/contacts", params={"tags": "hot"}).json()["total"] == 20
    # The job's events reach NATS, its completion last.
    service.wait_for_relay()
    messages = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream,
                                       f"{service.settings.nats_subject_prefix}.{api.account_id}.bulk.>"))
    types = [json.loads(m.data)["type"] for m in messages]
    assert types[0] == "contacts.bulk_action.started.v1" and types[-1] == "contacts.bulk_action.completed.v1"
    assert types.count("contacts.bulk_action.progress.v1") == 5  # 20 contacts, 4 a step
    assert json.loads(messages[-1].data)["data"] == {"processed": 20, "changed": 20}
    assert api.get(f"/api/v1/contacts/bulk-actions/{job['id']}").status_code == 200
    assert service.client().get(f"/api/v1/contacts/bulk-actions/{job['id']}").status_code == 404


def test_a_list_job_adds_every_match_and_a_deleted_list_is_404(service: Service,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "BULK_SYNC_MAX", 2)
    api = service.client()
    news = api.create_list("news")
    _contacts(api, 4)
    r = api.post(f"/api/v1/contact-lists/{news['id']}/contacts", json={"filter": {"all": True}})
    assert r.status_code == 202, r.text
    job = api.wait_for_job(r.headers["Location"], 30)
    assert (job["action"], job["status"], job["changed"]) == ("add_to_list", "completed", 4)
    assert api.get("/api/v1/contact-lists").json()[0]["contactCount"] == 4
    gone = api.create_list("gone")
    assert api.delete(f"/api/v1/contact-lists/{gone['id']}").status_code == 204
    r = api.post(f"/api/v1/contact-lists/{gone['id']}/contacts", json={"filter": {"all": True}})
    assert r.status_code == 404, r.text  # refused before anything is queued


def test_the_openapi_document_describes_the_selection_and_the_job(service: Service) -> None:
    doc = service.anonymous().get("/schema/openapi.json").json()
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    for name in ("BulkFilter", "BulkSelection", "BulkTagging", "ContactIds", "BulkActionJob", "Tagged"):
        schema = schemas[name]
        for field, prop in schema["properties"].items():
            if field in ("createdAt", "updatedAt"):
                continue
            described = prop if "description" in prop else next(
                (p for p in prop.get("oneOf", []) + prop.get("anyOf", []) if "description" in p), prop)
            assert prop.get("description") or described.get("description"), (name, field, prop)
    for path in ("/api/v1/contacts/bulk-delete", "/api/v1/contacts/bulk-tag", "/api/v1/contacts/bulk-opt-out",
                 "/api/v1/contact-lists/{list_id}/contacts"):
        operation = paths[path]["post"]
        assert {"200", "202", "422"} <= set(operation["responses"]), path


def test_an_interrupted_job_resumes_after_its_last_step(fresh_database: str, nats_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from command.context import Actor
    from service import bulk_jobs, import_jobs, job_leases
    from tests.support import start_service

    monkeypatch.setattr(bulk, "BULK_SYNC_MAX", 3)
    monkeypatch.setattr(bulk_jobs, "STEP", 4)
    svc = start_service(fresh_database, nats_url, with_worker=False)  # nobody runs the job but this test
    try:
        api = svc.client()
        contacts = _contacts(api, 10)
        r = api.post("/api/v1/contacts/bulk-opt-out", json={"filter": {"all": True}})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        job_id = r.json()["id"]
        # A worker claims it, stores one step, and dies (its lease connection closes).
        claimed = job_leases.claim_next(svc.container)
        assert claimed is not None and str(claimed["import_id"]) == job_id
        actor = Actor(account_id=api.account_id, sub="tester", request_id="r")
        first_step = next(bulk_jobs._steps(svc.container, claimed["import_id"], skip=0))
        assert svc.container.app.bulk_step(actor, claimed["import_id"], first_step) == 4
        claimed["lease"].close()
        assert api.get(r.headers["Location"]).json()["status"] == "running"
        # The next worker resumes after that step and finishes it, once the server has released the
        # dead worker's lock (when its backend has exited: a moment after the connection closed).
        claimed = wait_until(lambda: job_leases.claim_next(svc.container), "the job could be claimed again", 10)
        import_jobs.run_job(svc.container, claimed)
        job = api.get(r.headers["Location"]).json()
        assert (job["status"], job["matched"], job["processed"], job["changed"]) == ("completed", 10, 10, 10)
        for c in contacts:
            types = [e["type"] for e in api.get(f"/api/v1/contacts/{c['id']}/history").json()]
            assert types == ["contacts.contact.created.v1", "contacts.contact.opted_out.v1"], types
        assert job_leases.claim_next(svc.container) is None  # its queue row and snapshot are gone
    finally:
        svc.close()

"""Bulk add/remove of list members, and exact counts under concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.support import Service


def _count(api, list_id: str) -> int:
    return next(i["contactCount"] for i in api.get("/api/v1/contact-lists").json() if i["id"] == list_id)


def test_bulk_add_counts_only_contacts_newly_added(service: Service) -> None:
    api, other = service.client(), service.client()
    lst = api.create_list("news")
    a = api.create_contact("0711000001", listIds=[lst["id"]])["id"]
    b = api.create_contact("0711000002")
    foreign = other.create_contact("0711000003")["id"]
    r = api.post(f"/api/v1/contact-lists/{lst['id']}/contacts",
                 json={"contactIds": [a, b["id"], b["id"], foreign, str(uuid.uuid4())]})
    assert r.status_code == 200 and r.json() == {"added": 1}
    assert _count(api, lst["id"]) == 2
    joined = api.get(f"/api/v1/contacts/{b['id']}")
    assert joined.json()["listIds"] == [lst["id"]]
    # Joining a list is a change of the contact: its version (ETag) and time move on.
    assert joined.headers["etag"] == '"2"' and joined.json()["updatedAt"] > b["updatedAt"]
    b = b["id"]
    assert other.get(f"/api/v1/contacts/{foreign}").json()["listIds"] == []
    assert api.post(f"/api/v1/contact-lists/{lst['id']}/contacts", json={"contactIds": [a, b]}).json() == {"added": 0}


def test_bulk_remove_counts_removed_and_keeps_the_contacts(service: Service) -> None:
    api = service.client()
    lst = api.create_list("news")
    a = api.create_contact("0711000001", listIds=[lst["id"]])["id"]
    b = api.create_contact("0711000002")["id"]
    r = api.delete_json(f"/api/v1/contact-lists/{lst['id']}/contacts", {"contactIds": [a, b]})
    assert r.status_code == 200 and r.json() == {"removed": 1}
    assert _count(api, lst["id"]) == 0
    assert api.get(f"/api/v1/contacts/{a}").json()["listIds"] == []
    assert api.get("/api/v1/contacts").json()["total"] == 2


def test_malformed_contact_ids_are_422(service: Service) -> None:
    api = service.client()
    lst = api.create_list("news")
    r = api.post(f"/api/v1/contact-lists/{lst['id']}/contacts", json={"contactIds": ["nope"]})
    assert r.status_code == 422
    assert api.post(f"/api/v1/contact-lists/{lst['id']}/contacts", json={}).status_code == 422


def test_deleting_a_list_keeps_contacts_and_other_memberships(service: Service) -> None:
    api = service.client()
    gone, kept = api.create_list("gone"), api.create_list("kept")
    c = api.create_contact("0711000001", listIds=[gone["id"], kept["id"]])
    assert api.delete(f"/api/v1/contact-lists/{gone['id']}").status_code == 204
    after = api.get(f"/api/v1/contacts/{c['id']}").json()
    assert after["listIds"] == [kept["id"]]
    assert _count(api, kept["id"]) == 1
    assert api.get("/api/v1/contacts", params={"listId": gone["id"]}).json()["total"] == 0
    # The contact can be synced again without the deleted list getting in the way.
    assert api.patch(f"/api/v1/contacts/{c['id']}", json={"listIds": [kept["id"]]}).status_code == 200


def test_counts_stay_exact_under_concurrent_adds_and_removes(service: Service) -> None:
    api = service.client()
    lst = api.create_list("busy")
    ids = [api.create_contact(f"07110{i:05d}")["id"] for i in range(40)]

    def add(chunk: list[str]) -> int:
        return api.post(f"/api/v1/contact-lists/{lst['id']}/contacts", json={"contactIds": chunk}).json()["added"]

    chunks = [ids[i:i + 5] for i in range(0, 40, 5)]
    with ThreadPoolExecutor(8) as pool:
        added = sum(pool.map(add, chunks + chunks))  # every chunk twice, concurrently
    assert added == 40
    assert _count(api, lst["id"]) == 40

    def remove(chunk: list[str]) -> int:
        return api.delete_json(f"/api/v1/contact-lists/{lst['id']}/contacts",
                               {"contactIds": chunk}).json()["removed"]

    with ThreadPoolExecutor(8) as pool:
        removed = sum(pool.map(remove, chunks[:4] + chunks[:4]))
    assert removed == 20
    assert _count(api, lst["id"]) == 20
    assert api.get("/api/v1/contacts", params={"listId": lst["id"]}).json()["total"] == 20

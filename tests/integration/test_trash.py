"""Soft delete, trash, restore, purge and retention through HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from service.retention import purge_expired
from tests.support import Service


def _count(api, list_id: str) -> int:
    return next(i["contactCount"] for i in api.get("/api/v1/contact-lists").json() if i["id"] == list_id)


def test_soft_delete_hides_the_contact_from_every_active_view(service: Service) -> None:
    api = service.client()
    lst = api.create_list("vip")
    c = api.create_contact("0711000001", tags=["only-here"], listIds=[lst["id"]])
    keep = api.create_contact("0711000002", tags=["shared"], listIds=[lst["id"]])
    assert api.delete(f"/api/v1/contacts/{c['id']}").status_code == 204
    assert api.get(f"/api/v1/contacts/{c['id']}").status_code == 404
    assert [x["id"] for x in api.get("/api/v1/contacts").json()["contacts"]] == [keep["id"]]
    assert api.get("/api/v1/contacts", params={"listId": lst["id"]}).json()["total"] == 1
    assert _count(api, lst["id"]) == 1
    assert api.get("/api/v1/contacts/tags").json() == ["shared"]
    trash = api.get("/api/v1/contacts/trash").json()
    assert [t["id"] for t in trash] == [c["id"]]
    assert trash[0]["deletedAt"] is not None and trash[0]["listIds"] == [lst["id"]]
    assert api.delete(f"/api/v1/contacts/{c['id']}").status_code == 404
    assert api.patch(f"/api/v1/contacts/{c['id']}", json={"firstName": "x"}).status_code == 404


def test_trashed_contact_still_holds_its_number(service: Service) -> None:
    api = service.client()
    c = api.create_contact("0711000001")
    api.delete(f"/api/v1/contacts/{c['id']}")
    r = api.post("/api/v1/contacts", json={"phone": "0711000001"})
    assert r.status_code == 409 and r.json()["contactId"] == c["id"]


def test_restore_brings_back_lists_tags_and_counts(service: Service) -> None:
    api = service.client()
    a, b = api.create_list("a"), api.create_list("b")
    c = api.create_contact("0711000001", tags=["vip"], listIds=[a["id"], b["id"]])
    api.delete(f"/api/v1/contacts/{c['id']}")
    assert (_count(api, a["id"]), _count(api, b["id"])) == (0, 0)
    r = api.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"], c["id"], str(uuid.uuid4())]})
    assert r.status_code == 200 and r.json() == {"restored": 1}
    back = api.get(f"/api/v1/contacts/{c['id']}").json()
    assert sorted(back["listIds"]) == sorted([a["id"], b["id"]]) and back["tags"] == ["vip"]
    assert back["deletedAt"] is None
    assert (_count(api, a["id"]), _count(api, b["id"])) == (1, 1)
    assert api.get("/api/v1/contacts/tags").json() == ["vip"]
    assert api.get("/api/v1/contacts/trash").json() == []
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"]]}).json() == {"restored": 0}


def test_list_deleted_while_contact_is_in_trash_is_gone_after_restore(service: Service) -> None:
    api = service.client()
    a = api.create_list("a")
    c = api.create_contact("0711000001", listIds=[a["id"]])
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.delete(f"/api/v1/contact-lists/{a['id']}")
    api.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"]]})
    assert api.get(f"/api/v1/contacts/{c['id']}").json()["listIds"] == []


def test_bulk_delete_counts_only_active_contacts_of_the_account(service: Service) -> None:
    api, other = service.client(), service.client()
    a, b = api.create_contact("0711000001"), api.create_contact("0711000002")
    foreign = other.create_contact("0711000003")
    api.delete(f"/api/v1/contacts/{b['id']}")
    r = api.post("/api/v1/contacts/bulk-delete",
                 json={"ids": [a["id"], a["id"], b["id"], foreign["id"], str(uuid.uuid4())]})
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert api.get("/api/v1/contacts").json()["total"] == 0
    assert other.get(f"/api/v1/contacts/{foreign['id']}").status_code == 200


def test_malformed_ids_are_422_on_every_trash_endpoint(service: Service) -> None:
    api = service.client()
    for method, path in (("POST", "/api/v1/contacts/bulk-delete"), ("POST", "/api/v1/contacts/trash/restore"),
                         ("DELETE", "/api/v1/contacts/trash")):
        for body in ({"ids": ["not-a-uuid"]}, {}, {"ids": "x"}):
            r = api.request(method, path, json=body)
            assert r.status_code == 422, (path, body, r.text)


def test_purge_erases_only_trashed_contacts_and_frees_the_number(service: Service) -> None:
    api = service.client()
    lst = api.create_list("l")
    trashed = api.create_contact("0711000001", tags=["gone-tag"], listIds=[lst["id"]])
    active = api.create_contact("0711000002", tags=["kept"], listIds=[lst["id"]])
    api.delete(f"/api/v1/contacts/{trashed['id']}")
    r = api.delete_json("/api/v1/contacts/trash", {"ids": [trashed["id"], active["id"], trashed["id"]]})
    assert r.status_code == 200 and r.json() == {"purged": 1}
    assert api.get("/api/v1/contacts/trash").json() == []
    assert api.get(f"/api/v1/contacts/{active['id']}").status_code == 200
    assert api.get("/api/v1/contacts/tags").json() == ["kept"]
    assert _count(api, lst["id"]) == 1
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": [trashed["id"]]}).json() == {"restored": 0}
    again = api.create_contact("0711000001")
    assert again["id"] != trashed["id"] and again["isOptedOut"] is False


def test_a_purged_number_is_taken_again_by_an_import_and_by_a_phone_change(service: Service) -> None:
    """A freed number has a reservation row: the claim that finds it (not the plain insert of new numbers) takes it."""
    api = service.client()
    for phone in ("0711000011", "0711000012"):
        c = api.create_contact(phone)
        api.delete(f"/api/v1/contacts/{c['id']}")
        api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]})
    # One freed number among new ones, in one batch.
    r = api.post("/api/v1/contacts/import", files={"file": ("a.csv", b"phone\n0711000013\n0711000011\n0711000014\n")})
    assert r.status_code == 201 and r.json()["imported"] == 3, r.text
    imported = {c["phone"]: c["id"] for c in api.get("/api/v1/contacts").json()["contacts"]}
    assert set(imported) == {"+254711000011", "+254711000013", "+254711000014"}
    # The import's contact holds it now.
    taken = api.post("/api/v1/contacts", json={"phone": "0711000011"})
    assert taken.status_code == 409 and taken.json()["contactId"] == imported["+254711000011"], taken.text
    # A PATCH to the other freed number takes it too, and frees the number it leaves.
    moved = api.patch(f"/api/v1/contacts/{imported['+254711000013']}", json={"phone": "0711000012"})
    assert moved.status_code == 200 and moved.json()["phone"] == "+254711000012", moved.text
    assert api.post("/api/v1/contacts", json={"phone": "0711000012"}).status_code == 409
    assert api.post("/api/v1/contacts", json={"phone": "0711000013"}).status_code == 201


def test_opt_out_survives_purge(service: Service) -> None:
    api = service.client()
    c = api.create_contact("0711000001", isOptedOut=True)
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]})
    again = api.create_contact("+254 711 000 001")
    assert again["isOptedOut"] is True
    # Stored so, not only answered so: the create built it again after its claim found the opt-out.
    assert api.get(f"/api/v1/contacts/{again['id']}").json()["isOptedOut"] is True
    assert api.get("/api/v1/contacts", params={"isOptedOut": "true"}).json()["total"] == 1
    # Another account's opt-out does not leak across.
    assert service.client().create_contact("0711000001")["isOptedOut"] is False


def test_trash_endpoints_respect_tenancy(service: Service) -> None:
    owner, intruder = service.client(), service.client()
    c = owner.create_contact("0711000001")
    assert intruder.delete(f"/api/v1/contacts/{c['id']}").status_code == 404
    owner.delete(f"/api/v1/contacts/{c['id']}")
    assert intruder.get("/api/v1/contacts/trash").json() == []
    assert intruder.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"]]}).json() == {"restored": 0}
    assert intruder.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]}).json() == {"purged": 0}
    assert [t["id"] for t in owner.get("/api/v1/contacts/trash").json()] == [c["id"]]


def test_retention_purges_contacts_trashed_longer_than_the_retention(service: Service) -> None:
    api = service.client()
    old = api.create_contact("0711000001")
    api.delete(f"/api/v1/contacts/{old['id']}")
    now = datetime.now(timezone.utc)
    purge_expired(service.container, now + timedelta(days=89))
    assert [t["id"] for t in api.get("/api/v1/contacts/trash").json()] == [old["id"]]
    assert purge_expired(service.container, now + timedelta(days=91)) >= 1
    assert api.get("/api/v1/contacts/trash").json() == []
    events = list(service.container.app.events.get(uuid.UUID(old["id"])))
    assert type(events[-1]).__name__ == "Purged" and events[-1].actor == "system"

"""History for auditors: events in order, state as of a time or version, even after purge."""

from __future__ import annotations

import uuid

from tests.support import Service


def test_contact_history_lists_every_event_with_actor_and_time(service: Service) -> None:
    api = service.client(sub="auditor-alice")
    lst = api.create_list("l")
    c = api.create_contact("0712345678", firstName="Ann", tags=["a"])
    api.patch(f"/api/v1/contacts/{c['id']}", json={"firstName": "Anne", "listIds": [lst["id"]], "isOptedOut": True})
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"]]})
    r = api.get(f"/api/v1/contacts/{c['id']}/history")
    assert r.status_code == 200, r.text
    events = r.json()
    assert [e["type"] for e in events] == [
        "contacts.contact.created.v1", "contacts.contact.updated.v1", "contacts.contact.added_to_lists.v1",
        "contacts.contact.opted_out.v1", "contacts.contact.trashed.v1", "contacts.contact.restored.v1"]
    assert [e["version"] for e in events] == list(range(1, 7))
    assert all(e["actor"] == "auditor-alice" and e["time"] for e in events)
    assert events[0]["data"]["firstName"] == "Ann" and events[0]["data"]["phone"] == "+254712345678"
    assert events[1]["data"]["firstName"] == "Anne"
    assert events[2]["data"]["listIds"] == [lst["id"]]


def test_contact_as_of_a_time_and_a_version(service: Service) -> None:
    api = service.client()
    c = api.create_contact("0712345678", firstName="First")
    between = api.get(f"/api/v1/contacts/{c['id']}/history").json()[0]["time"]
    api.patch(f"/api/v1/contacts/{c['id']}", json={"firstName": "Second"})
    old = api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": between}).json()
    assert old["firstName"] == "First" and old["version"] == 1
    assert api.get(f"/api/v1/contacts/{c['id']}", params={"version": 2}).json()["firstName"] == "Second"
    assert api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": "2000-01-01T00:00:00Z"}).status_code == 404
    beyond = api.get(f"/api/v1/contacts/{c['id']}", params={"version": 3})
    assert beyond.status_code == 404 and "latest is 2" in beyond.json()["message"]
    assert api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": "2030-01-01T00:00:00"}).status_code == 422


def test_purged_contact_history_keeps_its_shape_with_personal_data_erased(service: Service) -> None:
    api = service.client()
    c = api.create_contact("0712345678", firstName="Secret")
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]})
    events = api.get(f"/api/v1/contacts/{c['id']}/history").json()
    assert [e["type"].split(".")[2] for e in events] == ["created", "trashed", "purged"]
    assert events[0]["data"]["erased"] is True and "firstName" not in events[0]["data"]
    then = api.get(f"/api/v1/contacts/{c['id']}", params={"version": 1}).json()
    assert then["erased"] is True and then["phone"] is None
    last = api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": "2100-01-01T00:00:00Z"}).json()
    assert (last["version"], last["purged"], last["erased"], last["firstName"]) == (3, True, True, None)


def test_imported_contact_history_starts_with_its_batch(service: Service) -> None:
    api = service.client()
    api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone,first_name\n0712000001,Imported\n")})
    c = api.get("/api/v1/contacts").json()["contacts"][0]
    api.patch(f"/api/v1/contacts/{c['id']}", json={"lastName": "Later"})
    events = api.get(f"/api/v1/contacts/{c['id']}/history").json()
    assert [(e["version"], e["type"]) for e in events] == [(1, "contacts.contact.created.v1"),
                                                           (2, "contacts.contact.updated.v1")]
    assert events[0]["data"]["firstName"] == "Imported"


def test_purged_imported_contact_history_still_starts_with_its_batch(service: Service) -> None:
    """The key row keeps the batch that created an imported contact when the purge erases its key."""
    api = service.client()
    api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone,first_name\n0712000002,Imported\n")})
    imported = api.get("/api/v1/contacts").json()["contacts"][0]
    single = api.create_contact("0712000003", firstName="Single")
    ids = [imported["id"], single["id"]]
    for cid in ids:
        api.delete(f"/api/v1/contacts/{cid}")
    assert api.delete_json("/api/v1/contacts/trash", {"ids": ids}).json() == {"purged": 2}
    events = api.get(f"/api/v1/contacts/{imported['id']}/history").json()
    assert [e["type"].split(".")[2] for e in events] == ["created", "trashed", "purged"]
    assert events[0]["data"]["erased"] is True and "firstName" not in events[0]["data"]
    with service.container.pool.connection() as conn:
        rows = dict(conn.execute("SELECT contact_id, key FROM contact_keys WHERE contact_id = ANY(%s)",
                                 ([uuid.UUID(cid) for cid in ids],)).fetchall())
    # The imported contact's key is erased, its row kept for the origin; the other's row is gone.
    assert rows == {uuid.UUID(imported["id"]): None}


def test_list_history_includes_deleted_lists(service: Service) -> None:
    api = service.client()
    lst = api.create_list("Old", description="d")
    api.patch(f"/api/v1/contact-lists/{lst['id']}", json={"name": "New"})
    api.delete(f"/api/v1/contact-lists/{lst['id']}")
    events = api.get(f"/api/v1/contact-lists/{lst['id']}/history").json()
    assert [e["type"] for e in events] == ["contacts.contact_list.created.v1", "contacts.contact_list.updated.v1",
                                           "contacts.contact_list.deleted.v1"]
    assert events[1]["data"]["changes"] == {"name": "New"}


def test_history_is_private_to_the_account(service: Service) -> None:
    owner, intruder = service.client(), service.client()
    c, lst = owner.create_contact("0712345678"), owner.create_list("x")
    assert intruder.get(f"/api/v1/contacts/{c['id']}/history").status_code == 404
    assert intruder.get(f"/api/v1/contacts/{c['id']}", params={"version": 1}).status_code == 404
    assert intruder.get(f"/api/v1/contact-lists/{lst['id']}/history").status_code == 404
    assert owner.get(f"/api/v1/contacts/{uuid.uuid4()}/history").status_code == 404
    assert owner.get(f"/api/v1/contacts/{lst['id']}/history").status_code == 404  # a list id is no contact


def test_every_response_carries_the_request_id_its_events_record(service: Service) -> None:
    """The id the service generates is sent back, so the client can find its request in the history."""
    api = service.client()
    created = api.post("/api/v1/contact-lists", json={"name": "Audited"})
    generated = created.headers["x-request-id"]
    assert len(generated) == 32
    renamed = api.patch(f"/api/v1/contact-lists/{created.json()['id']}", json={"name": "Renamed"},
                        headers={"X-Request-Id": "client-req-7"})
    assert renamed.headers["x-request-id"] == "client-req-7"
    history = api.get(f"/api/v1/contact-lists/{created.json()['id']}/history").json()
    assert [e["requestId"] for e in history] == [generated, "client-req-7"]
    # Errors and unknown paths answer with one too.
    assert service.anonymous().get("/api/v1/contacts").headers["x-request-id"]
    assert api.get("/api/v1/nowhere").headers["x-request-id"]


def test_a_deleted_list_leaves_the_rebuilt_states_as_it_left_the_contact(service: Service) -> None:
    """Deleting a list stores no event on its members; their states as of then leave it out all the same."""
    api = service.client()
    kept, dropped = api.create_list("Kept"), api.create_list("Dropped")
    c = api.create_contact("0712345001", listIds=[kept["id"], dropped["id"]])
    before = api.get(f"/api/v1/contacts/{c['id']}/history").json()[-1]["time"]
    assert api.delete(f"/api/v1/contact-lists/{dropped['id']}").status_code == 204
    assert api.get(f"/api/v1/contacts/{c['id']}").json()["listIds"] == [kept["id"]]
    latest = api.get(f"/api/v1/contacts/{c['id']}", params={"version": 1}).json()
    assert latest["listIds"] == [kept["id"]]  # the latest version lasts until now
    assert api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": "2100-01-01T00:00:00Z"}).json()["listIds"] == [
        kept["id"]]
    then = api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": before}).json()
    assert sorted(then["listIds"]) == sorted([kept["id"], dropped["id"]])  # before the delete it was in both
    api.patch(f"/api/v1/contacts/{c['id']}", json={"firstName": "Later"})
    first = api.get(f"/api/v1/contacts/{c['id']}", params={"version": 1}).json()
    assert first["listIds"] == [kept["id"]]  # version 1 lasted until version 2, after the delete


def test_a_contacts_latest_state_reads_as_the_contact_itself(service: Service) -> None:
    """The state rebuilt from the events has every field of GET /contacts/{id}, in its order, with its values."""
    api = service.client()
    lst = api.create_list("Shape")
    c = api.create_contact("0712345002", firstName="Ann", lastName="Lee", email="ann@example.com", tags=["a", "b"],
                           notes="n", listIds=[lst["id"]])
    api.patch(f"/api/v1/contacts/{c['id']}", json={"lastName": "Leigh", "isOptedOut": True})
    current = api.get(f"/api/v1/contacts/{c['id']}").json()
    rebuilt = api.get(f"/api/v1/contacts/{c['id']}", params={"asOf": "2100-01-01T00:00:00Z"}).json()
    assert list(rebuilt) == [*current, "version", "erased", "purged"]
    assert {k: rebuilt[k] for k in current} == current
    assert (rebuilt["erased"], rebuilt["purged"]) == (False, False)

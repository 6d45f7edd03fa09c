"""A write whose projection fails stores nothing; a stored event a replay cannot apply is quarantined."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import pytest
from eventsourcing.persistence import DataError

from command.context import Actor
from command.errors import ConcurrencyError
from projections.rebuild import rebuild
from tests.support import Service, start_service


def test_a_write_the_projector_cannot_apply_answers_an_error_and_stores_nothing(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        api.create_list("before")
        # PostgreSQL text cannot hold NUL: the API refuses it at the door, and a command
        # that got past the door anyway (a bug) fails in its own transaction.
        actor = Actor(api.account_id, "tester", "poison")
        with pytest.raises(DataError):
            svc.container.app.create_list(actor, "bad\x00name", None)
        with psycopg.connect(fresh_database) as conn:
            topics = [r[0] for r in conn.execute("SELECT topic FROM contacts_events ORDER BY notification_id")]
            head, position = conn.execute("SELECT (SELECT max(notification_id) FROM contacts_events),"
                                          " position FROM projection_tracking").fetchone()
        assert topics == ["command.domain:ContactList.Created"]  # only "before": the bad one left no event
        assert position == head
        api.create_list("after")
        assert sorted(x["name"] for x in api.get("/api/v1/contact-lists").json()) == ["after", "before"]
    finally:
        svc.close()


def test_a_contact_change_whose_projection_fails_stores_nothing(service: Service) -> None:
    """A PATCH or a list-add is one server-side statement (append, then the projection): a
    projection that fails there must take the append with it, as a transaction would."""
    api = service.client()
    contact = api.create_contact("+254 712 300 700", firstName="Before", tags=["vip"])
    listed = api.create_list("L")
    actor = Actor(api.account_id, "tester", "poison")
    # A status of null (a bug past the API's checks) breaks the row's NOT NULL inside the
    # projection, after the append in the same statement; each retry of the use case fails alike.
    with pytest.raises(ConcurrencyError):
        asyncio.run(service.container.app.update_contact(actor, uuid.UUID(contact["id"]), pii={"first_name": "Bad"},
                                                         changes={"tags": ["vip", "b2b"], "status": None}))
    shown = api.get(f"/api/v1/contacts/{contact['id']}")
    assert shown.headers["etag"] == '"1"' and shown.json() == contact
    history = api.get(f"/api/v1/contacts/{contact['id']}/history").json()
    assert len(history) == 1
    assert api.get("/api/v1/contacts", params={"tags": "b2b"}).json()["total"] == 0
    # The contact is unharmed: the next change and a list-add go through.
    assert api.patch(f"/api/v1/contacts/{contact['id']}", json={"firstName": "After"}).json()["firstName"] == "After"
    added = api.post(f"/api/v1/contact-lists/{listed['id']}/contacts", json={"contactIds": [contact["id"]]})
    assert added.json() == {"added": 1}
    assert api.get(f"/api/v1/contacts/{contact['id']}").json()["listIds"] == [listed["id"]]


def test_a_stored_event_a_rebuild_cannot_apply_is_quarantined_and_the_others_still_apply(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api, bystander = svc.client(), svc.client()
        api.create_list("before")
        # An event written another way (an old version, a bug) that the projector cannot
        # apply must not stop a rebuild for every account.
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            state = json.loads(bytes(conn.execute("SELECT state FROM contacts_events LIMIT 1").fetchone()[0]))
            state["name"] = "bad\x00name"
            with conn.transaction():
                conn.execute("LOCK TABLE contacts_events IN EXCLUSIVE MODE")  # as an earlier version wrote
                bad = conn.execute("INSERT INTO contacts_events (originator_id, originator_version, topic, state)"
                                   " VALUES (%s, 1, 'command.domain:ContactList.Created', %s) RETURNING notification_id",
                                   (uuid.uuid4(), json.dumps(state).encode())).fetchone()[0]
        api.create_list("after, same batch")
        bystander.create_contact("0712345678", firstName="Still")
        rebuild(svc.container.pool, fresh_database, svc.container.app.recorder.select_notifications,
                svc.container.app.decode)
        assert sorted(x["name"] for x in api.get("/api/v1/contact-lists").json()) == ["after, same batch", "before"]
        assert bystander.get("/api/v1/contacts").json()["contacts"][0]["firstName"] == "Still"
        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute("SELECT notification_id, topic, error FROM projection_quarantine").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(bad, "command.domain:ContactList.Created")]
        assert "NUL" in rows[0][2] or "0x00" in rows[0][2]
        metrics = svc.anonymous().get("/metrics").text
        assert "contacts_projection_quarantined_events 1.0" in metrics
    finally:
        svc.close()

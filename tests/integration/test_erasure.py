"""Purge is erasure: a purged contact's personal data is nowhere in the database or the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from events.contract import changed_fields
from events.erasure import Eraser, pending
from service.embedded import EmbeddedNats
from tests.support import ThreadedWorker, pg_dump, read_stream, start_service
from tests.waits import wait_until

SECRETS = {
    "firstName": "Zebulonius", "lastName": "Quixotabyte", "email": "zq.erasure@example.org",
    "notes": "met at the lighthouse, code PLUM-4471",
}
UPDATED = {"firstName": "Xanthippe", "notes": "second note VIOLET-9923"}
PHONE = "+254745123987"
# Tags are free text users fill with personal facts: ones only the purged contact had must go too.
TAG = "owes-kes3000-qzx"
UPDATED_TAG = "clinic-mbagathi-qzx"
SHARED_TAG = "shared-with-witness"
NEEDLES = [*SECRETS.values(), *UPDATED.values(), "254745123987", "0745123987", "745 123987", TAG, UPDATED_TAG]


def test_purged_contact_leaves_no_personal_data_in_database_or_stream(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url)
    try:
        api = svc.client(sub="auditor-visible-actor")
        lst = api.create_list("campaign")
        victim = api.create_contact(PHONE, tags=[TAG, SHARED_TAG], listIds=[lst["id"]], **SECRETS)
        witness = api.create_contact("+254722555444", firstName="Witnessia", notes="witness-note-KEEP",
                                     tags=[SHARED_TAG])
        api.patch(f"/api/v1/contacts/{victim['id']}", json={**UPDATED, "tags": [UPDATED_TAG, SHARED_TAG]})
        svc.wait_for_relay()
        before = pg_dump(fresh_database)
        stream_before = b"".join(m.data for m in asyncio.run(read_stream(nats_url, svc.settings.nats_stream)))
        # The proof can fail: before the purge the values are there to be found.
        assert "Xanthippe" in before and "zq.erasure@example.org" in before and b"Xanthippe" in stream_before
        assert UPDATED_TAG in before and TAG.encode() in stream_before and UPDATED_TAG.encode() in stream_before
        # The events hold the tags sealed with the personal fields, never in clear.
        with psycopg.connect(fresh_database) as conn:
            states = b"".join(bytes(r[0]) for r in conn.execute(
                "SELECT state FROM contacts_events WHERE originator_id = %s", (uuid.UUID(victim["id"]),)))
        assert b"tags" in states and TAG.encode() not in states and UPDATED_TAG.encode() not in states

        assert api.delete(f"/api/v1/contacts/{victim['id']}").status_code == 204
        assert api.delete_json("/api/v1/contacts/trash", {"ids": [victim["id"]]}).json() == {"purged": 1}
        svc.wait_for_relay()

        dump = pg_dump(fresh_database)
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream))
        stream = b"\n".join(m.data for m in messages).decode()
        for needle in NEEDLES:
            assert needle not in dump, f"{needle!r} still in the database"
            assert needle not in stream, f"{needle!r} still on the stream"
        # Other contacts are unaffected.
        assert "Witnessia" in dump and "witness-note-KEEP" in dump and "Witnessia" in stream
        assert SHARED_TAG in dump and SHARED_TAG in stream  # a tag another contact has stays
        assert api.get(f"/api/v1/contacts/{witness['id']}").json()["firstName"] == "Witnessia"
        # Subscribers were told to erase their copies.
        subjects = [m.subject for m in messages]
        assert any(s.endswith(f"contact.{victim['id']}.purged") for s in subjects)

        # History keeps the shape: every event, its time and actor, personal fields erased.
        events = list(svc.container.app.events.get(uuid.UUID(victim["id"])))
        assert [type(e).__name__ for e in events] == ["Created", "Updated", "Trashed", "Purged"]
        assert all(e.actor == "auditor-visible-actor" for e in events)
        assert events[0].pii["erased"] is True and events[1].pii["erased"] is True
        assert events[0].tags == [] and "tags" not in events[1].changes  # the values are gone...
        # ...but auditors still see which fields the update changed.
        assert changed_fields(events[1]) == ["firstName", "notes", "tags"]
        history = api.get(f"/api/v1/contacts/{victim['id']}/history")
        assert history.status_code == 200 and TAG not in history.text and UPDATED_TAG not in history.text
        assert "tags" in history.json()[1]["data"]["erasedFields"]
        # Replaying the read model from the events still works after the purge.
        with svc.container.pool.connection() as conn:
            conn.execute("DELETE FROM contacts; DELETE FROM contact_list_memberships; DELETE FROM contact_tags;"
                         " DELETE FROM contact_lists; UPDATE projection_tracking SET position = 0")
        svc.container.replay_runner().catch_up()
        assert [c["id"] for c in api.get("/api/v1/contacts").json()["contacts"]] == [witness["id"]]
        assert api.get("/api/v1/contact-lists").json()[0]["contactCount"] == 0
    finally:
        svc.close()


def files_holding(store: Path, needle: bytes) -> list[str]:
    """The files under a NATS server's store directory whose bytes contain ``needle``."""
    return [str(p) for p in store.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_purged_contact_leaves_no_personal_data_in_the_nats_store_files(fresh_database: str, tmp_path: Path) -> None:
    """A stream purge only hides messages; the relay's deletes overwrite their bytes on disk."""
    server = EmbeddedNats(tmp_path)  # our own server, so the test knows its store directory
    svc = start_service(fresh_database, server.start())
    try:
        api = svc.client()
        victim = api.create_contact("+254745777123", firstName="Ozymandrel", lastName="Vexillographa",
                                    tags=["diagnosis-wrist-qzx"])
        api.patch(f"/api/v1/contacts/{victim['id']}", json={"lastName": "Quillifrond", "tags": ["arrears-qzx"]})
        api.create_contact("+254722888999", firstName="Witnessandra")
        svc.wait_for_relay()
        needles = [b"Ozymandrel", b"Vexillographa", b"Quillifrond", b"254745777123", b"diagnosis-wrist-qzx",
                   b"arrears-qzx"]
        # The server writes its block files a moment after the ack.
        wait_until(lambda: all(files_holding(server.store, n) for n in needles),
                   "the values reached the store files", 10, 0.1)

        assert api.delete(f"/api/v1/contacts/{victim['id']}").status_code == 204
        assert api.delete_json("/api/v1/contacts/trash", {"ids": [victim["id"]]}).json() == {"purged": 1}
        svc.wait_for_relay()

        for needle in needles:
            assert files_holding(server.store, needle) == [], f"{needle!r} still in the NATS store files"
        assert files_holding(server.store, b"Witnessandra")  # other contacts' messages are untouched
    finally:
        svc.close()
        server.stop()


def _relayed(svc: Any) -> None:
    """Until the relay's checkpoint reaches the head (erasures may still be pending)."""
    head, relay = svc.container.head(), svc.worker.worker.relay
    wait_until(lambda: relay.position() >= head,
               lambda: f"the relay reached event {head} (last error: {relay.last_error})", 30)


async def _drain(eraser: Eraser) -> int:
    await eraser.start()
    try:
        return await eraser.erase_pending()
    finally:
        await eraser.close()


def test_a_bulk_purge_holds_back_no_other_account_and_is_erased_by_its_own_job(fresh_database: str,
                                                                               nats_url: str) -> None:
    """The relay queues purges and moves on; the eraser deletes, then publishes each ``purged``."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    worker = ThreadedWorker(svc.container, nats_url)
    worker.worker.eraser = None  # held back, as if erasing were slow: the queue fills
    svc.worker = worker.start()
    try:
        purging, other = svc.client(), svc.client()
        ids = [purging.create_contact(f"07450{i:05d}", firstName=f"Purgeable{i}", tags=[f"gone-{i}"])["id"]
               for i in range(20)]
        assert purging.post("/api/v1/contacts/bulk-delete", json={"ids": ids}).status_code == 200
        assert purging.delete_json("/api/v1/contacts/trash", {"ids": ids}).json() == {"purged": 20}
        newcomer = other.create_contact("0722000111", firstName="Unheld")
        _relayed(svc)
        prefix, stream = svc.settings.nats_subject_prefix, svc.settings.nats_stream
        assert pending(svc.container.pool) == 20
        # The other account's event went out at once, behind 20 purges nobody has erased yet.
        mine = asyncio.run(read_stream(nats_url, stream, f"{prefix}.{other.account_id}.>", expect=1))
        assert [json.loads(m.data)["aggregateid"] for m in mine] == [newcomer["id"]]
        theirs = asyncio.run(read_stream(nats_url, stream, f"{prefix}.{purging.account_id}.>"))
        kinds = Counter(m.subject.rsplit(".", 1)[1] for m in theirs)
        assert kinds == {"created": 20, "trashed": 20}  # not erased yet, and so no "purged" either

        eraser = Eraser(svc.container.pool, nats_url=nats_url, database_url=fresh_database, stream=stream)
        assert asyncio.run(_drain(eraser)) == 20
        assert pending(svc.container.pool) == 0
        theirs = asyncio.run(read_stream(nats_url, stream, f"{prefix}.{purging.account_id}.>"))
        assert Counter(m.subject.rsplit(".", 1)[1] for m in theirs) == {"trashed": 20, "purged": 20}
        assert b"Purgeable" not in b"".join(m.data for m in theirs)
        for contact_id in ids:  # per contact, in order: trashed, then purged (done) once erased
            versions = [json.loads(m.data)["aggregateversion"] for m in theirs if contact_id in m.subject]
            assert versions == sorted(versions) and len(versions) == 2
        # Done twice (a crash between the publish and the row's delete) stores nothing twice.
        asyncio.run(_drain(eraser))
        assert len(asyncio.run(read_stream(nats_url, stream, f"{prefix}.{purging.account_id}.>"))) == 40
    finally:
        svc.close()

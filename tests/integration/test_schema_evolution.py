"""Old event shapes still load after their class changed (upcasting) or was renamed (an old topic)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
from eventsourcing.utils import get_topic

from command.domain import ROWS_IMPORTED_TOPIC, ContactImport
from projections.read_model import READ_TABLES
from projections.rebuild import rebuild
from tests.support import Service, ThreadedWorker, read_stream, start_service


def _snapshot(database_url: str) -> dict[str, list[Any]]:
    with psycopg.connect(database_url) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in READ_TABLES}


def test_a_list_created_before_descriptions_existed_still_loads_and_projects(service: Service) -> None:
    api = service.client()
    current = api.create_list("template", description="d")
    with psycopg.connect(service.container.database_url) as conn:
        state = json.loads(bytes(conn.execute(
            "SELECT state FROM contacts_events WHERE originator_id = %s AND originator_version = 1",
            (uuid.UUID(current["id"]),)).fetchone()[0]))
        assert state["class_version"] == 2
        old_id = uuid.uuid4()
        del state["description"], state["class_version"]  # the v1 shape
        state["name"] = "from version 1"
        with conn.transaction():
            conn.execute("LOCK TABLE contacts_events IN EXCLUSIVE MODE")  # as an earlier version wrote
            conn.execute("INSERT INTO contacts_events (originator_id, originator_version, topic, state)"
                         " VALUES (%s, 1, 'command.domain:ContactList.Created', %s)",
                         (old_id, json.dumps(state).encode()))
    # Written behind the service's back (as by an earlier version): projected as a rebuild would.
    service.container.replay_runner().catch_up()
    loaded = service.container.app.repository.get(old_id)
    assert (loaded.name, loaded.description) == ("from version 1", None)
    listed = {item["name"]: item for item in api.get("/api/v1/contact-lists").json()}
    assert listed["from version 1"]["description"] is None
    # The old list can be changed like any other.
    r = api.patch(f"/api/v1/contact-lists/{old_id}", json={"description": "added later"})
    assert r.status_code == 200 and r.json()["description"] == "added later"


def test_a_contact_stored_before_tags_were_sealed_still_loads_projects_and_changes(service: Service) -> None:
    """Tags used to be stored in clear beside the sealed personal fields; such events still load."""
    from command.crypto import SEALED_FIELDS, seal

    api = service.client()
    template = api.create_contact("+254711000111", tags=["current"])
    old_id = uuid.uuid4()
    key = bytes(32)  # any AES-256 key: stored with the event below, as the unit of work would
    with psycopg.connect(service.container.database_url) as conn:
        conn.execute("INSERT INTO contact_keys (contact_id, key) VALUES (%s, %s)", (old_id, key))
        state = json.loads(bytes(conn.execute(
            "SELECT state FROM contacts_events WHERE originator_id = %s AND originator_version = 1",
            (uuid.UUID(template["id"]),)).fetchone()[0]))
        assert state["tags"] == [] and "tags" in state["pii"][SEALED_FIELDS]  # today: sealed
        old_pii = seal(key, old_id, {"phone": "+254711000222", "first_name": "Legacy"})
        del old_pii[SEALED_FIELDS]  # the old shape: the blob alone, tags in clear beside it
        state.update(pii=old_pii, tags=["legacy-tag"])
        with conn.transaction():
            conn.execute("LOCK TABLE contacts_events IN EXCLUSIVE MODE")  # as an earlier version wrote
            conn.execute("INSERT INTO contacts_events (originator_id, originator_version, topic, state)"
                         " VALUES (%s, 1, 'command.domain:Contact.Created', %s)",
                         (old_id, json.dumps(state).encode()))
    service.container.replay_runner().catch_up()  # written behind the service's back: projected as a rebuild would
    loaded = service.container.app.repository.get(old_id)
    assert (loaded.tags, loaded.pii["first_name"]) == (["legacy-tag"], "Legacy")
    shown = api.get(f"/api/v1/contacts/{old_id}").json()
    assert (shown["tags"], shown["phone"], shown["firstName"]) == (["legacy-tag"], "+254711000222", "Legacy")
    r = api.patch(f"/api/v1/contacts/{old_id}", json={"tags": ["legacy-tag", "added-later"]})
    assert r.status_code == 200 and r.json()["tags"] == ["legacy-tag", "added-later"]
    assert service.container.app.repository.get(old_id).tags == ["legacy-tag", "added-later"]


def test_an_import_batch_stored_as_rows_imported_still_loads_replays_and_publishes(fresh_database: str,
                                                                                    nats_url: str) -> None:
    """The batch event was renamed RowsImported -> Progressed; events stored under the old topic still work."""
    svc = start_service(fresh_database, nats_url, with_worker=False)  # no relay yet: it publishes after the rename
    try:
        api = svc.client()
        r = api.post("/api/v1/contacts/bulk", json={"contacts": [
            {"phone": "+254711000301", "firstName": "Old", "tags": ["legacy"]}, {"phone": "+254711000302"},
            {"phone": "12"}]})
        assert r.status_code == 201, r.text
        import_id = uuid.UUID(r.json()["importId"])
        with psycopg.connect(fresh_database) as conn:
            renamed = conn.execute("UPDATE contacts_events SET topic = %s WHERE topic = %s",
                                   (ROWS_IMPORTED_TOPIC, get_topic(ContactImport.Progressed))).rowcount
        assert renamed == 1  # the one batch, now as an earlier version stored it
        tables = _snapshot(fresh_database)

        # It loads: the job, and the contacts whose creation is their entry in the batch.
        job = svc.container.app.repository.get(import_id)
        assert (job.status, job.last_row, job.counts) == \
            ("completed", 3, {"read": 3, "imported": 2, "valid": 2, "invalid": 0, "skipped": 1})
        old = next(c for c in api.get("/api/v1/contacts").json()["contacts"] if c["firstName"] == "Old")
        created = api.get(f"/api/v1/contacts/{old['id']}/history").json()[0]
        assert (created["type"], created["data"]["firstName"], created["data"]["tags"]) == \
            ("contacts.contact.created.v1", "Old", ["legacy"])

        # It replays: rebuilding every read table from the events gives the same tables.
        rebuild(svc.container.pool, fresh_database, svc.container.app.recorder.select_notifications,
                svc.container.app.decode)
        assert _snapshot(fresh_database) == tables

        # A contact it created can be changed (loading it reads the batch event).
        r = api.patch(f"/api/v1/contacts/{old['id']}", json={"notes": "changed later"})
        assert r.status_code == 200 and (r.json()["phone"], r.json()["notes"]) == ("+254711000301", "changed later")

        # It is published as before: a contact.created per contact, then import.progress.
        svc.worker = ThreadedWorker(svc.container, nats_url).start()
        svc.wait_for_relay()
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=6))
        assert [json.loads(m.data)["type"] for m in messages] == [
            "contacts.contact_import.started.v1", "contacts.contact.created.v1", "contacts.contact.created.v1",
            "contacts.contact_import.progress.v1", "contacts.contact_import.completed.v1",
            "contacts.contact.updated.v1"]
    finally:
        svc.close()


def test_import_origins_kept_in_their_own_table_move_beside_the_keys(fresh_database: str, nats_url: str) -> None:
    """A database made when ``contact_origins`` was a table of its own: its rows move into ``contact_keys``
    at start, a purged contact's too, and imported contacts still load, change and show their history."""
    account = uuid.uuid4()
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client(account)
        r = api.post("/api/v1/contacts/bulk", json={"contacts": [
            {"phone": "+254711000401", "firstName": "Kept"}, {"phone": "+254711000402", "firstName": "Purged"}]})
        assert r.status_code == 201, r.text
        by_name = {c["firstName"]: c["id"] for c in api.get("/api/v1/contacts").json()["contacts"]}
        api.delete(f"/api/v1/contacts/{by_name['Purged']}")
        assert api.delete_json("/api/v1/contacts/trash", {"ids": [by_name["Purged"]]}).json() == {"purged": 1}
    finally:
        svc.close()
    with psycopg.connect(fresh_database) as conn:  # back to the earlier shape, as that version left it
        conn.execute("CREATE TABLE contact_origins (contact_id uuid PRIMARY KEY, import_id uuid NOT NULL,"
                     " import_version integer NOT NULL)")
        moved = conn.execute("INSERT INTO contact_origins SELECT contact_id, import_id, import_version"
                             " FROM contact_keys WHERE import_id IS NOT NULL").rowcount
        assert moved == 2
        conn.execute("DELETE FROM contact_keys WHERE key IS NULL")  # a purge deleted the key row
        conn.execute("ALTER TABLE contact_keys DROP COLUMN import_id, DROP COLUMN import_version,"
                     " ALTER COLUMN key SET NOT NULL")
        conn.execute("UPDATE schema_version SET fingerprint = 'earlier' WHERE name = 'contacts'")
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client(account)
        with psycopg.connect(fresh_database) as conn:
            assert conn.execute("SELECT to_regclass('contact_origins')").fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM contact_keys WHERE import_id IS NOT NULL").fetchone()[0] == 2
        history = api.get(f"/api/v1/contacts/{by_name['Purged']}/history").json()
        assert [e["type"].split(".")[2] for e in history] == ["created", "trashed", "purged"]
        r = api.patch(f"/api/v1/contacts/{by_name['Kept']}", json={"notes": "changed later"})
        assert r.status_code == 200 and (r.json()["firstName"], r.json()["notes"]) == ("Kept", "changed later")
        created = api.get(f"/api/v1/contacts/{by_name['Kept']}/history").json()[0]
        assert (created["type"], created["data"]["firstName"]) == ("contacts.contact.created.v1", "Kept")
    finally:
        svc.close()

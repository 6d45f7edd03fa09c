"""Old event shapes still load after their class changed (upcasting)."""

from __future__ import annotations

import json
import uuid

import psycopg

from tests.support import Service


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
            conn.execute("LOCK TABLE contacts_events IN EXCLUSIVE MODE")  # as the recorder does
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
            conn.execute("LOCK TABLE contacts_events IN EXCLUSIVE MODE")  # as the recorder does
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

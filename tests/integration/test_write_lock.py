"""Writers take turns with an advisory lock (command/locks.py EVENTS_APPEND), not the events table's."""

from __future__ import annotations

import psycopg

from tests.support import Service


def test_writes_go_on_while_the_events_table_is_vacuumed(service: Service) -> None:
    """VACUUM and ANALYZE hold SHARE UPDATE EXCLUSIVE on the table they work on: the table's EXCLUSIVE
    lock, which writers took before, waited for it (autovacuum of the events table stalled every write)."""
    api = service.client()
    listed = api.create_list("During vacuum")
    with psycopg.connect(service.container.database_url) as vacuum:
        vacuum.execute("SET lock_timeout = '30s'")
        vacuum.execute("LOCK TABLE contacts_events IN SHARE UPDATE EXCLUSIVE MODE")  # as VACUUM holds it
        created = api.create_contact("0713555001", firstName="Vacuumed")
        edited = api.patch(f"/api/v1/contacts/{created['id']}", json={"lastName": "Through"})
        added = api.post(f"/api/v1/contact-lists/{listed['id']}/contacts", json={"contactIds": [created["id"]]})
        assert (edited.status_code, added.json()) == (200, {"added": 1})
        vacuum.rollback()
    body = api.get(f"/api/v1/contacts/{created['id']}").json()
    assert (body["lastName"], body["listIds"]) == ("Through", [listed["id"]])

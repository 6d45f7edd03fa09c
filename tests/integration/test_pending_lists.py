"""The read tables' GIN pending lists are merged by the worker, off the write path (service/pending_lists.py)."""

from __future__ import annotations

import logging

import psycopg
import pytest

from tests.support import ThreadedWorker, start_service
from tests.waits import wait_until

GIN_INDEXES = ("contacts_tags", "contacts_search_name", "contacts_search_phone", "contact_list_memberships_tags")


def test_the_worker_merges_what_writes_leave_in_gin_pending_lists(fresh_database: str, nats_url: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            for table in ("contacts", "contact_list_memberships"):  # no autovacuum or autoanalyze merges them here
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
            limits = dict(conn.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
                                       (list(GIN_INDEXES),)).fetchall())
        assert limits == {name: ["gin_pending_list_limit=16384"] for name in GIN_INDEXES}
        client = svc.client()
        listed = client.create_list("Customers")
        for n in range(30):
            contact = client.create_contact(f"+2547{n:08d}", firstName=f"Wanjiru{n}", lastName="Otieno",
                                            tags=["vip", f"batch{n % 3}"])
            assert client.post(f"/api/v1/contact-lists/{listed['id']}/contacts",
                               json={"contactIds": [contact["id"]]}).status_code == 200

        caplog.set_level(logging.DEBUG, logger="service.pending_lists")
        worker = ThreadedWorker(svc.container, nats_url).start()
        try:
            # The writes left their entries pending (no write merged them): the worker merges them.
            wait_until(lambda: any(r.getMessage().startswith("worker: merged") for r in caplog.records),
                       "the worker merged the pending lists the writes left", 30)
        finally:
            worker.stop()
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            left = {name: conn.execute("SELECT gin_clean_pending_list(%s::regclass)", (name,)).fetchone()[0]
                    for name in GIN_INDEXES}
        assert left == dict.fromkeys(GIN_INDEXES, 0)  # nothing left pending in any of them

        # Merged into the indexes, the entries still find their contacts.
        found = client.get("/api/v1/contacts", params={"search": "wanjiru1", "pageSize": 100}).json()["contacts"]
        assert sorted(c["firstName"] for c in found) == sorted(["Wanjiru1"] + [f"Wanjiru{n}" for n in range(10, 20)])
        by_number = client.get("/api/v1/contacts", params={"search": "0700000029"}).json()["contacts"]
        assert [c["firstName"] for c in by_number] == ["Wanjiru29"]
        tagged = client.get("/api/v1/contacts", params={"listId": listed["id"], "tags": "batch1,vip", "pageSize": 100})
        assert len(tagged.json()["contacts"]) == 10
    finally:
        svc.close()

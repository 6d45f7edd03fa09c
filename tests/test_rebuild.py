"""Rebuilding the read tables from the events gives identical tables, without stopping the API."""

from __future__ import annotations

from typing import Any

import psycopg

from projections.read_model import READ_TABLES
from projections.rebuild import rebuild
from tests.support import start_service


def _snapshot(database_url: str) -> dict[str, list[Any]]:
    with psycopg.connect(database_url) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in READ_TABLES}


def test_rebuild_gives_identical_tables_and_the_api_keeps_working(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        a, b = api.create_list("a"), api.create_list("b")
        gone = api.create_list("gone")
        contacts = [api.create_contact(f"07120{i:05d}", firstName=f"N{i}", tags=["t", f"x{i % 3}"],
                                       listIds=[a["id"], gone["id"]] if i % 2 else [b["id"]]) for i in range(12)]
        api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone,tags\n0713000001,imp\n0713000002,\n12,\n")})
        api.patch(f"/api/v1/contacts/{contacts[0]['id']}", json={"lastName": "Changed", "tags": ["new"]})
        api.delete(f"/api/v1/contacts/{contacts[1]['id']}")
        api.delete(f"/api/v1/contacts/{contacts[2]['id']}")
        api.delete_json("/api/v1/contacts/trash", {"ids": [contacts[2]["id"]]})
        api.delete(f"/api/v1/contact-lists/{gone['id']}")
        before = _snapshot(fresh_database)
        assert before["contacts"] and before["contact_tags"] and before["import_report_rows"]

        done = rebuild(svc.container.pool, fresh_database, svc.container.app.recorder.select_notifications,
                       svc.container.app.decode)
        assert done["position"] == svc.container.head()
        assert _snapshot(fresh_database) == before
        # The API reads the new tables and projects new writes into them.
        assert api.get("/api/v1/contacts").json()["total"] == 12  # 10 of 12 left, plus 2 imported
        assert api.create_list("after")["name"] == "after"
        assert len(api.get("/api/v1/contact-lists").json()) == 3
    finally:
        svc.close()

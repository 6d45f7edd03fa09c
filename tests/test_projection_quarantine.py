"""One event the projector cannot apply does not stop the read tables of every account."""

from __future__ import annotations

import uuid

import psycopg

from command.context import Actor
from tests.support import Service, start_service


def test_an_event_the_projector_cannot_apply_is_quarantined_and_the_others_still_apply(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api, bystander = svc.client(), svc.client()
        api.create_list("before")
        # PostgreSQL text cannot hold NUL: the API refuses it, but an event written another
        # way (an old version, a bug) must not stop the projection for everyone.
        actor = Actor(api.account_id, "tester", "poison")
        bad_id, position = svc.container.app.create_list(actor, "bad\x00name", None)
        good_id, _ = svc.container.app.create_list(actor, "after, same batch", None)
        assert svc.container.runner.catch_up() >= position
        names = sorted(x["name"] for x in api.get("/api/v1/contact-lists").json())
        assert names == ["after, same batch", "before"]
        # Later writes of any account are projected as usual.
        bystander.create_contact("0712345678", firstName="Still")
        assert bystander.get("/api/v1/contacts").json()["contacts"][0]["firstName"] == "Still"
        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute("SELECT notification_id, topic, error FROM projection_quarantine").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(position, "command.domain:ContactList.Created")]
        assert "NUL" in rows[0][2] or "0x00" in rows[0][2]
        metrics = svc.anonymous().get("/metrics").text
        assert "contacts_projection_quarantined_events 1.0" in metrics
    finally:
        svc.close()

"""Health, readiness, metrics, and the worker keeping the read tables current."""

from __future__ import annotations

import time

from command.context import Actor
from service.embedded import free_port
from tests.support import Service, start_service


def test_ready_when_database_and_nats_answer(service: Service) -> None:
    r = service.anonymous().get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "nats": "ok"}}


def test_ready_is_503_quickly_when_nats_is_away(fresh_database: str) -> None:
    svc = start_service(fresh_database, f"nats://127.0.0.1:{free_port()}", with_worker=False)
    try:
        started = time.monotonic()
        r = svc.anonymous().get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "ok"
        assert r.json()["checks"]["nats"].startswith("unavailable")
        assert time.monotonic() - started < 10
        # Writes do not need NATS.
        assert svc.client().post("/api/v1/contact-lists", json={"name": "still works"}).status_code == 201
    finally:
        svc.close()


def test_metrics_expose_latency_and_lags(service: Service) -> None:
    service.client().create_list("metrics")
    response = service.anonymous().get("/metrics")
    text = response.text
    # Prometheus parses the header: one charset parameter, not two.
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    assert "contacts_http_request_seconds_bucket" in text
    assert "contacts_projection_lag_events 0.0" in text
    assert "contacts_relay_lag_events" in text
    assert "contacts_event_store_head" in text


def test_the_worker_projects_events_no_request_waited_for(service: Service) -> None:
    """A writer that stored its events and died before applying them: the worker applies them."""
    api = service.client()
    actor = Actor(account_id=api.account_id, sub="tester", request_id="stored-only")
    for i in range(3):
        service.container.app.create_list(actor, f"stored only {i}", None)  # no catch-up after it
    deadline = time.monotonic() + 10
    while len(api.get("/api/v1/contact-lists").json()) < 3:
        assert time.monotonic() < deadline, "the worker did not project events stored without a catch-up"
        time.sleep(0.05)

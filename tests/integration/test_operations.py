"""Health, readiness, metrics, and the worker keeping the read tables current."""

from __future__ import annotations

import time

from command.context import Actor
from service.embedded import free_port
from tests.support import Service, start_service
from tests.waits import wait_until, wait_until_async


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
        assert r.json()["checks"]["nats"] == "unavailable: connection refused"  # it said TimeoutError
        assert time.monotonic() - started < 1.5  # a closed port answers at once (it took 2 s a probe)
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
    wait_until(lambda: len(api.get("/api/v1/contact-lists").json()) >= 3,
               "the worker projected the events stored without a catch-up", 10)


def test_the_import_queue_survives_a_database_outage(service: Service, monkeypatch) -> None:
    """A claim that fails (the database away) is retried; it used to end the worker's import loop for good."""
    import asyncio

    import psycopg_pool

    from service import job_leases
    from service.worker import Worker

    calls = []

    def claim_next(container):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise psycopg_pool.PoolTimeout("couldn't get a connection after 2.00 sec")
        return None

    monkeypatch.setattr(job_leases, "claim_next", claim_next)

    async def run() -> None:
        worker = Worker(service.container, "")
        loop = asyncio.create_task(worker._imports())
        async def tried_twice() -> bool:
            worker.imports_wakeup.set()  # each wake-up is one claim
            return len(calls) >= 2 or loop.done()

        await wait_until_async(tried_twice, "the import loop asked for a job twice", 10)
        worker.stop.set()
        worker.imports_wakeup.set()
        await asyncio.wait_for(loop, 10)  # raises if the loop died of the outage

    asyncio.run(run())
    assert len(calls) >= 2


def test_serve_starts_its_worker_again_when_it_dies() -> None:
    """A worker killed (or out of memory) used to stay dead while serve ran on, and nothing said so."""
    import sys
    import time

    from service.cli import Supervised

    child = Supervised([sys.executable, "-c", "import time; time.sleep(60)"], {}, "test child")
    try:
        first = child.proc
        first.kill()
        wait_until(lambda: child.proc is not first and child.proc.poll() is None, "a new child runs", 10)
        assert child.proc is not first and child.proc.poll() is None and child.restarts == 1
    finally:
        child.stop(5)
    assert child.proc.poll() is not None  # stopped with serve, not restarted
    time.sleep(1.5)  # no wait on a condition: the behaviour is that nothing happens in this time
    assert child.restarts == 1


def test_metrics_still_answer_while_the_database_is_gone(postgres_server: str, nats_url: str) -> None:
    """An outage is when request metrics matter most: the scrape says the database is down, lags NaN."""
    from tests.support import drop_database, new_database

    database = new_database(postgres_server)
    svc = start_service(database, nats_url, with_worker=False)
    try:
        svc.client().create_list("before")
        assert "contacts_database_up 1.0" in svc.anonymous().get("/metrics").text
        drop_database(postgres_server, database)
        r = svc.anonymous().get("/metrics")
        assert r.status_code == 200, r.text[:300]
        assert "contacts_database_up 0.0" in r.text and "contacts_projection_lag_events NaN" in r.text
        assert 'contacts_http_request_seconds_count{method="POST"' in r.text
    finally:
        svc.close()

"""Faults with real processes: a killed worker or api process mid-import, PostgreSQL restarted under load,
NATS away for a minute under load, and two api processes beside one worker.

Each test ends by comparing the read tables and the NATS stream with the event store:
nothing acknowledged is lost and nothing is published twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from service.auth import mint_token
from service.dbpool import RETRY_EVERY_S
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port, stop_process
from tests.support import (
    SECRET, Service, new_database, read_stream, start_service, wait_healthy, wait_relayed,
)
from tests.waits import wait_until

NATS_OUTAGE_S = float(os.environ.get("CONTACTS_TEST_NATS_OUTAGE_S", "60"))


def _cli(command: str, database_url: str, nats_url: str, svc: Service, **env: str) -> subprocess.Popen:
    """``contacts <command>`` as a real process sharing the test service's stream and secret."""
    full = {**os.environ, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_NATS_URL": nats_url,
            "CONTACTS_JWT_SECRET": SECRET, "CONTACTS_NATS_STREAM": svc.settings.nats_stream,
            "CONTACTS_NATS_SUBJECT_PREFIX": svc.settings.nats_subject_prefix,
            "CONTACTS_INBOUND_SUBJECT": svc.settings.inbound_subject, **env}
    return subprocess.Popen([sys.executable, "-m", "service.cli", command], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchone()[0]


def _contact_ids(database_url: str, account_id: uuid.UUID) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM contacts WHERE account_id = %s", (account_id,))}


def _import_file(rows: int) -> tuple[bytes, int]:
    """A CSV of ``rows`` data rows (a duplicate every 50th, an unparseable every 97th) and its unique count."""
    lines, seen = ["phone,first_name"], set()
    for i in range(rows):
        phone = "not-a-phone" if i % 97 == 0 else f"0710{(i - 1 if i % 50 == 49 else i):06d}"
        lines.append(f"{phone},N{i}")
        if phone != "not-a-phone":
            seen.add(phone)
    return ("\n".join(lines) + "\n").encode(), len(seen)


def _import_until(api: Any, content: bytes, rows: int, interval: float) -> tuple[str, dict]:
    """An async import of ``content`` started; its job's URL, and the job once it has read ``rows`` rows
    (still running: the fault that follows strikes mid-import)."""
    r = api.post("/api/v1/contacts/import", files={"file": ("big.csv", content)}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    job_url = r.headers["location"]

    def read_enough() -> dict | None:
        job = api.get(job_url).json()
        assert job["status"] in ("queued", "running"), job
        return job if job["counts"]["rows"] >= rows else None

    return job_url, wait_until(read_enough, f"the import read {rows:,} rows", 300, interval)


def _created_once(svc: Service, nats_url: str, account_id: uuid.UUID, contact_ids: set[str]) -> list[Any]:
    """The account's contact.created messages, once the stream holds one per stored contact, no more, no fewer."""
    prefix, stream = svc.settings.nats_subject_prefix, svc.settings.nats_stream
    created = asyncio.run(read_stream(nats_url, stream, f"{prefix}.{account_id}.contact.*.created",
                                      expect=len(contact_ids), timeout=60))
    published = Counter(json.loads(m.data)["aggregateid"] for m in created)
    assert set(published) == contact_ids and set(published.values()) == {1}
    return created


def test_worker_killed_during_a_100k_async_import_resumes_and_loses_nothing(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    worker = _cli("worker", fresh_database, nats_url, svc)
    try:
        api = svc.client()
        content, unique = _import_file(100_000)
        job_url, job = _import_until(api, content, 30_000, 0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        at_kill = job["counts"]["rows"]
        worker = _cli("worker", fresh_database, nats_url, svc)
        job = api.wait_for_job(job_url, 300)
        assert job["status"] == "completed", job
        assert job["counts"] == {"rows": 100_000, "imported": unique, "valid": unique, "invalid": 0,
                                 "skipped": 100_000 - unique}, (at_kill, job)
        contact_ids = _contact_ids(fresh_database, api.account_id)
        assert len(contact_ids) == unique == api.get("/api/v1/contacts").json()["total"]
        wait_relayed(fresh_database, timeout=180)
        created = _created_once(svc, nats_url, api.account_id, contact_ids)
        assert len({m.headers["Nats-Msg-Id"] for m in created}) == unique
        prefix, stream = svc.settings.nats_subject_prefix, svc.settings.nats_stream
        import_id = job_url.rsplit("/", 1)[1]
        ends = asyncio.run(read_stream(nats_url, stream, f"{prefix}.{api.account_id}.import.{import_id}.completed"))
        assert len(ends) == 1
        print(f"killed the worker at row {at_kill:,}; the resumed import stored {unique:,} contacts once each")
    finally:
        stop_process(worker)
        svc.close()


def test_an_import_whose_api_process_was_killed_finishes_when_retried_with_its_idempotency_key(
        fresh_database: str, nats_url: str) -> None:
    """A synchronous import's process dies mid-import (a deploy, the OOM killer): the job is left
    running with the batches it stored. The client's retry with the same Idempotency-Key and file,
    to another process, resumes it after its last stored row and answers 201 with the whole
    import's counts, instead of 409 import_in_progress for a job nobody runs any more."""
    svc = start_service(fresh_database, nats_url, with_worker=False)  # the schema and settings
    port = free_port()
    api_proc = _cli("api", fresh_database, nats_url, svc, CONTACTS_PORT=str(port))
    worker = _cli("worker", fresh_database, nats_url, svc)  # the relay
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process=api_proc)
        account = uuid.uuid4()
        client = _client(base, account)
        content, unique = _import_file(60_000)
        request = {"files": {"file": ("big.csv", content)}, "headers": {"Idempotency-Key": "wizard-1"}}
        first = threading.Thread(target=lambda: _answer(client, request), daemon=True)
        first.start()
        wait_until(lambda: _scalar(fresh_database, "SELECT coalesce(max(rows_read), 0) >= 10000 FROM imports"
                                   " WHERE account_id = %s", account), "the import stored 10,000 rows", 120, 0.02)
        api_proc.send_signal(signal.SIGKILL)
        api_proc.wait()
        stored_at_kill = _scalar(fresh_database, "SELECT rows_read FROM imports WHERE account_id = %s", account)
        assert stored_at_kill < 60_000
        api_proc = _cli("api", fresh_database, nats_url, svc, CONTACTS_PORT=str(port))
        wait_healthy(base, process=api_proc)
        client = _client(base, account)
        import_id = _scalar(fresh_database, "SELECT id FROM imports WHERE account_id = %s", account)
        job = client.get(f"/api/v1/contacts/imports/{import_id}").json()
        assert job["status"] == "running" and job["counts"]["rows"] < 60_000, job  # nobody runs it
        retried = client.post("/api/v1/contacts/import", timeout=300, **request)
        assert retried.status_code == 201, retried.text
        body = retried.json()
        assert body["importId"] == str(import_id) and body["status"] == "completed", body
        assert (body["rows"], body["imported"], body["skipped"]) == (60_000, unique, 60_000 - unique), body
        contact_ids = _contact_ids(fresh_database, account)
        assert len(contact_ids) == unique == client.get("/api/v1/contacts").json()["total"]
        # Retried again: the finished import's result, as for any finished import.
        again = client.post("/api/v1/contacts/import", **request)
        assert again.status_code == 200 and again.json()["imported"] == unique, again.text
        wait_relayed(fresh_database, timeout=180)
        _created_once(svc, nats_url, account, contact_ids)
        print(f"killed the api process at row {stored_at_kill:,}; the retry stored {unique:,} contacts once each")
    finally:
        stop_process(api_proc)
        stop_process(worker)
        svc.close()


def _answer(client: httpx.Client, request: dict) -> None:
    """Send ``request`` to the import endpoint; the process answering it may be killed meanwhile."""
    try:
        client.post("/api/v1/contacts/import", timeout=300, **request)
    except httpx.HTTPError:
        pass


class Writer:
    """Four clients creating contacts as fast as they can, every answer recorded."""

    def __init__(self, api: Any, prefix: str, clients: int = 4):
        self.api, self.prefix = api, prefix
        self.answers: list[tuple[str, int, dict]] = []  # list.append is atomic: shared by the clients
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(clients)]

    def _client(self, k: int) -> None:
        n = 0
        while not self.halt.is_set():
            phone = f"{self.prefix}{k}{n:05d}"
            n += 1
            try:
                r = self.api.post("/api/v1/contacts", json={"phone": phone})
                self.answers.append((phone, r.status_code, {**r.json(), "retryAfter": r.headers.get("retry-after")}))
            except httpx.HTTPError as exc:  # the API process itself never goes away in these tests
                self.answers.append((phone, 0, {"error": repr(exc)}))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def acknowledged(self) -> dict[str, str]:
        return {phone: body["id"] for phone, status, body in self.answers if status == 201}

    def wait_for_acknowledged(self, count: int, timeout: float = 120) -> None:
        wait_until(lambda: len(self.acknowledged()) >= count, f"{count} writes were acknowledged", timeout)

    def wait_for_a_201_after(self, answer: int, timeout: float = 60) -> None:
        """Until some answer after the ``answer``-th one is a 201 (the service has recovered)."""
        wait_until(lambda: any(a[1] == 201 for a in self.answers[answer:]),
                   lambda: f"a write after answer {answer} got 201 (last answers: {self.answers[-3:]})", timeout, 0.1)

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)


@contextmanager
def _writing_to_own_postgres(tmp_path: Path, nats_url: str, prefix: str,
                             acknowledged: int) -> Iterator[tuple[EmbeddedPostgres, str, Service, Writer]]:
    """A service on a PostgreSQL of the test's own, four clients writing to it (``acknowledged`` 201s in)."""
    pg = EmbeddedPostgres(tmp_path)
    database_url = new_database(pg.start())
    svc = start_service(database_url, nats_url, rate_limit_writes_per_minute=0)
    writer = Writer(svc.client(), prefix)
    writer.start()
    try:
        writer.wait_for_acknowledged(acknowledged)
        yield pg, database_url, svc, writer
    finally:
        writer.stop()
        svc.close()
        pg.stop("immediate")


def test_postgres_restart_under_load_answers_503_recovers_and_loses_no_acknowledged_write(
        tmp_path: Path, nats_url: str) -> None:
    with _writing_to_own_postgres(tmp_path, nats_url, "0711", acknowledged=50) as (pg, database_url, svc, writer):
        api = writer.api
        some = next(iter(writer.acknowledged().values()))
        listed = api.create_list("during the outage")
        pg.stop("fast")
        outage_started = len(writer.answers)
        # 20 s: requests wait up to CONTACTS_DB_TIMEOUT_S (2 s) for a connection, then 503; and long
        # enough for psycopg_pool's doubling back-off (1, 2, 4, 8, 16 s) to have held writes back.
        time.sleep(20)
        during = writer.answers[outage_started + 4:]  # the first of each client may have been in flight
        ready = svc.anonymous().get("/ready")
        read = api.get("/api/v1/contacts")
        # A PATCH and a list-add (their loads and writes go in groups on the event loop) answer the same.
        patched = api.patch(f"/api/v1/contacts/{some}", json={"firstName": "Outage"})
        added = api.post(f"/api/v1/contact-lists/{listed['id']}/contacts", json={"contactIds": [some]})
        pg.start()
        back = time.monotonic()
        read_ok, ready_ok = _first_success(lambda: api.get("/api/v1/contacts?pageSize=1"),
                                           lambda: svc.anonymous().get("/ready"), back)
        # /ready checks the event store's pool as well as the read pool: once it says
        # ready, a write goes through (it used to say ready while writes answered 503
        # for another 15 s), and writes come back about as fast as reads.
        after_ready = api.post("/api/v1/contacts", json={"phone": "0719999999"})
        assert after_ready.status_code == 201, (round(ready_ok - back, 1), after_ready.text)
        writer.wait_for_a_201_after(len(writer.answers))
        write_ok = time.monotonic()
        # Each pool retries every RETRY_EVERY_S, so the event store's comes back up to about a
        # retry after the read pool (1.3 s under two busy loops, which a bound of 1.5 s nearly
        # failed); psycopg_pool's doubling back-off, which this guards against, held writes
        # back up to 15 s longer than reads (service/dbpool.py).
        assert write_ok - read_ok < 4 * RETRY_EVERY_S, (round(read_ok - back, 1), round(write_ok - back, 1))
        time.sleep(1)
        writer.stop()
        statuses = Counter(status for _, status, _ in writer.answers)
        assert set(statuses) <= {201, 503}, statuses
        assert during and {status for _, status, _ in during} == {503}
        assert all(body["error"] == "database_unavailable" and body["retryAfter"] for _, _, body in during)
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
        assert read.status_code == 503
        for answer in (patched, added):
            assert answer.status_code == 503 and answer.json()["error"] == "database_unavailable", answer.text
        assert api.get(f"/api/v1/contacts/{some}").json()["firstName"] != "Outage"
        # Every acknowledged write is in the read tables and was published.
        acknowledged = writer.acknowledged()
        stored = _contact_ids(database_url, api.account_id)
        assert set(acknowledged.values()) <= stored
        assert api.get("/api/v1/contacts").json()["total"] == len(stored)
        svc.wait_for_relay(timeout=60)
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream,
                                           f"{svc.settings.nats_subject_prefix}.{api.account_id}.contact.*.created",
                                           expect=len(stored)))
        assert sorted(json.loads(m.data)["aggregateid"] for m in messages) == sorted(stored)
        print(f"answers during the restart: {dict(statuses)}; after the start, reads back in"
              f" {read_ok - back:.1f} s, /ready in {ready_ok - back:.1f} s, writes in {write_ok - back:.1f} s")


def _first_success(read: Any, ready: Any, since: float, timeout: float = 60) -> tuple[float, float]:
    """When a read first answered 200 and when /ready first said ready, polling both every 0.1 s."""
    read_ok = ready_ok = None

    def both_ok() -> bool:
        nonlocal read_ok, ready_ok
        if read_ok is None and read().status_code == 200:
            read_ok = time.monotonic()
        if ready_ok is None and ready().status_code == 200:
            ready_ok = time.monotonic()
        return read_ok is not None and ready_ok is not None

    wait_until(both_ok, lambda: f"a read and /ready answered 200 (read at {read_ok}, ready at {ready_ok})",
               max(since + timeout - time.monotonic(), 0), 0.1)
    return read_ok, ready_ok


def test_postgres_crash_under_load_loses_no_acknowledged_write_and_the_read_tables_match_the_events(
        tmp_path: Path, nats_url: str) -> None:
    """An immediate stop (no shutdown checkpoint; WAL not yet written is lost, as in a crash).

    Projection batches commit without waiting for the WAL flush: a crash may lose the last
    ones, with their position, and they are applied again from the events. A single
    write's key commits the same way: it must reach the disk with the events sealed by it.
    """
    with _writing_to_own_postgres(tmp_path, nats_url, "0712", acknowledged=100) as (pg, database_url, svc, writer):
        api = writer.api
        pg.stop("immediate")
        crashed_at = len(writer.answers)
        pg.start()
        writer.wait_for_a_201_after(crashed_at)
        time.sleep(0.5)
        writer.stop()
        assert set(Counter(status for _, status, _ in writer.answers)) <= {201, 503}
        acknowledged = writer.acknowledged()
        with psycopg.connect(database_url) as conn:
            created = {str(r[0]) for r in conn.execute(
                "SELECT originator_id FROM contacts_events WHERE topic LIKE %s", ("%:Contact.Created",))}
            phones = dict(conn.execute("SELECT id::text, phone FROM contacts WHERE account_id = %s",
                                       (api.account_id,)).fetchall())
        assert set(acknowledged.values()) <= created  # every acknowledged write is stored...
        assert set(phones) == created  # ...and the read tables hold exactly the stored contacts
        for phone, contact_id in acknowledged.items():  # with their keys: the phone unseals
            assert phones[contact_id] == "+254" + phone[1:], (contact_id, phones[contact_id])
        assert api.get("/api/v1/contacts").json()["total"] == len(created)


def test_nats_away_for_a_minute_under_load_fails_no_write_and_the_backlog_drains(
        fresh_database: str, tmp_path: Path) -> None:
    nats_server = EmbeddedNats(tmp_path)
    nats_url = nats_server.start()
    svc = start_service(fresh_database, nats_url, rate_limit_writes_per_minute=0)
    writer = None
    try:
        api = svc.client()
        writer = Writer(api, "0712")
        writer.start()
        wait_until(lambda: len(writer.answers) >= 20, "the writers got 20 answers", 60)
        nats_server.stop()
        time.sleep(NATS_OUTAGE_S)
        written_while_down = len(writer.answers) - 20
        nats_server.start()
        time.sleep(1)
        writer.stop()
        assert {status for _, status, _ in writer.answers} == {201}
        assert written_while_down > 0
        svc.wait_for_relay(timeout=180)
        stored = _scalar(fresh_database, "SELECT count(*) FROM contacts_events")
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=stored, timeout=60))
        ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(ids) == len(set(ids)) == stored == len(writer.answers)
        print(f"{written_while_down} writes during {NATS_OUTAGE_S:.0f} s without NATS; all {stored} events published")
    finally:
        if writer is not None:
            writer.stop()
        svc.close()
        nats_server.stop()


def test_two_api_processes_and_one_worker_keep_read_your_writes_and_tenancy(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)  # only to make the schema and settings
    ports = [free_port(), free_port()]
    procs = [_cli("api", fresh_database, nats_url, svc, CONTACTS_PORT=str(ports[0]))]
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        wait_healthy(bases[0])
        procs += [_cli("api", fresh_database, nats_url, svc, CONTACTS_PORT=str(ports[1])),
                  _cli("worker", fresh_database, nats_url, svc)]
        wait_healthy(bases[1])
        owner, intruder = uuid.uuid4(), uuid.uuid4()
        a, b = (_client(base, owner) for base in bases)
        other = _client(bases[1], intruder)
        listed = a.post("/api/v1/contact-lists", json={"name": "across"}).json()
        for i in range(40):
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            created = writer.post("/api/v1/contacts", json={"phone": f"0713{i:06d}", "firstName": f"F{i}",
                                                            "listIds": [listed["id"]]})
            assert created.status_code == 201, created.text
            seen = reader.get(f"/api/v1/contacts/{created.json()['id']}")
            assert seen.status_code == 200 and seen.json()["firstName"] == f"F{i}"
            assert reader.patch(f"/api/v1/contacts/{created.json()['id']}", json={"lastName": "L"}).status_code == 200
            assert writer.get(f"/api/v1/contacts/{created.json()['id']}").json()["lastName"] == "L"
            lists = {x["id"]: x for x in reader.get("/api/v1/contact-lists").json()}
            assert lists[listed["id"]]["contactCount"] == i + 1
            assert other.get(f"/api/v1/contacts/{created.json()['id']}").status_code == 404
        assert other.get("/api/v1/contacts").json()["total"] == 0
        # The same number sent to both processes at once: one contact, one 409 naming it.
        with ThreadPoolExecutor(2) as pool:
            for i in range(30):
                answers = list(pool.map(lambda api: api.post("/api/v1/contacts", json={"phone": f"0714{i:06d}"}),
                                        (a, b)))
                assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
                holder = next(r for r in answers if r.status_code == 201).json()["id"]
                assert next(r for r in answers if r.status_code == 409).json()["contactId"] == holder
        assert b.get("/api/v1/contacts").json()["total"] == 70
        wait_relayed(fresh_database, timeout=60)
        stored = _scalar(fresh_database, "SELECT count(*) FROM contacts_events")
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=stored))
        assert len({m.headers["Nats-Msg-Id"] for m in messages}) == len(messages) == stored
    finally:
        for proc in procs:
            stop_process(proc)
        svc.close()


def _client(base: str, account_id: uuid.UUID) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30,
                        headers={"Authorization": f"Bearer {mint_token(SECRET, account_id, 'fault-test')}"})


def test_an_import_job_is_claimed_by_one_worker_until_its_connection_dies(fresh_database: str,
                                                                          nats_url: str, tmp_path: Path) -> None:
    from command.context import Actor
    from command.imports.service import ImportService
    from service import import_jobs, job_leases

    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        actor = Actor(uuid.uuid4(), "tester", "lease-test")
        job, _ = ImportService(svc.container.app).start(actor, source="csv", filename="l.csv", list_id=None,
                                                        idempotency_key=None)
        path = tmp_path / "l.csv"
        path.write_text("phone\n0712000001\n")
        import_jobs.enqueue(svc.container, actor, job, path, "csv", None, None)
        first = job_leases.claim_next(svc.container)
        assert first is not None and first["import_id"] == job.id
        assert job_leases.claim_next(svc.container) is None  # however long the first one takes
        first["lease"].close()  # what a killed worker's connection does
        # The server releases the lock once its backend has exited.
        again = wait_until(lambda: job_leases.claim_next(svc.container), "the job could be claimed again", 10)
        assert again["import_id"] == job.id
        import_jobs.run_job(svc.container, again)
        assert svc.client(actor.account_id).get(f"/api/v1/contacts/imports/{job.id}").json()["status"] == "completed"
        assert job_leases.claim_next(svc.container) is None
    finally:
        svc.close()


def test_postgres_crash_during_an_async_import_loses_no_row_and_the_job_resumes(
        tmp_path: Path, nats_url: str) -> None:
    """Import batches commit without waiting for the WAL flush (only the import's last save, which is
    what is acknowledged, waits): a crash mid-import may lose the newest batches, and the job, resumed
    by the same worker once PostgreSQL is back, stores every row once."""
    pg = EmbeddedPostgres(tmp_path)
    database_url = new_database(pg.start())
    svc = start_service(database_url, nats_url, with_worker=False, rate_limit_writes_per_minute=0)
    worker = _cli("worker", database_url, nats_url, svc)
    try:
        api = svc.client()
        content, unique = _import_file(60_000)
        job_url, job = _import_until(api, content, 20_000, 0.05)
        at_crash = job["counts"]["rows"]
        pg.stop("immediate")
        pg.start()
        job = wait_until(lambda: _finished(api, job_url), "the import finished after the crash", 300, 0.5)
        assert job["status"] == "completed", job
        assert job["counts"] == {"rows": 60_000, "imported": unique, "valid": unique, "invalid": 0,
                                 "skipped": 60_000 - unique}, job
        contact_ids = _contact_ids(database_url, api.account_id)
        assert len(contact_ids) == unique == api.get("/api/v1/contacts").json()["total"], at_crash
        with psycopg.connect(database_url) as conn:  # every stored contact has its key and its origin
            keyed = {str(r[0]) for r in conn.execute("SELECT contact_id FROM contact_keys WHERE import_id IS NOT NULL")}
        assert keyed == contact_ids
        # The relay published nothing the crash took back (it sends only what is flushed), nothing twice.
        wait_relayed(database_url, timeout=180)
        _created_once(svc, nats_url, api.account_id, contact_ids)
        print(f"PostgreSQL crashed at row {at_crash:,}; the resumed import stored {unique:,} contacts once each")
    finally:
        stop_process(worker)
        svc.close()
        pg.stop("immediate")


def _finished(api: Any, job_url: str) -> dict | None:
    """The job once it has ended; None while it runs or while the API cannot read it (the database is back)."""
    try:
        r = api.get(job_url)
    except httpx.HTTPError:
        return None
    job = r.json() if r.status_code == 200 else None
    return job if job and job["status"] in ("completed", "failed") else None

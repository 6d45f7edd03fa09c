"""A 3-node NATS JetStream cluster loses the node leading the stream, under a write load (e2e).

Real processes: three nats-server (routes on 127.0.0.1), two ``contacts api`` and one
``contacts worker`` (its relay child included), on the session's PostgreSQL. The stream
is created with 3 replicas (``CONTACTS_NATS_REPLICAS=3``). The stream's leader is
killed with SIGKILL and started again, then the new leader together with the worker.
Afterwards: no write failed, the relay's lag is back to zero, and the stream holds
every stored event exactly once, in order per aggregate.
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
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest

from service.auth import mint_token
from service.embedded import EmbeddedNats, _wait_port, free_port, stop_process
from tests.support import SECRET, read_stream, start_service, wait_healthy, wait_relayed
from tests.waits import wait_until

pytestmark = pytest.mark.e2e
DOWN_S = 4.0  # how long a killed node stays down


class NatsCluster:
    """Three nats-server processes with JetStream, routed to each other on the loopback."""

    def __init__(self, root: Path, size: int = 3):
        self.root = root
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen | None] = [None] * size

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{port}" for port in self.ports)

    def start(self, i: int) -> None:
        routes = ",".join(f"nats://127.0.0.1:{r}" for j, r in enumerate(self.routes) if j != i)
        log = open(self.root / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [EmbeddedNats.binary(), "-js", "-sd", str(self.root / f"n{i}"), "-a", "127.0.0.1",
             "-p", str(self.ports[i]), "-n", f"n{i}", "--cluster_name", "contacts",
             "--cluster", f"nats://127.0.0.1:{self.routes[i]}", "--routes", routes],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.ports[i], 30, self.procs[i])

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, 10)


async def _stream_info(url: str, stream: str) -> Any:
    nc = await nats.connect(url.split(","), connect_timeout=2)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


def _leader(cluster: NatsCluster, stream: str, timeout: float = 30) -> int:
    """The index of the node leading the stream, once the stream has a leader and all its replicas."""
    def whole() -> Any:
        try:
            info = asyncio.run(_stream_info(cluster.url, stream))
        except Exception:  # noqa: BLE001 - no stream yet, or an election in progress
            return None
        current = [r for r in (info.cluster.replicas or []) if r.current]
        return info if info.cluster.leader and len(current) == 2 else None

    info = wait_until(whole, "the stream has a leader with two current replicas", timeout, 0.2)
    assert info.config.num_replicas == 3
    return int(info.cluster.leader[1:])  # the node's index (0 is one: the wait returns the info instead)


def _process(command: str, database_url: str, nats_url: str, settings: Any, logs: Path,
             **env: str) -> subprocess.Popen:
    """``contacts <command>`` as a real process; its log (appended) in ``logs``, read when the test fails."""
    full = {**os.environ, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_NATS_URL": nats_url,
            "CONTACTS_JWT_SECRET": SECRET, "CONTACTS_NATS_STREAM": settings.nats_stream,
            "CONTACTS_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix, "CONTACTS_NATS_REPLICAS": "3",
            "CONTACTS_INBOUND_SUBJECT": settings.inbound_subject, "CONTACTS_RATE_LIMIT_WRITES_PER_MINUTE": "0",
            "CONTACTS_LOG_FORMAT": "text", **env}
    log = open(logs / f"{command}-{env.get('CONTACTS_PORT', '')}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "service.cli", command], env=full,
                            stdout=subprocess.DEVNULL, stderr=log)


def _import(base: str, rows: int) -> None:
    """Import ``rows`` new numbers into a new account through ``base``."""
    http = httpx.Client(base_url=base, timeout=120, headers={
        "Authorization": f"Bearer {mint_token(SECRET, uuid.uuid4(), 'cluster-import')}"})
    body = "phone\n" + "".join(f"07200{i:05d}\n" for i in range(rows))
    r = http.post("/api/v1/contacts/import", files={"file": ("contacts.csv", body.encode())})
    assert r.status_code == 201 and r.json()["imported"] == rows, r.text


class Load:
    """Clients on both api processes: each creates a contact, then changes it (two events per aggregate)."""

    def __init__(self, bases: list[str]):
        self.answers: list[int] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(base, k), daemon=True)
                        for k, base in enumerate(bases * 2)]

    def _run(self, base: str, k: int) -> None:
        http = httpx.Client(base_url=base, timeout=30, headers={
            "Authorization": f"Bearer {mint_token(SECRET, uuid.uuid4(), 'cluster-test')}"})
        n = 0
        while not self.halt.is_set():
            r = http.post("/api/v1/contacts", json={"phone": f"071{k}{n:06d}"})
            self.answers.append(r.status_code)
            if r.status_code == 201:
                self.answers.append(http.patch(f"/api/v1/contacts/{r.json()['id']}",
                                               json={"firstName": f"N{n}"}).status_code)
            n += 1

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)


def test_losing_the_stream_leader_and_then_the_worker_too_loses_and_doubles_nothing(
        fresh_database: str, tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path)
    procs: list[subprocess.Popen] = []
    svc = None
    try:
        for i in range(3):
            cluster.start(i)
        svc = start_service(fresh_database, cluster.url, with_worker=False, nats_replicas=3)  # schema, settings
        ports = [free_port(), free_port()]
        procs = [_process("api", fresh_database, cluster.url, svc.settings, tmp_path, CONTACTS_PORT=str(p))
                 for p in ports]
        worker = _process("worker", fresh_database, cluster.url, svc.settings, tmp_path)
        procs.append(worker)  # stopped by the finally even when a wait fails (it was left running)
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for base in bases:
            wait_healthy(base)
        stream = svc.settings.nats_stream
        timings = {}
        with Load(bases) as load:
            leader = _leader(cluster, stream)  # the relay made the stream, with 3 replicas
            # An import too: its messages go out in fast-ingest batches (events/acks.py) while the
            # stream's leader is lost, and must end in the stream each once, in order, all the same.
            _import(bases[0], 5_000)
            cluster.kill(leader)  # the node leading the stream
            time.sleep(DOWN_S)
            cluster.start(leader)
            started = time.monotonic()
            leader = _leader(cluster, stream)
            timings["stream whole again after node restart"] = time.monotonic() - started
            wait_relayed(fresh_database, 90, while_writing=True)  # the load goes on
            timings["relay lag zero after node restart"] = time.monotonic() - started
            # Again, with the worker (and so the relay) killed at the same moment.
            worker.send_signal(signal.SIGKILL)
            cluster.kill(leader)
            worker.wait()
            time.sleep(DOWN_S)
            cluster.start(leader)
            worker = _process("worker", fresh_database, cluster.url, svc.settings, tmp_path)
            procs.append(worker)
            started = time.monotonic()
            _leader(cluster, stream)
            time.sleep(1)
        wait_relayed(fresh_database, 90)
        timings["relay lag zero after node and worker restart"] = time.monotonic() - started
        assert load.answers and set(load.answers) <= {200, 201}, sorted(set(load.answers))
        with psycopg.connect(fresh_database) as conn:
            stored = conn.execute("SELECT originator_id::text, originator_version FROM contacts_events"
                                  " ORDER BY notification_id").fetchall()
            # Created in an import batch: their contact.created (version 1) comes from the batch event.
            imported = [i for (i,) in conn.execute("SELECT contact_id::text FROM contact_keys"
                                                    " WHERE import_id IS NOT NULL")]
        assert len(imported) == 5_000
        messages = asyncio.run(read_stream(cluster.url, stream, expect=len(stored) + len(imported), timeout=60))
        ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(ids) == len(set(ids)) == len(stored) + len(imported)  # every message once: no loss, no duplicate
        versions: dict[str, list[int]] = defaultdict(list)
        for m in messages:
            data = json.loads(m.data)
            versions[data["aggregateid"]].append(data["aggregateversion"])
        expected: dict[str, list[int]] = defaultdict(list)
        for contact_id in imported:
            expected[contact_id].append(1)
        for aggregate, version in stored:
            expected[aggregate].append(version)
        assert versions == expected  # and in order per aggregate
        print(f"{len(load.answers)} writes, all 2xx; {len(stored)} events, each once in the stream;"
              f" {', '.join(f'{k}: {v:.1f} s' for k, v in timings.items())}")
    finally:
        for proc in procs:
            stop_process(proc)
        if svc is not None:
            svc.close()
        cluster.stop()

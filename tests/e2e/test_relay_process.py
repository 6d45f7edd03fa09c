"""``contacts worker`` relays from a lower-priority child process, so an import's fan-out waits for idle CPU."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from service.worker import RELAY_NICENESS, WorkerWithRelayChild
from tests.support import ThreadedWorker, read_stream, start_service
from tests.waits import wait_until


def _relay_children() -> list[int]:
    """Processes started by this test process that run ``contacts relay``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"relay" in cmdline and b"service.cli" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_worker_publishes_through_a_lower_priority_relay_process(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    worker = ThreadedWorker(svc.container, nats_url)
    worker.worker = WorkerWithRelayChild(svc.container, nats_url)
    svc.worker = worker.start()
    try:
        api = svc.client()
        created = api.create_list("via the relay process")
        subject = f"{svc.settings.nats_subject_prefix}.{api.account_id}.list.{created['id']}.created"
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, subject, expect=1, timeout=30))
        assert len(messages) == 1
        children = _relay_children()
        assert len(children) == 1
        assert _niceness(children[0]) == _niceness(os.getpid()) + RELAY_NICENESS
        assert worker.worker.relay is None  # the child relays; this process has no relay of its own
    finally:
        svc.close()
    wait_until(lambda: _relay_children() == [], lambda: f"the relay children exited (left: {_relay_children()})",
               20, 0.1)

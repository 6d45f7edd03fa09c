"""What other clients feel during an import: single creates' latency while a CSV import runs, A/B.

    git worktree add /tmp/base <commit>
    python -m bench.import_creates --rows 100000 --rounds 3 A=/tmp/base B=.

Each checkout runs its own ``contacts serve`` (as ``bench.import_ab``); in turn, A B A B
..., the same generated CSV is imported into a new account while ``--clients`` threads
of another account send ``POST /contacts`` one after another (a new number each), and a
sampler reads ``pg_stat_activity`` every ``--sample-ms`` for the backends waiting on a
lock. Printed per import: its rows/s to the response, the creates answered during it
(count, p50, p99, max) and the lock-wait figures (the share of samples in which a backend
waited on a lock, and the mean number waiting); then each variant's medians. The import's
CPU per row is ``bench.import_ab``'s to measure: here the creates share the processes.
"""

from __future__ import annotations

import json
import threading
import time
from itertools import count
from typing import Any

import psycopg

from bench.import_ab import DATA, _start, alternating, generated_csv, started, variants_parser
from bench.imports import Service
from bench.queries import percentile


class LockSampler(threading.Thread):
    """Counts, every ``interval_s``, the database's backends waiting on a lock and those running a statement."""

    def __init__(self, database_url: str, interval_s: float):
        super().__init__(name="lock-sampler", daemon=True)
        self.database_url, self.interval_s = database_url, interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, waiting on a lock, running)
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stop.is_set():
                waiting, running = conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FILTER (WHERE state = 'active')"
                    " - 1 FROM pg_stat_activity WHERE datname = current_database()").fetchone()
                self.samples.append((time.perf_counter(), waiting, running))
                self.stop.wait(self.interval_s)


def _create_loop(svc: Service, numbers: Any, stop: threading.Event, timings: list[tuple[float, float, int]]) -> None:
    """Single creates, one after another, until ``stop``: (start, seconds, status) of each."""
    with svc.client() as api:
        while not stop.is_set():
            began = time.perf_counter()
            status = api.post("/api/v1/contacts", json={"phone": f"+2547{next(numbers):08d}"}).status_code
            timings.append((began, time.perf_counter() - began, status))


def measured_import(svc: Service, content: bytes, rows: int, clients: int, sample_ms: float) -> dict[str, Any]:
    """One import with ``clients`` create loops and the lock sampler beside it; its figures."""
    sampler = LockSampler(svc.database_url, sample_ms / 1000)
    stop, numbers = threading.Event(), count(10_000_000)
    timings: list[tuple[float, float, int]] = []
    loops = [threading.Thread(target=_create_loop, args=(svc, numbers, stop, timings), daemon=True)
             for _ in range(clients)]
    sampler.start()
    for loop in loops:
        loop.start()
    time.sleep(1.0)  # the create loops' first requests (connections, a new account) before the import
    try:
        with svc.client() as api:
            began = time.perf_counter()
            r = api.post("/api/v1/contacts/import", files={"file": ("contacts.csv", content)})
            ended = time.perf_counter()
        assert r.status_code == 201, r.text[:300]
    finally:
        stop.set()
        sampler.stop.set()
        for loop in loops:
            loop.join(30)
        sampler.join(30)
    during = [seconds * 1000 for at, seconds, status in timings if began <= at and at + seconds <= ended]
    assert all(status == 201 for _, _, status in timings), sorted({s for _, _, s in timings})
    samples = [(waiting, running) for at, waiting, running in sampler.samples if began <= at <= ended]
    return {
        "rows_per_s": round(rows / (ended - began)),
        "creates": len(during), "creates_per_s": round(len(during) / (ended - began), 1),
        "create_p50_ms": round(percentile(during, 50), 1) if during else None,
        "create_p99_ms": round(percentile(during, 99), 1) if during else None,
        "create_max_ms": round(max(during), 1) if during else None,
        "lock_wait_share": round(sum(1 for w, _ in samples if w) / len(samples), 3) if samples else None,
        "mean_waiting": round(sum(w for w, _ in samples) / len(samples), 2) if samples else None,
        "samples": len(samples),
    }


def main(argv: list[str] | None = None) -> None:
    parser = variants_parser("python -m bench.import_creates", __doc__, rounds=3, pause=10,
                             pause_help="seconds after each import (the relay drains)")
    parser.add_argument("--clients", type=int, default=4, help="create loops beside the import")
    parser.add_argument("--sample-ms", type=float, default=5.0, help="pg_stat_activity sampling interval")
    args = parser.parse_args(argv)
    content = generated_csv(DATA, args.rows)
    with started(args.variants, _start) as services:
        results = alternating(services, args.rounds, args.pause,
                              lambda svc: measured_import(svc, content, args.rows, args.clients, args.sample_ms))
        for name, runs in results.items():
            median = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0] if runs[0][k] is not None}
            print(name, "median", json.dumps(median))


if __name__ == "__main__":
    main()

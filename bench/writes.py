"""Single-contact writes under concurrent clients, read-your-writes, projection and relay lag.

    python -m bench writes --users 32 --seconds 60

Starts the real service (``contacts serve``: API process, worker child process,
embedded PostgreSQL and NATS, in ``bench/.data/suite/writes``, fresh each run) and
drives it with locust, headless, in a process of its own (``bench/locustfile.py``):
each client creates a contact, reads it back at once, updates it and adds it to a list,
in a closed loop. One client runs alone first (the baseline: latency without queueing).
During the load a thread reads, every 50 ms, the event store's head (the
last notification id) beside the projection's tracking position and the relay's
published position (the same three figures ``/metrics`` reports as lags). After the
run, every message the relay published is read back from the JetStream stream: its
stored time minus the event's own time (``time`` in the message) is how long the event
took from the API to NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from bisect import bisect_left
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import httpx
import psycopg

from bench.procs import PeakSampler, Sampler
from bench.queries import percentile
from bench.server import ROOT, ServeProcess

DATA = ROOT / "bench" / ".data" / "suite" / "writes"
SECRET = "bench-secret-0123456789-0123456789-abcdef"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WRITE_NAMES = ("POST /contacts", "PATCH /contacts/{id}", "POST /contact-lists/{id}/contacts")
LAG_INTERVAL_S = 0.05
DRAIN_TIMEOUT_S = 180
BASELINE_PHONES = 6_000_000  # the baseline's phone serials start here, the load's at 0 (bench/locustfile.py)

Log = Callable[[str], None]


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": round(percentile(values, 50), 1), "p95_ms": round(percentile(values, 95), 1),
            "p99_ms": round(percentile(values, 99), 1), "max_ms": round(max(values), 1)}


class LagSampler(Sampler):
    """Samples (time, head, projection position, relay position) every ``interval_s`` seconds."""

    def __init__(self, database_url: str, interval_s: float = LAG_INTERVAL_S):
        super().__init__("lag-sampler")
        from events.relay import RELAY_NAME
        from projections.read_model import ReadModelProjector
        from command.unit_of_work import EVENTS_TABLE

        self.database_url = database_url
        self.interval_s = interval_s
        self.query = (f"SELECT (SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}),"
                      " (SELECT coalesce(min(position), 0) FROM projection_tracking WHERE name = %s),"
                      " (SELECT coalesce(max(position), 0) FROM relay_tracking WHERE name = %s)")
        self.params = (ReadModelProjector.name, RELAY_NAME)
        # Backends of this database waiting for a lock (the events table's EXCLUSIVE lock,
        # the tracking row's FOR UPDATE) and running a statement: where a write waits.
        self.activity = ("SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FILTER (WHERE state ="
                         " 'active') - 1 FROM pg_stat_activity WHERE datname = current_database()")
        self.samples: list[tuple[float, int, int, int]] = []
        self.backends: list[tuple[float, int, int]] = []  # (time, waiting for a lock, running)

    def read(self, conn: psycopg.Connection) -> tuple[float, int, int, int]:
        head, projected, relayed = conn.execute(self.query, self.params).fetchone()
        return time.time(), head, projected, relayed

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                self.samples.append(self.read(conn))
                self.backends.append((time.time(), *conn.execute(self.activity).fetchone()))
                self._stop.wait(self.interval_s)


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values)}


def lag_summary(samples: list[tuple[float, int, int, int]], column: int, since: float,
                until: float) -> dict[str, float]:
    """Lag of one follower (column 2: projection, 3: relay) in events and in ms, over samples in [since, until].

    Lag in ms at a sample is the age of the oldest event the follower had not yet
    processed: now minus the first sample that saw the head reach that event
    (sampling every 50 ms, so each figure is within 50 ms of the truth).
    """
    times = [s[0] for s in samples]
    heads = [s[1] for s in samples]
    events_lag, ms_lag = [], []
    for t, head, *positions in samples:
        if t < since:
            continue
        if t > until:
            break
        position = positions[column - 2]
        events_lag.append(max(head - position, 0))
        if position >= head:
            ms_lag.append(0.0)
            continue
        # heads never decrease: the first sample whose head reached position + 1
        first = bisect_left(heads, position + 1)
        ms_lag.append((t - times[min(first, len(times) - 1)]) * 1000)
    if not events_lag:
        return {}
    return {"samples": len(events_lag), "events_p50": percentile(events_lag, 50), "events_p95": percentile(events_lag, 95),
            "events_max": max(events_lag), "ms_p50": round(percentile(ms_lag, 50)),
            "ms_p95": round(percentile(ms_lag, 95)), "ms_max": round(max(ms_lag))}


def nats_lags(nats_url: str, stream: str, after_sequence: int) -> dict[str, Any]:
    """Event time → stored in JetStream, for every message of an event after ``after_sequence``."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def read() -> list[float]:
        nc = await nats.connect(nats_url)
        lags: list[float] = []
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(">", stream=stream, config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30.0))
            while True:
                try:
                    messages = await sub.fetch(1000, timeout=2)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    break  # nothing more in the stream
                for m in messages:
                    body = json.loads(m.data)
                    if body.get("sequence", 0) <= after_sequence:
                        continue
                    occurred = dt.datetime.fromisoformat(body["time"])
                    lags.append((m.metadata.timestamp - occurred).total_seconds() * 1000)
            await sub.unsubscribe()
        finally:
            await nc.close()
        return lags

    return stats(asyncio.run(read()))


def _wait_caught_up(sampler: LagSampler, conn: psycopg.Connection, timeout: float) -> float | None:
    """Seconds until projection and relay both reach the head (None: not within ``timeout``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        _, head, projected, relayed = sampler.read(conn)
        if projected >= head and relayed >= head:
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


def _wait_worker_ready(database_url: str, timeout: float = 60) -> None:
    """Until the worker has built its container and run once (its tracking rows exist).

    Writing while a worker process still creates the schema at start-up was seen to
    deadlock that worker's DDL against the write (the worker then exits), so the
    benchmark writes only once the worker is up.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            ready = conn.execute("SELECT to_regclass('relay_tracking') IS NOT NULL AND EXISTS"
                                 " (SELECT 1 FROM projection_tracking)").fetchone()[0]
            if ready:
                return
            time.sleep(0.2)
    raise SystemExit(f"writes: the worker did not start within {timeout:.0f} s (see its serve.log)")


def _requests_summary(timings: dict[str, Any], seconds: float) -> dict[str, Any]:
    by_name: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, Counter] = defaultdict(Counter)
    for name, _, ms, ok, status in timings["requests"]:
        if ok:
            by_name[name].append(ms)
        else:
            failures[name][str(status or "error")] += 1
    out = {}
    for name in sorted(set(by_name) | set(failures)):
        ok = by_name.get(name, [])
        out[name] = {**stats(ok), "per_s": round(len(ok) / seconds, 1), "failures": dict(failures.get(name, {}))}
    return out


def _locust(svc: ServeProcess, token: str, list_ids: list[str], users: int, seconds: float, name: str,
            data_dir: Path, phone_offset: int) -> tuple[dict[str, Any], int]:
    """One headless locust run; returns its timings and exit code."""
    timings_path = data_dir / f"timings-{name}.json"
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_LIST_IDS": ",".join(list_ids),
           "BENCH_TIMINGS": str(timings_path), "BENCH_PHONE_OFFSET": str(phone_offset)}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--users", str(users),
               "--spawn-rate", str(users), "--run-time", f"{seconds:g}s", "--host", svc.url, "--only-summary",
               "--stop-timeout", "10", "--loglevel", "WARNING"]
    with (data_dir / f"locust-{name}.log").open("w") as locust_log:
        done = subprocess.run(command, env=env, cwd=ROOT, stdout=locust_log, stderr=subprocess.STDOUT)
    if not timings_path.exists():
        raise SystemExit(f"writes: locust wrote no timings (exit code {done.returncode});"
                         f" see {data_dir / f'locust-{name}.log'}")
    return json.loads(timings_path.read_text()), done.returncode


def _load_summary(timings: dict[str, Any]) -> dict[str, Any]:
    """Per-request figures, all writes together, and read-your-writes, from one locust run."""
    requests = timings["requests"]
    first = min(r[1] for r in requests)
    duration = max(r[1] + r[2] / 1000 for r in requests) - first
    write_ms = [r[2] for r in requests if r[3] and r[0] in WRITE_NAMES]
    cycles = timings["cycles"]
    return {
        "measured_seconds": round(duration, 1),
        "rate_limited_responses": sum(1 for r in requests if r[4] == 429),
        "endpoints": _requests_summary(timings, duration),
        "writes": {**stats(write_ms), "per_s": round(len(write_ms) / duration, 1)},
        "read_your_writes": {
            "cycles": len(cycles), "visible": sum(1 for c in cycles if c[4]),
            "post_ms": stats([c[1] for c in cycles]), "get_after_post_ms": stats([c[2] for c in cycles]),
            "post_to_seen_ms": stats([c[3] for c in cycles]),
        },
    }


def run(users: int, seconds: float, log: Log = print, data_dir: Path = DATA,
        baseline_seconds: float = 10) -> dict[str, Any]:
    """A one-client baseline, then the load; returns the part of the suite's results they measured."""
    from service.auth import mint_token

    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    account = uuid.uuid4()
    token = mint_token(SECRET, account, "bench-writes", 86400)
    with PeakSampler([data_dir]) as peaks, ServeProcess(data_dir, SECRET) as svc:
        log(f"writes: contacts serve on {svc.url} (pid {svc.proc.pid}), data in {data_dir}")
        _wait_worker_ready(svc.database_url)
        with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            list_ids = []
            for name in ("Nairobi customers", "Newsletter", "VIP"):
                r = http.post("/api/v1/contact-lists", json={"name": name})
                if r.status_code != 201:
                    raise SystemExit(f"writes: creating a list answered {r.status_code}: {r.text[:300]}")
                list_ids.append(r.json()["id"])
        baseline = None
        if baseline_seconds:
            log(f"writes: baseline, 1 locust user for {baseline_seconds:g} s")
            timings, _ = _locust(svc, token, list_ids, 1, baseline_seconds, "baseline", data_dir,
                                  phone_offset=BASELINE_PHONES)
            baseline = _load_summary(timings)
        sampler = LagSampler(svc.database_url)
        with psycopg.connect(svc.database_url, autocommit=True) as conn:
            if _wait_caught_up(sampler, conn, 60) is None:
                raise SystemExit("writes: the worker did not project and relay the set-up events within 60 s")
            head_before = sampler.read(conn)[1]
        log(f"writes: {users} locust users for {seconds:g} s (closed loop: create, read back, update, add to list)")
        with sampler, PeakSampler([data_dir]) as during:
            load_started = time.time()
            timings, exit_code = _locust(svc, token, list_ids, users, seconds, "load", data_dir, phone_offset=0)
            load_ended = time.time()
            with psycopg.connect(svc.database_url, autocommit=True) as conn:
                drain_s = _wait_caught_up(sampler, conn, DRAIN_TIMEOUT_S)
                head_after = sampler.read(conn)[1]
        relay_to_nats = nats_lags(svc.nats_url, "CONTACTS", head_before)
    first_request = min(r[1] for r in timings["requests"])
    result = {
        "users": users, "seconds": seconds, "locust_exit_code": exit_code, **_load_summary(timings),
        "baseline_1_client": baseline,
        "events_stored": head_after - head_before,
        "events_per_s": round((head_after - head_before) / (load_ended - load_started), 1),
        "projection_lag": lag_summary(sampler.samples, 2, first_request, load_ended),
        "relay_lag": lag_summary(sampler.samples, 3, first_request, load_ended),
        "relay_event_to_nats_ms": relay_to_nats,
        "drain_after_load_s": None if drain_s is None else round(drain_s, 2),
        "backends_waiting_for_a_lock": _spread([w for t, w, _ in sampler.backends if first_request <= t <= load_ended]),
        "backends_active": _spread([a for t, _, a in sampler.backends if first_request <= t <= load_ended]),
        "cpu_during_load": during.cpu(),
        "peak_rss_mb": peaks.peaks_mb(), "load_average": peaks.load(), "cores": os.cpu_count(),
    }
    if result["rate_limited_responses"]:
        log(f"writes: WARNING {result['rate_limited_responses']} responses were 429: the server did not take"
            " CONTACTS_RATE_LIMIT_WRITES_PER_MINUTE=0")
    return result


def print_summary(result: dict[str, Any], log: Log = print) -> None:
    log(f"writes: {result['users']} clients, {result['measured_seconds']} s, {result['cores']} cores,"
        f" load {result['load_average']['start'][0]} → max {result['load_average']['max_1m']}")
    for name, s in result["endpoints"].items():
        if s.get("count"):
            log(f"writes:   {name:<40} {s['per_s']:>7.1f}/s  p50 {s['p50_ms']:>7.1f}  p95 {s['p95_ms']:>7.1f}"
                f"  p99 {s['p99_ms']:>7.1f} ms  failures {s['failures'] or 0}")
    w, ryw = result["writes"], result["read_your_writes"]
    log(f"writes:   all writes {w['per_s']}/s  p50 {w.get('p50_ms')}  p95 {w.get('p95_ms')}  p99 {w.get('p99_ms')} ms")
    log(f"writes:   read-your-writes: {ryw['visible']}/{ryw['cycles']} visible at once;"
        f" POST→seen p50 {ryw['post_to_seen_ms'].get('p50_ms')} p95 {ryw['post_to_seen_ms'].get('p95_ms')} ms")
    for key in ("projection_lag", "relay_lag"):
        lag = result[key]
        log(f"writes:   {key}: events p95 {lag.get('events_p95')} max {lag.get('events_max')};"
            f" ms p95 {lag.get('ms_p95')} max {lag.get('ms_max')}")
    n = result["relay_event_to_nats_ms"]
    log(f"writes:   event → NATS: p50 {n.get('p50_ms')} p95 {n.get('p95_ms')} p99 {n.get('p99_ms')}"
        f" max {n.get('max_ms')} ms over {n.get('count')} messages; drained {result['drain_after_load_s']} s after the load")
    log(f"writes:   PostgreSQL backends waiting for a lock {result['backends_waiting_for_a_lock']},"
        f" running a statement {result['backends_active']}")
    log(f"writes:   peak RSS MB {result['peak_rss_mb']}; CPU cores busy during the load"
        f" {result['cpu_during_load']['cores_busy']}")
    base = result.get("baseline_1_client")
    if base:
        log(f"writes:   1-client baseline: all writes {base['writes']['per_s']}/s p50 {base['writes'].get('p50_ms')}"
            f" p95 {base['writes'].get('p95_ms')} p99 {base['writes'].get('p99_ms')} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench writes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load (default 60)")
    parser.add_argument("--baseline-seconds", type=float, default=10,
                        help="one client alone first, for the unloaded latency (default 10; 0: none)")
    parser.add_argument("--floor", action="store_true",
                        help="instead: POST /contacts beside the plain CRUD floor, alternating runs (bench/write_floor.py)")
    parser.add_argument("--connections", type=int, default=32, help="--floor: connections (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="--floor: alternating rounds (default 2)")
    args = parser.parse_args(argv)
    if args.floor:
        from bench import write_floor

        result = write_floor.run(args.connections, args.seconds if args.seconds != 60 else 15, args.rounds)
        out = ROOT / "bench" / "results" / "write-floor.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        write_floor.print_summary(result)
        return
    result = run(args.users, args.seconds, baseline_seconds=args.baseline_seconds)
    print_summary(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

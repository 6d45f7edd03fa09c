"""A/B of the CSV import's CPU per row between checkouts of this repository, imports alternating.

    git worktree add /tmp/base <commit>
    python -m bench.import_ab --rows 100000 --rounds 3 A=/tmp/base B=.      # add --stats for statements

Each checkout runs its own ``contacts serve`` (embedded PostgreSQL, with
``pg_stat_statements`` preloaded, and NATS, under bench/.data/import-ab/<name>); the
same generated file (bench/imports.py ``generate``) is imported into a new account of
each in turn, A B A B ..., so both see the same machine load. Round 0 is each
service's first import, into a new database (no statistics yet). Printed per import:
rows/s to the response and CPU microseconds per row of each process (the API, its
worker, the relay, PostgreSQL and NATS, from /proc) between the request and the
response; then the median of each. With several people on a small machine, decide on
the CPU figures (alternated), not on the rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

import bench.server
from bench.imports import Service, _cpu_per_row, generate
from service.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "import-ab"


def _statements(svc: Service, reset: bool = False) -> list[tuple]:
    """The statements' total time, calls and text since the last reset (or reset them)."""
    admin = EmbeddedPostgres(svc.data_dir).admin_url.rsplit("/", 1)[0] + "/" + svc.database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            conn.execute("SELECT pg_stat_statements_reset()")
            return []
        return conn.execute("SELECT total_exec_time, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 140)"
                            " FROM pg_stat_statements ORDER BY 1 DESC LIMIT 15").fetchall()


def _start(name: str, checkout: Path) -> Service:
    """``contacts serve`` from ``checkout`` (its modules first on the path), in a new data dir."""
    data = DATA / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    bench.server.preload_pg_stat_statements(data)
    svc = Service(data)
    svc.env["PYTHONPATH"] = str(checkout)
    bench.server.ROOT = checkout  # the serve process's working directory
    return svc.__enter__()


def variants_parser(prog: str, description: str | None, rounds: int, pause: float,
                    pause_help: str) -> argparse.ArgumentParser:
    """The arguments every A/B of imports takes: the checkouts, rows, rounds and the pause between imports."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=CHECKOUT, two or more")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--pause", type=float, default=pause, help=pause_help)
    return parser


def generated_csv(data: Path, rows: int) -> bytes:
    """The generated CSV of ``rows`` rows (bench/imports.py ``generate``), made once under ``data``."""
    data.mkdir(parents=True, exist_ok=True)
    csv_path = data / f"contacts-{rows}.csv"
    if not csv_path.exists():
        generate(csv_path, rows)
    return csv_path.read_bytes()


@contextmanager
def started(variants: list[str], start: Callable[[str, Path], Service]) -> Iterator[dict[str, Service]]:
    """Each ``NAME=CHECKOUT`` variant's service, started by ``start``, stopped on the way out."""
    services: dict[str, Service] = {}
    try:
        for variant in variants:
            name, checkout = variant.split("=", 1)
            services[name] = start(name, Path(checkout).resolve())
        yield services
    finally:
        for svc in services.values():
            svc.__exit__()


def alternating(services: dict[str, Service], rounds: int, pause: float, measure: Callable[[Service], dict],
                then: Callable[[Service], None] = lambda svc: None) -> dict[str, list[dict]]:
    """``rounds`` rounds of ``measure`` on each service in turn (A B A B ...), each result printed as it
    comes (then ``then``), ``pause`` seconds after each; every service's results."""
    results: dict[str, list[dict]] = {name: [] for name in services}
    for round_ in range(rounds):
        for name, svc in services.items():
            result = measure(svc)
            results[name].append(result)
            print(round_, name, json.dumps(result), flush=True)
            then(svc)
            time.sleep(pause)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = variants_parser("python -m bench.import_ab", __doc__, rounds=3, pause=20,
                             pause_help="seconds after each import (the relay drains)")
    parser.add_argument("--stats", action="store_true", help="print each import's statements (wall time a row)")
    args = parser.parse_args(argv)
    content = generated_csv(DATA, args.rows)

    def measure(svc: Service) -> dict:
        api = svc.client()  # a new account each time
        if args.stats:
            _statements(svc, reset=True)
        before, load, began = svc.cpu_seconds(), os.getloadavg()[0], time.perf_counter()
        r = api.post("/api/v1/contacts/import", files={"file": ("contacts.csv", content)})
        elapsed, after = time.perf_counter() - began, svc.cpu_seconds()
        assert r.status_code == 201, r.text[:300]
        return {"rows_per_s": round(args.rows / elapsed), "cpu_us_per_row": _cpu_per_row(before, after, args.rows),
                "imported": r.json()["imported"], "load": round(load, 2)}

    def statements(svc: Service) -> None:
        for total_ms, calls, query in _statements(svc) if args.stats else ():
            print(f"    {total_ms * 1000 / args.rows:7.1f} us/row {calls:6d} calls  {query}")

    with started(args.variants, _start) as services:
        results = alternating(services, args.rounds, args.pause, measure, then=statements)
        for name, runs in results.items():
            median = {k: sorted(r["cpu_us_per_row"][k] for r in runs)[len(runs) // 2] for k in runs[0]["cpu_us_per_row"]}
            print(name, "median CPU us/row", json.dumps(median), "rows/s", sorted(r["rows_per_s"] for r in runs))


if __name__ == "__main__":
    main()

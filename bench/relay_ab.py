"""A/B of the relay's and NATS's CPU per imported row between checkouts, imports alternating.

    git worktree add /tmp/base <commit>
    python -m bench.relay_ab --rows 100000 --rounds 2 A=/tmp/base B=.            # relay beside the import
    python -m bench.relay_ab --rows 100000 --rounds 2 --drain A=/tmp/base B=.    # relay alone, draining

Like ``bench.import_ab`` (each checkout its own ``contacts serve`` with embedded
PostgreSQL and NATS, the same generated CSV imported into a new account of each in
turn), but timed until the last message of the import is in the stream, and printing
the CPU per row of each process from the request to that message. With ``--drain`` the
relay process is stopped (SIGSTOP) for the import and let go when it answers, so the
relay's and NATS's figures are theirs alone and the drain rate is printed. With several
people on a small machine, decide on the CPU figures (alternated), not on the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path

import bench.server
from bench.import_ab import alternating, generated_csv, started, variants_parser
from bench.imports import Service, _cpu_per_row, nats_messages

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "relay-ab"


def _start(name: str, checkout: Path) -> Service:
    """``contacts serve`` from ``checkout`` (its modules first on the path), in a new data dir."""
    data = DATA / name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    svc = Service(data)
    svc.env["PYTHONPATH"] = str(checkout)
    bench.server.ROOT = checkout  # the serve process's working directory
    return svc.__enter__()


def timed_import(svc: Service, content: bytes, rows: int, drain: bool) -> dict:
    """Import ``content`` into a new account; CPU per row and rates until its last message is in the stream."""
    api = svc.client()
    before = nats_messages(svc.data_dir)
    relay = svc.relay_pid()
    if drain:
        os.kill(relay, signal.SIGSTOP)
    cpu_start, load, began = svc.cpu_seconds(), os.getloadavg()[0], time.perf_counter()
    try:
        r = api.post("/api/v1/contacts/import", files={"file": ("contacts.csv", content)})
    finally:
        responded = time.perf_counter()
        if drain:
            os.kill(relay, signal.SIGCONT)
    cpu_response = svc.cpu_seconds()
    assert r.status_code == 201, r.text[:300]
    imported = r.json()["imported"]
    deadline = time.monotonic() + 600
    while nats_messages(svc.data_dir) < before + imported + 2:  # a message per contact, then the import's own
        if time.monotonic() > deadline:
            raise TimeoutError("the import's messages were not all in the stream after 10 minutes")
        time.sleep(0.05)
    done, cpu_done = time.perf_counter(), svc.cpu_seconds()
    result = {"imported": imported, "rows_per_s_to_response": round(rows / (responded - began)),
              "rows_per_s_to_nats": round(rows / (done - began)),
              "cpu_us_per_row_to_response": _cpu_per_row(cpu_start, cpu_response, rows),
              "cpu_us_per_row": _cpu_per_row(cpu_start, cpu_done, rows),
              "cpu_us_per_row_after_response": _cpu_per_row(cpu_response, cpu_done, rows),
              "load": round(load, 2)}
    if drain:
        result["drained_contacts_per_s"] = round(imported / (done - responded))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = variants_parser("python -m bench.relay_ab", __doc__, rounds=2, pause=5,
                             pause_help="seconds between imports")
    parser.add_argument("--drain", action="store_true", help="stop the relay during each import, then time it alone")
    args = parser.parse_args(argv)
    content = generated_csv(DATA, args.rows)
    with started(args.variants, _start) as services:
        for svc in services.values():
            svc.settle()
        results = alternating(services, args.rounds, args.pause,
                              lambda svc: timed_import(svc, content, args.rows, args.drain))
        for name, runs in results.items():
            cpu = [r["cpu_us_per_row"] for r in runs]
            median = {k: sorted(c[k] for c in cpu)[len(cpu) // 2] for k in cpu[0]}
            print(name, "median CPU us/row to the last message", json.dumps(median),
                  "rows/s to the last message", sorted(r["rows_per_s_to_nats"] for r in runs))


if __name__ == "__main__":
    main()

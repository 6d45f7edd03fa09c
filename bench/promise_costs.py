"""What each promise costs a CSV import, against the plain parse + COPY floor in the same run.

    python -m bench.promise_costs --rows 100000 --rounds 2

One ``contacts serve`` (embedded PostgreSQL and NATS in bench/.data/promise-costs)
imports the imports benchmark's generated file into a new account four ways, in turn,
each round:

- ``shipped``: as the service runs;
- ``no_search_indexes``: the two trigram indexes that serve ``search`` dropped first
  (and made again, with their stored definitions, once the import's messages are out);
- ``no_messages``: the relay stopped (SIGSTOP) for the import, so no ``contact.created``
  message is built, published or stored while it runs: the most that publishing fewer or
  cheaper messages could give (it is let go and drains before the next import);
- ``neither``: both;
- ``unlogged_read_table`` (only when named with ``--variants``): the ``contacts`` read
  table ``UNLOGGED`` for the import (no WAL for it; PostgreSQL would empty it after a
  crash, so the service would have to rebuild it before serving, and no standby could
  serve it), made ``LOGGED`` again once the import's messages are out.

Each prints rows/s to the response, its ratio to the floors (bench/imports.py ``floor``:
phonenumbers + ``COPY``, into a bare table and into the CRUD floor's searchable one, run
first in the same command) and the CPU µs a row of each process (API, worker, relay,
PostgreSQL, NATS) from the request to the response, and ``cpu_vs_floor``: the import's CPU
a row, every process's and to its last message where it publishes, over the bare floor's
(its Python process and its PostgreSQL server, ``cpu_us_per_row`` in ``floors``): what
the import costs against the plain way, whatever the number of cores. Figures go to
bench/results/promise-costs.json. Taking a promise away here measures its cost; it is
not a setting of the service.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from bench import relay_ab
from bench.imports import Service, floor, generate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "promise-costs"
RESULTS = ROOT / "bench" / "results"
# Each variant and the promises it takes away.
VARIANTS = {"shipped": (), "no_search_indexes": ("search_indexes",), "no_messages": ("messages",),
            "neither": ("search_indexes", "messages"), "unlogged_read_table": ("crash_safe_read_table",)}
DEFAULT_VARIANTS = ("shipped", "no_search_indexes", "no_messages", "neither")
SEARCH_INDEXES = ("contacts_search_name", "contacts_search_phone")


def search_indexes(svc: Service) -> dict[str, str]:
    """The trigram indexes' definitions as PostgreSQL stores them (with their storage options)."""
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
                            (list(SEARCH_INDEXES),)).fetchall()
    found = dict(rows)
    if set(found) != set(SEARCH_INDEXES):
        raise RuntimeError(f"expected the indexes {SEARCH_INDEXES}, found {sorted(found)}")
    return found


def set_search_indexes(svc: Service, definitions: dict[str, str], present: bool) -> None:
    """Make the trigram indexes (from their stored definitions) or drop them."""
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        for name, definition in definitions.items():
            if present:
                conn.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
            else:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))


def set_read_table_logged(svc: Service, logged: bool) -> None:
    """``contacts`` WAL-logged (as shipped) or not (rewrites the table when it changes)."""
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        now = conn.execute("SELECT relpersistence = 'p' FROM pg_class WHERE oid = 'contacts'::regclass").fetchone()[0]
        if now != logged:
            conn.execute("ALTER TABLE contacts SET LOGGED" if logged else "ALTER TABLE contacts SET UNLOGGED")


def import_once(svc: Service, content: bytes, rows: int, variant: str, definitions: dict[str, str]) -> dict:
    """One import into a new account with ``variant``'s promise(s) taken away; the service as shipped after."""
    messages, indexes = "messages" not in VARIANTS[variant], "search_indexes" not in VARIANTS[variant]
    set_search_indexes(svc, definitions, indexes)
    set_read_table_logged(svc, "crash_safe_read_table" not in VARIANTS[variant])
    # relay_ab's import: the relay stopped for it (``drain``) when it publishes nothing meanwhile.
    timed = relay_ab.timed_import(svc, content, rows, drain=not messages)
    set_search_indexes(svc, definitions, True)  # after the messages: their time is the import's
    set_read_table_logged(svc, True)
    run = {"variant": variant, "rows_per_s": timed["rows_per_s_to_response"], "imported": timed["imported"],
           "cpu_us_per_row": timed["cpu_us_per_row_to_response"], "load_average_before": timed["load"]}
    if messages:  # the measure: from the request until the last contact.created is in the stream
        run["rows_per_s_to_nats"] = timed["rows_per_s_to_nats"]
        run["cpu_us_per_row_to_nats"] = timed["cpu_us_per_row"]
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.promise_costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pause", type=float, default=5.0, help="seconds of quiet before each import")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: the first four)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        parser.error(f"unknown variants: {sorted(set(variants) - set(VARIANTS))}")
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    csv_path = DATA / "contacts.csv"
    generate(csv_path, args.rows)
    results: dict = {"cores": os.cpu_count(), "rows": args.rows,
                     "command": "python -m bench.promise_costs " + " ".join(argv or sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "imports": []}
    floors = {"floor": floor(csv_path, args.rows), "indexed_floor": floor(csv_path, args.rows, indexed=True)}
    results["floors"] = floors
    print("floors", json.dumps({k: v["rows_per_s"] for k, v in floors.items()}),
          "CPU us a row", json.dumps({k: v["cpu_us_per_row"] for k, v in floors.items()}), flush=True)
    content = csv_path.read_bytes()
    (DATA / "svc").mkdir()
    with Service(DATA / "svc") as svc:
        svc.settle()
        definitions = search_indexes(svc)
        for round_ in range(args.rounds):
            for variant in variants:
                time.sleep(args.pause)
                run = import_once(svc, content, args.rows, variant, definitions)
                run.update(round=round_ + 1, **_ratios(run, floors))
                results["imports"].append(run)
                print(json.dumps(run), flush=True)
    for key in ("rows_per_s", "rows_per_s_to_nats"):
        results[f"median_{key}"] = {
            v: statistics.median([r[key] for r in results["imports"] if r["variant"] == v and key in r])
            for v in variants if not (key.endswith("nats") and "messages" in VARIANTS[v])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "promise-costs.json").write_text(json.dumps(results, indent=2) + "\n")
    print("medians", json.dumps(results["median_rows_per_s"]), "to the last message",
          json.dumps(results["median_rows_per_s_to_nats"]))


def _ratios(run: dict, floors: dict[str, dict]) -> dict[str, float]:
    """The import's rate (to the response, and to the last message when it publishes) over each floor's."""
    ratios = {}
    for name, measured in (("", run["rows_per_s"]), ("to_nats_", run.get("rows_per_s_to_nats"))):
        for floor_name, result in floors.items():
            if measured is not None:
                ratios[f"{name}vs_{floor_name}"] = round(measured / result["rows_per_s"], 2)
    # What the import costs in CPU against the plain way (a measure that does not depend on the
    # cores): all of it, to the last message where it publishes, over the bare floor's.
    spent = run.get("cpu_us_per_row_to_nats", run["cpu_us_per_row"])["total"]
    ratios["cpu_vs_floor"] = round(spent / floors["floor"]["cpu_us_per_row"]["total"], 2)
    return ratios


if __name__ == "__main__":
    main()

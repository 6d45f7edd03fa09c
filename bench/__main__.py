"""``python -m bench <benchmark> [options]``: run one benchmark by name.

    python -m bench queries --contacts 1000000   # seed once (kept in bench/.data), then measure
    python -m bench seed --contacts 20000        # only seed
    python -m bench alternatives --contacts 1000000   # current SQL vs the proposed changes
    python -m bench imports --rows 100000        # imports and exports (bench/imports.py)
    python -m bench writes --users 32 --seconds 60    # single writes under load, lag (bench/writes.py)
    python -m bench writes --floor                    # POST /contacts beside a plain CRUD floor (bench/write_floor.py)
    python -m bench suite --size small           # all of them, one results file (make bench)
    python -m bench report                       # docs sections from bench/results/suite.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _seeded(args: argparse.Namespace):
    from bench.seed import database_url, ensure_seeded, start_server

    pg = start_server(args.data_dir)
    url = database_url(pg, args.contacts, args.via, fresh=args.reseed)
    from service.embedded import redacted

    _log(f"PostgreSQL {redacted(url)} (data in {pg.pgdata})")
    started = time.perf_counter()
    state = ensure_seeded(url, args.contacts, args.via, _log)
    _log(f"seeded database ready in {time.perf_counter() - started:.0f} s: {state.stats}")
    return pg, url, state


def cmd_seed(args: argparse.Namespace) -> None:
    pg, _, _ = _seeded(args)
    if args.stop_postgres:
        pg.stop()


def _command() -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_queries(args: argparse.Namespace) -> None:
    from bench import queries

    pg, url, state = _seeded(args)
    try:
        results, reference = queries.measure(state, url, args.samples, args.warmup, args.only, args.max_case_seconds,
                                             _log)
        if args.only:
            _log("--only given: results not written")
            return
        document = queries.results_document(_command(), state, url, results, args.samples, args.warmup,
                                            max_case_seconds=args.max_case_seconds, reference_health=reference)
        queries.save_json(RESULTS / "queries.json", document)
        queries.update_docs(DOCS, "queries", queries.markdown_table(document))
        _log("wrote bench/results/queries.json and docs/benchmarks.md")
    finally:
        if args.stop_postgres:
            pg.stop()


def cmd_alternatives(args: argparse.Namespace) -> None:
    from bench import alternatives, queries

    pg, url, state = _seeded(args)
    try:
        results = alternatives.measure(state, url, args.samples, args.warmup, args.only, args.max_case_seconds, _log)
        if args.only:
            _log("--only given: results not written")
            return
        document = queries.results_document(_command(), state, url, results, args.samples, args.warmup,
                                            max_case_seconds=args.max_case_seconds)
        document["benchmark"] = "alternatives"
        queries.save_json(RESULTS / "alternatives.json", document)
        queries.update_docs(DOCS, "alternatives", alternatives.markdown_table(document))
        _log("wrote bench/results/alternatives.json and docs/benchmarks.md")
    finally:
        if args.stop_postgres:
            pg.stop()


def cmd_serve(args: argparse.Namespace) -> None:
    from bench.server import serve

    serve(args.database_url, args.port)


def cmd_floor_serve(args: argparse.Namespace) -> None:
    from bench.floor import serve

    serve(args.database_url, args.port)


#: Benchmarks that parse their own arguments: ``python -m bench imports …`` runs ``bench.imports.main``.
STANDALONE = {"imports": "bench.imports", "writes": "bench.writes", "suite": "bench.suite", "erasure": "bench.erasure",
              "report": "bench.report"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STANDALONE:
        import importlib

        importlib.import_module(STANDALONE[argv[0]]).main(argv[1:])
        return

    from bench.seed import DEFAULT_DATA_DIR, SEED_PATHS

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)

    def seeded(p: argparse.ArgumentParser) -> None:
        p.add_argument("--contacts", type=int, default=1_000_000, help="contacts in the one account (default 1,000,000)")
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="embedded PostgreSQL data (bench/.data)")
        p.add_argument("--via", choices=SEED_PATHS, default="imports",
                       help="seed through import batch events (default) or Contact aggregates")
        p.add_argument("--reseed", action="store_true", help="drop this size's database and seed it again")
        p.add_argument("--stop-postgres", action="store_true", help="stop the embedded PostgreSQL when done")

    p = sub.add_parser("seed", help="seed N contacts through the event store (kept for re-runs)")
    seeded(p)
    p.set_defaults(func=cmd_seed)
    p = sub.add_parser("queries", help="p50/p95 of GET /contacts vs the same SQL run directly")
    seeded(p)
    p.add_argument("--samples", type=int, default=200, help="measured requests per case (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured requests per case first (default 10)")
    p.add_argument("--max-case-seconds", type=float, default=60,
                   help="stop a slow case after this long, once it has 20 samples (default 60)")
    p.add_argument("--only", help="run only cases whose name contains this text (results not written)")
    p.set_defaults(func=cmd_queries)
    p = sub.add_parser("alternatives", help="evidence for proposed SQL changes: current vs proposed, direct SQL")
    seeded(p)
    p.add_argument("--samples", type=int, default=50, help="measured runs per case and variant (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured runs first (default 5)")
    p.add_argument("--max-case-seconds", type=float, default=30,
                   help="stop a slow case and variant after this long, once it has 20 samples (default 30)")
    p.add_argument("--only", help="run only cases whose name contains this text (results not written)")
    p.set_defaults(func=cmd_alternatives)
    sub.add_parser("imports", help="imports and exports through the running service (bench/imports.py)", add_help=False)
    sub.add_parser("erasure", help="another account's events while 10,000 purged contacts are erased (bench/erasure.py)",
                   add_help=False)
    sub.add_parser("writes", help="single-contact writes from concurrent locust clients, read-your-writes, lag",
                   add_help=False)
    sub.add_parser("suite", help="every benchmark, figures in bench/results/suite.json (make bench)", add_help=False)
    sub.add_parser("report", help="rewrite the generated doc sections from bench/results/suite.json", add_help=False)
    p = sub.add_parser("serve", help="internal: the API process the query benchmark talks to")
    p.add_argument("--database-url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("floor-serve", help="internal: the plain CRUD floor the writes benchmark compares with")
    p.add_argument("--database-url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_floor_serve)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

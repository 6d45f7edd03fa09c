"""``make bench`` / ``python -m bench suite``: every benchmark of the service, one results file.

    python -m bench suite --size small        # ~5 min: 5k-row imports, 20k contacts, 20 s of writes
    python -m bench suite --size full         # the issue's sizes: 100k-row imports (+1M for memory),
                                              # 1M contacts, 60 s of writes
    python -m bench suite --parts writes      # only some parts; the others keep their last results

Parts (each one runs the real service in processes of its own):

``imports``  CSV, XLSX and JSON imports and the CSV/JSON exports, beside the direct
             parse + COPY floor: ``bench/imports.py``, run as it is.
``queries``  GET /contacts p50/p95 per filter against the same SQL run directly:
             ``bench/queries.py`` on the seeded database kept in ``bench/.data/pg``.
``writes``   single-contact writes from concurrent locust clients, read-your-writes,
             projection and relay lag: ``bench/writes.py``.

Every part records the core count, the load average and the peak memory of each
process (API, worker, PostgreSQL, NATS). Results: ``bench/results/suite.json`` (one
entry per part, each with the command and size that produced it) and
``bench/results/suite.md``. A full-size run also refreshes ``imports.json``,
``queries.json`` and the generated sections of ``docs/benchmarks.md`` and the README;
``python -m bench report`` regenerates those sections from ``suite.json`` alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.server import BENCH_ENV, ROOT

RESULTS = ROOT / "bench" / "results"
SUITE_JSON = RESULTS / "suite.json"
SUITE_DATA = ROOT / "bench" / ".data" / "suite"
PARTS = ("imports", "queries", "writes")
BUSY_WARNING_CORES = 0.25  # CPU taken by processes outside the benchmark that makes a run suspect

#: The sizes ``make bench SIZE=…`` knows; every value can be overridden by its option.
SIZES: dict[str, dict[str, Any]] = {
    "small": {"rows": 5_000, "memory_rows": 0, "skip_xlsx": False, "contacts": 20_000, "samples": 50, "warmup": 5,
              "max_case_seconds": 10.0, "users": 32, "seconds": 20.0, "baseline_seconds": 5.0},
    "full": {"rows": 100_000, "memory_rows": 1_000_000, "skip_xlsx": False, "contacts": 1_000_000, "samples": 200,
             "warmup": 10, "max_case_seconds": 60.0, "users": 32, "seconds": 60.0, "baseline_seconds": 10.0},
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# -- parts ------------------------------------------------------------------------------------

#: Runs bench/imports.py unchanged, with its data and result directories pointed elsewhere,
#: so the suite neither shares bench/.data/imports with someone running it by hand nor
#: (below full size) replaces bench/results/imports.json.
_IMPORTS_CHILD = ("import pathlib, sys\nimport bench.imports as b\n"
                  "b.DATA, b.RESULTS = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\nb.main(sys.argv[3:])\n")


def run_imports(opts: argparse.Namespace) -> dict[str, Any]:
    from bench.procs import PeakSampler

    data = SUITE_DATA / "imports"
    results_dir = RESULTS if opts.size == "full" else SUITE_DATA / "imports-results"
    results_dir.mkdir(parents=True, exist_ok=True)
    args = ["--rows", str(opts.rows)]
    if opts.memory_rows:
        args += ["--memory-rows", str(opts.memory_rows)]
    if opts.skip_xlsx:
        args.append("--skip-xlsx")
    started = time.time()
    _log(f"imports: python -m bench.imports {' '.join(args)} (data in {data})")
    with PeakSampler([data]) as peaks:
        subprocess.run([sys.executable, "-c", _IMPORTS_CHILD, str(data), str(results_dir), *args], cwd=ROOT,
                       env={**os.environ, **BENCH_ENV}, check=True)
    raw = json.loads((results_dir / "imports.json").read_text())
    if raw.get("rows") != opts.rows or Path(results_dir / "imports.json").stat().st_mtime < started:
        raise SystemExit("imports: bench/imports.py did not write this run's results")
    return {"raw": raw, "peak_rss_mb": peaks.peaks_mb(), "load_average": peaks.load(), "cpu": peaks.cpu(),
            "results_file": str((results_dir / "imports.json").relative_to(ROOT))}


def run_queries(opts: argparse.Namespace) -> dict[str, Any]:
    from bench import queries
    from bench.procs import PeakSampler
    from bench.seed import DEFAULT_DATA_DIR, database_url, ensure_seeded, start_server

    pg = start_server(DEFAULT_DATA_DIR)
    url = database_url(pg, opts.contacts, "imports")
    _log(f"queries: {opts.contacts:,} contacts in {url} (seeded once, kept in {pg.pgdata})")
    try:
        state = ensure_seeded(url, opts.contacts, "imports", _log)
        with PeakSampler([pg.pgdata]) as peaks:
            cases, reference = queries.measure(state, url, opts.samples, opts.warmup, opts.only,
                                               opts.max_case_seconds, _log)
        document = queries.results_document(opts.command, state, url, cases, opts.samples, opts.warmup,
                                            max_case_seconds=opts.max_case_seconds, reference_health=reference)
    finally:
        if pg.started_here:  # leave running only a server that was already running
            pg.stop()
    if opts.size == "full" and not opts.only:
        queries.save_json(RESULTS / "queries.json", document)
        queries.update_docs(report.DOCS, "queries", queries.markdown_table(document))
        _log("queries: wrote bench/results/queries.json and its section of docs/benchmarks.md")
    for case in document["cases"]:
        case.pop("plans", None)  # kept in queries.json; the suite keeps the figures
    return {"raw": document, "peak_rss_mb": peaks.peaks_mb(), "load_average": peaks.load(), "cpu": peaks.cpu()}


def run_writes(opts: argparse.Namespace) -> dict[str, Any]:
    from bench import writes

    result = writes.run(opts.users, opts.seconds, _log, baseline_seconds=opts.baseline_seconds)
    writes.print_summary(result, _log)
    return {"raw": result, "peak_rss_mb": result.pop("peak_rss_mb"), "load_average": result.pop("load_average"),
            "cpu": result["cpu_during_load"]}


RUNNERS = {"imports": run_imports, "queries": run_queries, "writes": run_writes}


# -- results ----------------------------------------------------------------------------------

def load_suite(path: Path = SUITE_JSON) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": "suite", "parts": {}}


def save_suite(suite: dict[str, Any], path: Path = SUITE_JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(suite, indent=2) + "\n")
    tmp.replace(path)


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="preset sizes (default small)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default all)")
    parser.add_argument("--rows", type=int, help="rows per import file")
    parser.add_argument("--memory-rows", type=int, help="rows of the extra import measured for memory (0: none)")
    parser.add_argument("--skip-xlsx", action="store_true", default=None, help="no XLSX import")
    parser.add_argument("--contacts", type=int, help="contacts in the seeded account for GET /contacts")
    parser.add_argument("--samples", type=int, help="measured requests per GET /contacts case")
    parser.add_argument("--warmup", type=int, help="unmeasured requests per case first")
    parser.add_argument("--max-case-seconds", type=float, help="stop a slow case after this long")
    parser.add_argument("--only", help="only GET /contacts cases whose name contains this (a check: not saved)")
    parser.add_argument("--users", type=int, help="concurrent write clients (default 32)")
    parser.add_argument("--seconds", type=float, help="length of the write load")
    parser.add_argument("--baseline-seconds", type=float, help="one write client alone first, for comparison")
    parser.add_argument("--docs", action="store_true",
                        help="also rewrite the generated sections of docs/benchmarks.md and README.md")
    opts = parser.parse_args(argv)
    for key, value in SIZES[opts.size].items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.parts = [p.strip() for p in opts.parts.split(",") if p.strip()]
    unknown = set(opts.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    opts.command = "python -m bench suite " + " ".join(shlex.quote(a) for a in argv)
    return opts


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    opts = _options(argv)
    missing = [m for m in ("locust", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: run `make bench`, or pip install -e '.[bench]'")
    cores = os.cpu_count()
    _log(f"suite: size {opts.size}, parts {', '.join(opts.parts)}; {cores} cores, load average"
         f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    suite = load_suite()
    saved, failed = [], []
    for part in opts.parts:
        started = time.perf_counter()
        entry = {"command": opts.command, "size": opts.size, "date": _now(), "cores": cores,
                 "code": report.code_version()}
        try:
            entry.update(RUNNERS[part](opts))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failed part must not cost the others
            _log(f"suite: {part} FAILED ({type(exc).__name__}: {exc}); its last results are kept")
            failed.append(part)
            continue
        entry["seconds"] = round(time.perf_counter() - started)
        _log(f"suite: {part} done in {entry['seconds']} s; peak RSS MB {entry['peak_rss_mb']};"
             f" load {entry['load_average']}")
        others = entry["cpu"]["cores_busy"].get("other processes", 0)
        if others > BUSY_WARNING_CORES:
            _log(f"suite: WARNING other processes kept {others:.2f} of {cores} cores busy during {part}:"
                 " its figures measure a shared machine")
        if part == "queries" and opts.only:
            _log("suite: --only given: the queries figures are a check, not saved")
            continue
        suite["parts"][part] = entry
        suite["updated"] = _now()
        saved.append(part)
        save_suite(suite)  # after every part: an interrupted run keeps what it measured
    markdown = report.summary_markdown(suite)
    (RESULTS / "suite.md").write_text(markdown + "\n")
    print("\n" + markdown, flush=True)
    _log("suite: wrote bench/results/suite.json and bench/results/suite.md")
    if saved and (opts.docs or opts.size == "full"):
        report.update_docs(suite)
        _log("suite: rewrote the generated sections of docs/benchmarks.md and README.md")
    if failed:
        raise SystemExit(f"suite: failed parts: {', '.join(failed)} (see the log above)")


if __name__ == "__main__":
    main()

"""p50/p95 of ``GET /api/v1/contacts`` against the same SQL run directly (the floor).

For every case the benchmark alternates, sample by sample, between the floor (the
very statements ``query.contacts.page_contacts`` runs for that case, its own BEGIN and
COMMIT included, recorded once and replayed over one psycopg connection) and one HTTP
request to the real app served by uvicorn in a child process. Before measuring, the
API's page and total must equal the floor's page and ``count(*)`` of the filter.
Requests are sequential: this measures latency on an otherwise idle service, not
throughput.

The timed requests go through the standard library's ``http.client`` on one keep-alive
connection, the lightest Python client there is (as psycopg, with libpq underneath, is
for the floor): httpx spent about 1.5 ms of its own Python on each request, which is
the client's cost, not the API's. The reference GET /health is timed both ways.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import psycopg
from psycopg import sql

from bench import data
from bench.seed import BENCH_SECRET, SeedState
from bench.server import ApiProcess
from query import contacts as contact_queries
from query import keyset
from query.contacts import ContactFilter
from query.keyset import DEFAULT_SORT, Position, Sort
from service.auth import mint_token

FILTER_GOAL_MS = 50.0
SEARCH_GOAL_MS = 150.0
RATIO_GOAL = 1.5
MIN_SAMPLES = 20  # a case stops after max_case_s only once it has this many samples


class _RecordingPool:
    """Stands in for the pool: runs what ``page_contacts`` runs and records each statement."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.statements: list[tuple[Any, Any]] = []

    @contextmanager
    def connection(self) -> Iterator["_RecordingPool"]:
        yield self

    def transaction(self) -> Any:
        return self.conn.transaction()

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor:
        self.statements.append((query, params))
        return self.conn.execute(query, params)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "filter" (p95 goal 50 ms) or "search" (150 ms)
    params: dict[str, str]  # query string of GET /contacts
    flt: ContactFilter
    position: str = "first"  # page to fetch: "first", "middle" or "last" of the result; "cursor middle" and
    # "cursor last": the page after a cursor there (the page before it ends at that page's last contact)
    page_size: int = 25
    page: int = 1  # resolved from ``position`` once the total is known
    sort: str = DEFAULT_SORT
    after: Position | None = None  # a cursor page's start, resolved with its cursor from ``position``
    cursor: str | None = None

    @property
    def goal_ms(self) -> float:
        return SEARCH_GOAL_MS if self.kind == "search" else FILTER_GOAL_MS

    def query_string(self) -> dict[str, str]:
        sort = {} if self.sort == DEFAULT_SORT else {"sort": self.sort}
        if self.cursor is not None:
            return {**self.params, **sort, "pageSize": str(self.page_size), "cursor": self.cursor}
        return {**self.params, **sort, "page": str(self.page), "pageSize": str(self.page_size)}


def cases(state: SeedState) -> list[Case]:
    """The cases of the issue, scaled to the seeded size."""
    big_list, small_list = uuid.UUID(state.list_ids[0]), uuid.UUID(state.list_ids[-1])
    sample = data.phone_for(state.contacts // 3).e164  # digits of a real number
    digits = sample[-6:]
    return [
        Case("no filter", "filter", {}, ContactFilter()),
        Case("listId (10% list)", "filter", {"listId": str(big_list)}, ContactFilter(list_id=big_list)),
        Case("listId (1% list)", "filter", {"listId": str(small_list)}, ContactFilter(list_id=small_list)),
        Case("tags=vip", "filter", {"tags": "vip"}, ContactFilter(tags=["vip"])),
        Case("tags=vip,newsletter", "filter", {"tags": "vip,newsletter"}, ContactFilter(tags=["vip", "newsletter"])),
        Case("isOptedOut=true", "filter", {"isOptedOut": "true"}, ContactFilter(is_opted_out=True)),
        Case("isOptedOut=false", "filter", {"isOptedOut": "false"}, ContactFilter(is_opted_out=False)),
        Case("search name 'wanjiku' (4%)", "search", {"search": "wanjiku"}, ContactFilter(search="wanjiku")),
        Case("search name 'grace wanjiku'", "search", {"search": "grace wanjiku"},
             ContactFilter(search="grace wanjiku")),
        Case(f"search phone digits '{digits}'", "search", {"search": digits}, ContactFilter(search=digits)),
        Case("search phone start '0722 12'", "search", {"search": "0722 12"}, ContactFilter(search="0722 12")),
        Case("deep page (middle)", "filter", {}, ContactFilter(), position="middle"),
        Case("deep page (last)", "filter", {}, ContactFilter(), position="last"),
        Case("listId (10% list), last page", "filter", {"listId": str(big_list)}, ContactFilter(list_id=big_list),
             position="last"),
        # Middle pages of filters: isOptedOut and one tag have per-second counts (like no filter), a list
        # walks its memberships, a search has neither.
        Case("isOptedOut=false, middle page", "filter", {"isOptedOut": "false"}, ContactFilter(is_opted_out=False),
             position="middle"),
        Case("listId (10% list), middle page", "filter", {"listId": str(big_list)}, ContactFilter(list_id=big_list),
             position="middle"),
        Case("tags=vip, middle page", "filter", {"tags": "vip"}, ContactFilter(tags=["vip"]), position="middle"),
        Case("search name 'wanjiku', middle page", "search", {"search": "wanjiku"}, ContactFilter(search="wanjiku"),
             position="middle"),
        # Two filters at once: a list or a tag with isOptedOut (counted and walked like one
        # filter), and a list with a tag (neither: counted over the list's members).
        Case("listId (10%) + isOptedOut=false", "filter", {"listId": str(big_list), "isOptedOut": "false"},
             ContactFilter(list_id=big_list, is_opted_out=False)),
        Case("listId (10%) + isOptedOut=false, middle page", "filter",
             {"listId": str(big_list), "isOptedOut": "false"}, ContactFilter(list_id=big_list, is_opted_out=False),
             position="middle"),
        Case("tags=vip + isOptedOut=false, middle page", "filter", {"tags": "vip", "isOptedOut": "false"},
             ContactFilter(tags=["vip"], is_opted_out=False), position="middle"),
        Case("listId (10%) + tags=vip", "filter", {"listId": str(big_list), "tags": "vip"},
             ContactFilter(list_id=big_list, tags=["vip"])),
        # Cursor pages (keyset): the page after a cursor in the middle or at the end costs what the first does.
        *cursor_cases(big_list),
    ]


def cursor_cases(big_list: uuid.UUID) -> list[Case]:
    """First page, and the pages after a cursor in the middle and near the end, of each sort order."""
    out = []
    for label, params, flt, sort in (
            ("newest first", {}, ContactFilter(), DEFAULT_SORT),
            ("sort=lastName", {}, ContactFilter(), "lastName"),
            ("sort=-firstName", {}, ContactFilter(), "-firstName"),
            ("sort=phone", {}, ContactFilter(), "phone"),
            ("sort=-updatedAt", {}, ContactFilter(), "-updatedAt"),
            ("listId (10%) sort=createdAt", {"listId": str(big_list)}, ContactFilter(list_id=big_list), "createdAt"),
            ("tags=vip sort=-phone", {"tags": "vip"}, ContactFilter(tags=["vip"]), "-phone"),
            ("isOptedOut=false sort=lastName", {"isOptedOut": "false"}, ContactFilter(is_opted_out=False),
             "lastName")):
        for position in ("first", "cursor middle", "cursor last"):
            if position == "first" and sort == DEFAULT_SORT and not params:
                continue  # that is the "no filter" case
            out.append(Case(f"{label}, {position}", "filter", params, flt, position=position, sort=sort))
    return out


def true_total(conn: psycopg.Connection, account_id: uuid.UUID, flt: ContactFilter) -> int:
    """Ground truth for every check: count(*) of the filter over the contacts table."""
    where, params = flt.where(account_id)
    return conn.execute(sql.SQL("SELECT count(*) FROM contacts c WHERE {}").format(where), params).fetchone()[0]


def resolve_page(conn: psycopg.Connection, account_id: uuid.UUID, case: Case, http: Any = None) -> Case:
    """Turn the case's position into a page number (or a cursor), from the real total."""
    if case.position == "first":
        return case
    pages = max(1, -(-true_total(conn, account_id, case.flt) // case.page_size))
    page = pages - 1 if case.position.endswith("last") else max(1, pages // 2)
    if not case.position.startswith("cursor"):
        return replace(case, page=pages if case.position == "last" else page)
    # The cursor that the page before gives out, and the position it names, read directly.
    before = http.get("/api/v1/contacts", params=replace(case, page=page).query_string()).raise_for_status().json()
    found = keyset.sorted_page(_RecordingPool(conn), account_id, case.flt, Sort.parse(case.sort), 1,  # type: ignore[arg-type]
                               offset=page * case.page_size - 1)
    return replace(case, cursor=before["nextCursor"], after=found.next)


def expected(conn: psycopg.Connection, account_id: uuid.UUID, case: Case) -> tuple[list[tuple[Any, Any]], list[str], int]:
    """page_contacts' statements for the case, and the page (ids) and total every path must give."""
    recorder = _RecordingPool(conn)
    if case.sort == DEFAULT_SORT and case.cursor is None:
        page = contact_queries.page_contacts(recorder, account_id, case.flt, case.page, case.page_size)  # type: ignore[arg-type]
    else:
        page = keyset.sorted_page(recorder, account_id, case.flt, Sort.parse(case.sort), case.page_size,  # type: ignore[arg-type]
                                  after=case.after, offset=0 if case.cursor else (case.page - 1) * case.page_size)
    total = true_total(conn, account_id, case.flt)
    if page.total != total:
        raise SystemExit(f"{case.name}: page_contacts says {page.total:,} contacts, count(*) says {total:,}:"
                         " the read tables are stale (run with --reseed)")
    return recorder.statements, [str(c.id) for c in page.contacts], total


def run_floor(conn: psycopg.Connection, statements: list[tuple[Any, Any]]) -> list[str]:
    """The floor: page_contacts' own statements (its BEGIN and COMMIT too) replayed; returns the page's ids
    (a keyset page reads one more, to know whether another page follows)."""
    ids: list[str] = []
    for query, params in statements:
        cur = conn.execute(query, params)
        if cur.description is not None:
            rows = cur.fetchall()
            names = [column.name for column in cur.description]
            if "id" in names:  # the page (a deep search's page comes with its total first)
                at = names.index("id")
                ids += [str(r[at]) for r in rows if r[at] is not None]  # a sort by name reads two segments
    return ids


class LeanClient:
    """GET over one keep-alive ``http.client`` connection: the timed requests."""

    def __init__(self, base_url: str, token: str | None = None):
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        target = path + ("?" + urlencode(params) if params else "")
        try:
            self.conn.request("GET", target, headers=self.headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the idle connection (uvicorn's 5 s keep-alive), as it does while a
            # cursor case is set up by a slow deep offset page: connect again, once.
            self.conn.close()
            self.conn.connect()
            self.conn.request("GET", target, headers=self.headers)
            response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def explain(conn: psycopg.Connection, statements: list[tuple[Any, Any]]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every SELECT the case runs."""
    plans = []
    for query, params in statements:
        text = query.as_string(conn) if hasattr(query, "as_string") else str(query)
        if not text.lstrip().upper().startswith("SELECT"):
            continue
        plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + sql.SQL(text), params).fetchall()
        plans.append(text + "\n" + "\n".join(r[0] for r in plan))
    return plans


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "max_ms": round(max(ms), 2)}


def reference_http(get: Any, samples: int = 200) -> dict[str, float]:
    """GET /health: the HTTP round trip with no auth and no database, for scale (``get`` returns the status)."""
    for _ in range(20):
        get("/health")
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        status = get("/health")
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"GET /health answered {status}")
    return summary(times)


def measure(state: SeedState, url: str, samples: int, warmup: int, only: str | None, max_case_s: float,
            log: Any = print) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    account_id = uuid.UUID(state.account_id)
    token = mint_token(BENCH_SECRET, account_id, "bench", 7 * 86400)
    chosen = [c for c in cases(state) if not only or only.lower() in c.name.lower()]
    results = []
    with ApiProcess(url) as api, psycopg.connect(url, autocommit=True) as conn, \
            httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        lean = LeanClient(api.url, token)
        log(f"queries: API on {api.url} (pid {api.proc.pid}); {samples} samples per case after {warmup} warm-up")
        for case in chosen:
            case = resolve_page(conn, account_id, case, http)
            statements, ids, total = expected(conn, account_id, case)
            body = http.get("/api/v1/contacts", params=case.query_string()).raise_for_status().json()
            if body["total"] != total or [c["id"] for c in body["contacts"]] != ids or run_floor(conn, statements)[:case.page_size] != ids:
                raise SystemExit(f"{case.name}: the API, the floor and count(*) disagree"
                                 f" (API total {body['total']:,}, count(*) {total:,})")
            floor_ms: list[float] = []
            http_ms: list[float] = []
            deadline = time.monotonic() + max_case_s
            for i in range(warmup + samples):
                if len(http_ms) >= MIN_SAMPLES and time.monotonic() > deadline:
                    break  # slow case: enough samples to show how far it is from the goal
                # Alternate which goes first so neither always runs on a warmer cache.
                order = ("floor", "http") if i % 2 == 0 else ("http", "floor")
                for which in order:
                    started = time.perf_counter()
                    if which == "floor":
                        run_floor(conn, statements)
                    else:
                        status, content = lean.get("/api/v1/contacts", case.query_string())
                        if status != 200:
                            raise SystemExit(f"{case.name}: HTTP {status} {content[:200]!r}")
                    elapsed = (time.perf_counter() - started) * 1000
                    if i >= warmup:
                        (floor_ms if which == "floor" else http_ms).append(elapsed)
            floor, api_s = summary(floor_ms), summary(http_ms)
            result = {
                "case": case.name, "kind": case.kind, "query": case.query_string(), "total": total,
                "samples": len(http_ms), "floor": floor, "http": api_s,
                "ratio_p50": round(api_s["p50_ms"] / floor["p50_ms"], 2),
                "ratio_p95": round(api_s["p95_ms"] / floor["p95_ms"], 2),
                "goal_p95_ms": case.goal_ms,
            }
            result["meets_ratio"] = result["ratio_p50"] <= RATIO_GOAL and result["ratio_p95"] <= RATIO_GOAL
            result["meets_p95"] = api_s["p95_ms"] <= case.goal_ms
            result["plans"] = explain(conn, statements)
            results.append(result)
            log(f"queries: {case.name:<34} total {total:>9,}  floor p50 {floor['p50_ms']:8.2f} p95 {floor['p95_ms']:8.2f}"
                f"  http p50 {api_s['p50_ms']:8.2f} p95 {api_s['p95_ms']:8.2f} ms  x{result['ratio_p50']:.2f}/x{result['ratio_p95']:.2f}"
                f"  ({len(http_ms)} samples)")
        reference = {"http.client": reference_http(lambda path: lean.get(path)[0]),
                     "httpx": reference_http(lambda path: http.get(path).status_code)}
        lean.close()
        for client, ref in reference.items():
            log(f"queries: GET /health (no auth, no database) with {client}  p50 {ref['p50_ms']:.2f}"
                f" p95 {ref['p95_ms']:.2f} ms")
    return results, reference


def code_version() -> str:
    """The commit measured, marked dirty if service code differs from it (BENCH_CODE_VERSION overrides)."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return os.environ["BENCH_CODE_VERSION"]
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench", ":!docs"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" with uncommitted changes" if dirty else "")


def environment(conn_url: str) -> dict[str, Any]:
    with psycopg.connect(conn_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN"
                                     " ('shared_buffers', 'work_mem', 'effective_cache_size', 'random_page_cost',"
                                     " 'max_parallel_workers_per_gather', 'jit')").fetchall())
        sizes = dict(conn.execute("SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class"
                                  " WHERE relname IN ('contacts', 'contact_list_memberships', 'stored_events',"
                                  " 'contacts_events')").fetchall())
    return {"code": code_version(), "nproc": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "postgres": version,
            "postgres_settings": settings, "table_sizes": sizes}


def save_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


def results_document(command: str, state: SeedState, url: str, results: list[dict[str, Any]],
                     samples: int, warmup: int, **extra: Any) -> dict[str, Any]:
    return {**extra,
        "benchmark": "queries", "command": command,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "contacts": state.contacts, "samples_per_case": samples, "warmup_per_case": warmup,
        "environment": environment(url), "seed_via": state.via, "seed": state.stats,
        "goals": {"ratio_to_floor": RATIO_GOAL, "filter_p95_ms": FILTER_GOAL_MS, "search_p95_ms": SEARCH_GOAL_MS},
        "cases": results,
    }


def markdown_table(document: dict[str, Any]) -> str:
    env = document["environment"]
    seed = document["seed"]
    lines = [
        f"Command: `{document['command']}`  ",
        f"Date: {document['date']} · contacts: {document['contacts']:,} (one account) · nproc: {env['nproc']}"
        f" · code {env['code']} · PostgreSQL {env['postgres']} · Python {env['python']}"
        f" · up to {document['samples_per_case']} samples per case (after {document['warmup_per_case']} warm-up;"
        f" a case stops after {document['max_case_seconds']:.0f} s once it has {MIN_SAMPLES}), sequential requests,"
        f" page size 25",
        "",
    ]
    if seed.get("store_s"):
        lines += [f"Seeding ({document['seed_via']}): {document['contacts']:,} contacts stored as {seed['store_events']:,}"
                  f" events in {seed['store_s']} s ({seed['store_contacts_per_s']:,} contacts/s,"
                  f" {seed['store_events_per_s']:,} events/s); read tables built by `ProjectionRunner.catch_up` in"
                  f" {seed['project_s']} s ({seed['project_contacts_per_s']:,} contacts/s); VACUUM (ANALYZE)"
                  f" {seed.get('vacuum_s')} s.", ""]
    lines += ["| case | total | samples | floor p50 | floor p95 | HTTP p50 | HTTP p95 | ratio p50 / p95 | p95 goal | met |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in document["cases"]:
        met = []
        met.append("ratio ✓" if r["meets_ratio"] else "ratio ✗")
        met.append("p95 ✓" if r["meets_p95"] else "p95 ✗")
        lines.append(f"| {r['case']} | {r['total']:,} | {r['samples']} | {r['floor']['p50_ms']:.1f} | {r['floor']['p95_ms']:.1f}"
                     f" | {r['http']['p50_ms']:.1f} | {r['http']['p95_ms']:.1f} | ×{r['ratio_p50']:.2f} / ×{r['ratio_p95']:.2f}"
                     f" | {r['goal_p95_ms']:.0f} ms | {' '.join(met)} |")
    lines.append("")
    lines.append("Times in milliseconds, measured by the client (floor: psycopg in the benchmark process;"
                 " HTTP: the standard library's http.client on one keep-alive connection, against uvicorn in a"
                 " child process). The p95 goal is 50 ms for filter and page cases, 150 ms for free-text search;"
                 " the ratio goal is HTTP ≤ 1.5 × floor at p50 and at p95.")
    ref = document.get("reference_health")
    if ref and "p50_ms" in ref:  # results written before the two clients were timed
        ref = {"httpx": ref}
    for client, r in (ref or {}).items():
        lines.append(f"For scale, `GET /health` (no auth, no database) with {client}: p50 {r['p50_ms']:.1f} ms,"
                     f" p95 {r['p95_ms']:.1f} ms.")
    return "\n".join(lines)


def update_docs(path: Path, section: str, block: str) -> None:
    """Replace one generated section of docs/benchmarks.md, keeping the rest of the page."""
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    block = f"{begin}\n{block}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

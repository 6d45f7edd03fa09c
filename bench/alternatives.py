"""Evidence for proposed query changes: the current statements (the floor) against alternatives.

Everything here runs directly over psycopg on the seeded database, alternating the
statements ``query.contacts.page_contacts`` runs for a case with a proposed variant,
sample by sample, and checks that both give the same page (ids, in order) and the
total ``count(*)`` gives. One variant needs a table the service does not have yet,
built once here from the read tables: ``bench_list_order`` (memberships carrying the
contact's ``created_at``, as ``contact_list_memberships`` would with one more column
and an index).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from bench.queries import MIN_SAMPLES, Case, cases, expected, resolve_page, run_floor, summary
from bench.seed import SeedState
from query import contacts as contact_queries
from query.contacts import COLUMNS

Statements = list[tuple[Any, Any]]
Variant = Callable[[psycopg.Connection, uuid.UUID, Case, Statements], tuple[list[str], int]]

ISOLATION_SQL = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
COUNT_SQL = "SELECT count(*) FROM contacts c WHERE {}"


def _params(account_id: uuid.UUID, case: Case) -> tuple[sql.Composable, dict[str, Any]]:
    where, params = case.flt.where(account_id)
    params.update(limit=case.page_size, offset=(case.page - 1) * case.page_size)
    return where, params


def _total(conn: psycopg.Connection, account_id: uuid.UUID, case: Case, where: sql.Composable,
           params: dict[str, Any]) -> int:
    """The total as the service finds it: its counters when the filter has one, else count(*)."""
    counted = getattr(contact_queries, "_counted_total", None)
    total = counted(conn, account_id, case.flt) if counted else None
    if total is None:
        total = conn.execute(sql.SQL(COUNT_SQL).format(where), params).fetchone()[0]
    return total


def _ids(rows: list[tuple]) -> list[str]:
    return [str(r[0]) for r in rows]


DESC_PAGE_SQL = (
    "SELECT {} FROM contacts c JOIN (SELECT c.id FROM contacts c WHERE {} ORDER BY c.created_at DESC, c.id DESC"
    " LIMIT %(limit)s OFFSET %(offset)s) p ON p.id = c.id ORDER BY c.created_at DESC, c.id DESC")
ASC_PAGE_SQL = (
    "SELECT {} FROM contacts c JOIN (SELECT c.id FROM contacts c WHERE {} ORDER BY c.created_at, c.id"
    " LIMIT %(limit)s OFFSET %(offset)s) p ON p.id = c.id ORDER BY c.created_at, c.id")


def nearer_end(conn: psycopg.Connection, account_id: uuid.UUID, case: Case, _: Statements) -> tuple[list[str], int]:
    """The deferred join, walking the index from whichever end is nearer the page (total first)."""
    where, params = _params(account_id, case)
    with conn.transaction():
        conn.execute(ISOLATION_SQL)
        total = _total(conn, account_id, case, where, params)
        offset, limit = params["offset"], params["limit"]
        if offset * 2 <= total:
            rows = conn.execute(sql.SQL(DESC_PAGE_SQL).format(COLUMNS, where), params).fetchall()
        elif offset >= total:
            rows = []
        else:  # the same rows counted from the oldest end, then put back newest first
            params.update(offset=max(0, total - offset - limit), limit=min(limit, total - offset))
            rows = conn.execute(sql.SQL(ASC_PAGE_SQL).format(COLUMNS, where), params).fetchall()[::-1]
    return _ids(rows), total


LIST_ORDER_SETUP = """
CREATE TABLE IF NOT EXISTS bench_list_order AS
    SELECT m.list_id, c.created_at, c.id AS contact_id FROM contact_list_memberships m
    JOIN contacts c ON c.id = m.contact_id WHERE c.deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS bench_list_order_page ON bench_list_order (list_id, created_at DESC, contact_id DESC);
"""
LIST_ORDER_PAGE_SQL = (
    "SELECT {} FROM (SELECT o.contact_id FROM bench_list_order o WHERE o.list_id = %(list_id)s"
    " ORDER BY o.created_at DESC, o.contact_id DESC LIMIT %(limit)s OFFSET %(offset)s) k"
    " JOIN contacts c ON c.id = k.contact_id WHERE c.account_id = %(account)s AND c.deleted_at IS NULL"
    " ORDER BY c.created_at DESC, c.id DESC")


def list_order(conn: psycopg.Connection, account_id: uuid.UUID, case: Case, _: Statements) -> tuple[list[str], int]:
    """Memberships that carry the contact's sort key, paged by an index-only scan, then 25 rows fetched."""
    where, params = _params(account_id, case)
    with conn.transaction():
        conn.execute(ISOLATION_SQL)
        rows = conn.execute(sql.SQL(LIST_ORDER_PAGE_SQL).format(COLUMNS), params).fetchall()
        total = _total(conn, account_id, case, where, params)
    return _ids(rows), total


WINDOW_PAGE_SQL = ("SELECT {}, count(*) OVER () FROM contacts c WHERE {} ORDER BY c.created_at DESC, c.id DESC"
                   " LIMIT %(limit)s OFFSET %(offset)s")


def window_count(conn: psycopg.Connection, account_id: uuid.UUID, case: Case, _: Statements) -> tuple[list[str], int]:
    """One statement: the page and ``count(*) OVER ()`` (one pass over the matches instead of two)."""
    where, params = _params(account_id, case)
    rows = conn.execute(sql.SQL(WINDOW_PAGE_SQL).format(COLUMNS, where), params).fetchall()
    if rows:
        return _ids(rows), rows[0][-1]
    return [], conn.execute(sql.SQL(COUNT_SQL).format(where), params).fetchone()[0]


def _list_only(case: Case) -> bool:
    f = case.flt
    return f.list_id is not None and not f.tags and f.is_opted_out is None and not f.search


def _deep(case: Case) -> bool:
    return case.position != "first" and not case.flt.search


def all_proposed(conn: psycopg.Connection, account_id: uuid.UUID, case: Case,
                 statements: Statements) -> tuple[list[str], int]:
    """Both structural proposals: list order for list pages, nearer end for other deep pages, else as today."""
    if _list_only(case):
        return list_order(conn, account_id, case, statements)
    if _deep(case):
        return nearer_end(conn, account_id, case, statements)
    return run_floor(conn, statements), -1  # unchanged: the total is not re-derived here


#: name -> (variant, the cases it is meant for)
VARIANTS: dict[str, tuple[Variant, Callable[[Case], bool]]] = {
    "nearer end": (nearer_end, _deep),
    "list order": (list_order, _list_only),
    "window count": (window_count, lambda c: bool(c.flt.search) or len(c.flt.tags) > 1),
    "all proposed": (all_proposed, lambda c: True),
}


def measure(state: SeedState, url: str, samples: int, warmup: int, only: str | None, max_case_s: float,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    account_id = uuid.UUID(state.account_id)
    results = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_list_order")  # built afresh from the current read tables
        conn.execute(LIST_ORDER_SETUP)
        conn.execute("VACUUM (ANALYZE) bench_list_order")
        for case in cases(state):
            if only and only.lower() not in case.name.lower():
                continue
            case = resolve_page(conn, account_id, case)
            statements, want_ids, want_total = expected(conn, account_id, case)
            for name, (variant, meant_for) in VARIANTS.items():
                if not meant_for(case):
                    continue
                got_ids, got_total = variant(conn, account_id, case, statements)
                if got_ids != want_ids or got_total not in (want_total, -1):
                    raise SystemExit(f"{case.name}: variant {name!r} gives another page or total")
                current_ms: list[float] = []
                variant_ms: list[float] = []
                deadline = time.monotonic() + max_case_s
                for i in range(warmup + samples):
                    if len(current_ms) >= MIN_SAMPLES and time.monotonic() > deadline:
                        break
                    for is_current in ((True, False) if i % 2 == 0 else (False, True)):
                        started = time.perf_counter()
                        if is_current:
                            run_floor(conn, statements)
                        else:
                            variant(conn, account_id, case, statements)
                        elapsed = (time.perf_counter() - started) * 1000
                        if i >= warmup:
                            (current_ms if is_current else variant_ms).append(elapsed)
                current, proposed = summary(current_ms), summary(variant_ms)
                results.append({"case": case.name, "variant": name, "doc": (variant.__doc__ or "").strip(),
                                "total": want_total, "samples": len(current_ms), "current": current,
                                "proposed": proposed, "speedup_p95": round(current["p95_ms"] / proposed["p95_ms"], 2)})
                log(f"alternatives: {case.name:<34} {name:<14} current p50 {current['p50_ms']:8.2f}"
                    f" p95 {current['p95_ms']:8.2f}  proposed p50 {proposed['p50_ms']:8.2f}"
                    f" p95 {proposed['p95_ms']:8.2f} ms")
    return results


def markdown_table(document: dict[str, Any]) -> str:
    lines = [f"Command: `{document['command']}`  ",
             f"Date: {document['date']} · contacts: {document['contacts']:,} · nproc: {document['environment']['nproc']}"
             f" · up to {document['samples_per_case']} samples per case and variant (at most"
             f" {document['max_case_seconds']:.0f} s once it has {MIN_SAMPLES}), direct SQL (no HTTP)", "",
             "| case | variant | total | samples | current p50 | current p95 | proposed p50 | proposed p95 | p95 speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in document["cases"]:
        lines.append(f"| {r['case']} | {r['variant']} | {r['total']:,} | {r['samples']} | {r['current']['p50_ms']:.1f}"
                     f" | {r['current']['p95_ms']:.1f} | {r['proposed']['p50_ms']:.1f} | {r['proposed']['p95_ms']:.1f}"
                     f" | ×{r['speedup_p95']:.1f} |")
    lines += ["", "Variants: " + "; ".join(f"**{name}**: {(v.__doc__ or '').strip()}"
                                          for name, (v, _) in VARIANTS.items())]
    return "\n".join(lines)

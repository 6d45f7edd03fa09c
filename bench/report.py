"""Markdown from ``bench/results/suite.json``: the summary, the docs section and the README table.

    python -m bench report        # rewrite bench/results/suite.md and the generated doc sections

Every figure is shown with the machine's core count and the load average while its part
ran, and beside its floor and goal where it has one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
SUITE_JSON = ROOT / "bench" / "results" / "suite.json"

IMPORT_GOAL_ROWS_S = 15_000
IMPORT_GOAL_FLOOR_RATIO = 0.7
EXPORT_GOAL_ROWS_S = 50_000
RSS_GOAL_IMPORT_MB = 300
RSS_GOAL_EXPORT_MB = 200
ROLES = (("api", "API"), ("worker", "worker"), ("relay", "relay"), ("postgresql", "PostgreSQL (PSS)"),
         ("nats", "NATS"), ("load generator", "locust"))


def code_version() -> str:
    from bench.queries import code_version as version

    return version()


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


def _ratio(value: float | None, floor: float | None) -> str:
    return f"×{value / floor:.2f}" if value and floor else "—"


def _machine(entry: dict[str, Any]) -> str:
    load = entry["load_average"]
    text = (f"{entry['cores']} cores, load average {load['start'][0]:.2f} at the start, up to {load['max_1m']:.2f}"
            f" (mean {load['mean_1m']:.2f}) while it ran")
    others = (entry.get("cpu") or {}).get("cores_busy", {}).get("other processes")
    if others is not None:
        text += f"; processes outside the benchmark kept {others:.2f} cores busy"
    return text


def _heading(title: str, entry: dict[str, Any]) -> list[str]:
    return [f"#### {title}", "",
            f"`{entry['command']}` (size {entry['size']}, {entry['date']}, code {entry.get('code', '?')},"
            f" {entry.get('seconds', '?')} s) · {_machine(entry)}", ""]


# -- imports ----------------------------------------------------------------------------------

def _floor_phones(result: dict[str, Any]) -> str:
    """How the floor parsed phones: phonenumbers since 2026-12-06, the service's parser in runs before it."""
    return "phones parsed by phonenumbers" if result.get("phones") == "phonenumbers" \
        else "phones parsed by the service's parser"


def _imports(entry: dict[str, Any]) -> list[str]:
    raw = entry["raw"]
    floor = raw["floor_parse_and_copy"]["rows_per_s"]
    lines = _heading(f"Imports and exports ({raw['rows']:,} rows per file)", entry)
    lines += ["| measure | rows/s | × floor | goal | met |", "|---|---:|---:|---|---|",
              f"| floor: {_floor_phones(raw['floor_parse_and_copy'])}, `COPY` into a table with a unique phone"
              f" | {_n(floor)} | ×1.00 | — | — |"]
    for key, label in (("floor_parse_and_copy_indexed", "the same into the CRUD floor's contacts table (GIN on tags,"
                                                        " trigram on the name)"),
                       ("floor_service_parser", "a stricter floor: phones parsed by the service's own parser, `COPY`"
                                                " into a table with a unique phone"),
                       ("floor_service_parser_indexed", "the stricter floor into the CRUD floor's contacts table")):
        if key in raw:
            lines.append(f"| {label} | {_n(raw[key]['rows_per_s'])} | {_ratio(raw[key]['rows_per_s'], floor)} | — | — |")
    for key, label in (("csv_import", "CSV import, request → response"), ("json_import", "JSON bulk import"),
                       ("xlsx_import", "XLSX import")):
        if key not in raw:
            continue
        rate = raw[key]["rows_per_s"]
        if key == "xlsx_import":
            goal, ok = "within 2 × of CSV", rate * 2 >= raw["csv_import"]["rows_per_s"]
        else:
            goal = f"≥ {IMPORT_GOAL_ROWS_S:,} and ≥ {IMPORT_GOAL_FLOOR_RATIO} × floor"
            ok = rate >= IMPORT_GOAL_ROWS_S and rate >= IMPORT_GOAL_FLOOR_RATIO * floor
        lines.append(f"| {label} | {_n(rate)} | {_ratio(rate, floor)} | {goal} | {_met(ok)} |")
        if "rows_per_s_to_nats" in raw[key]:
            to_nats = raw[key]["rows_per_s_to_nats"]
            lines.append(f"| {label.split(',')[0]} → last message on NATS | {_n(to_nats)} | {_ratio(to_nats, floor)}"
                         " | — | — |")
    if "memory_import" in raw:
        m = raw["memory_import"]
        lines.append(f"| {m['rows']:,}-row CSV import | {_n(m['rows_per_s'])} | — | — | — |")
    for key, label in (("csv_export", "CSV export"), ("json_export", "JSON export"),
                       ("memory_export", "CSV export of the memory run")):
        if key in raw:
            rate = raw[key]["rows_per_s"]
            ok = rate >= EXPORT_GOAL_ROWS_S if key != "json_export" else None
            goal = f"≥ {EXPORT_GOAL_ROWS_S:,}" if ok is not None else "—"
            lines.append(f"| {label} ({raw[key]['rows']:,} rows) | {_n(rate)} | — | {goal} | {_met(ok)} |")
    lines.append("")
    rss = []
    if "memory_import" in raw:
        peak = raw["memory_import"]["peak_rss_mb"]
        each = ", ".join(f"{role} {_n(mb)} MB" for role, mb in peak.items())
        rss.append(f"the {raw['memory_import']['rows']:,}-row import peaked at {each} (goal < {RSS_GOAL_IMPORT_MB} MB"
                   f" each: {_met(max(peak.values()) < RSS_GOAL_IMPORT_MB)})")
        after = raw.get("memory_export", {}).get("peak_rss_mb_after", {})
        if after:
            rss.append(f"the API after exporting it {_n(after.get('api'))} MB (goal < {RSS_GOAL_EXPORT_MB} MB:"
                       f" {_met(after.get('api', 0) < RSS_GOAL_EXPORT_MB)})")
    elif "service_peak_rss_mb" in raw:
        peak = raw["service_peak_rss_mb"]
        each = ", ".join(f"{role} {_n(mb)} MB" for role, mb in peak.items())
        rss.append(f"over these imports and exports the peaks were {each} (import goal < {RSS_GOAL_IMPORT_MB} MB:"
                   f" {_met(max(peak.values()) < RSS_GOAL_IMPORT_MB)}; the memory goals are for the 1M-row run"
                   " of the full size)")
    if rss:
        lines += ["Memory (bench/imports.py's own reading): " + "; ".join(rss) + ".", ""]
    return lines


# -- queries ----------------------------------------------------------------------------------

def _queries(entry: dict[str, Any]) -> list[str]:
    raw = entry["raw"]
    lines = _heading(f"GET /contacts with {raw['contacts']:,} contacts in one account", entry)
    lines += ["| case | total | HTTP p50 | HTTP p95 | SQL p50 | SQL p95 | HTTP ÷ SQL (p50 / p95) | p95 goal | met |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in raw["cases"]:
        met = c["meets_p95"] and c["meets_ratio"]
        lines.append(f"| {c['case']} | {c['total']:,} | {c['http']['p50_ms']:.1f} | {c['http']['p95_ms']:.1f}"
                     f" | {c['floor']['p50_ms']:.1f} | {c['floor']['p95_ms']:.1f} | ×{c['ratio_p50']:.2f} /"
                     f" ×{c['ratio_p95']:.2f} | ≤ {c['goal_p95_ms']:.0f} ms and ≤ ×1.5 | {_met(met)}"
                     f"{'' if met else ' (' + ('p95 ✓' if c['meets_p95'] else 'p95 ✗') + ', ' + ('ratio ✓' if c['meets_ratio'] else 'ratio ✗') + ')'} |")
    lines += ["", f"Milliseconds, {raw['samples_per_case']} sequential requests per case (page size 25): the SQL"
              " column is the same statements run directly over one psycopg connection (the floor).", ""]
    return lines


# -- writes -----------------------------------------------------------------------------------

def _writes(entry: dict[str, Any]) -> list[str]:
    raw = entry["raw"]
    lines = _heading(f"Single-contact writes: {raw['users']} concurrent clients for {raw['seconds']:g} s", entry)
    base = (raw.get("baseline_1_client") or {}).get("endpoints", {})
    lines += ["| request | per s | p50 | p95 | p99 | max | failures | 1 client alone: per s, p50 / p95 | p95 × 1 client |",
              "|---|---:|---:|---:|---:|---:|---|---:|---:|"]

    def alone(s: dict[str, Any] | None, p95: float) -> str:
        if not s or not s.get("count"):
            return "— | —"
        return f"{s['per_s']:.1f}, {s['p50_ms']:.1f} / {s['p95_ms']:.1f} | ×{p95 / s['p95_ms']:.1f}"

    for name, s in raw["endpoints"].items():
        if s.get("count"):
            failures = ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "0"
            lines.append(f"| `{name}` | {s['per_s']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f}"
                         f" | {s['max_ms']:.1f} | {failures} | {alone(base.get(name), s['p95_ms'])} |")
    w = raw["writes"]
    lines.append(f"| all three writes | {w['per_s']:.1f} | {w['p50_ms']:.1f} | {w['p95_ms']:.1f} | {w['p99_ms']:.1f}"
                 f" | {w['max_ms']:.1f} | | {alone((raw.get('baseline_1_client') or {}).get('writes'), w['p95_ms'])} |")
    ryw = raw["read_your_writes"]
    seen = ryw["post_to_seen_ms"]
    lag_p, lag_r, nats = raw["projection_lag"], raw["relay_lag"], raw["relay_event_to_nats_ms"]
    lines += ["", "Milliseconds, measured by the client (locust, headless, in its own process on the same"
              " machine). Each client creates a contact, reads it back, updates it and adds it to a list, with"
              " no pause.", "",
              "| read-your-writes and lag | p50 | p95 | p99 / max |", "|---|---:|---:|---:|",
              f"| `POST /contacts` answered (the write; projections already applied) | {ryw['post_ms']['p50_ms']:.1f} ms"
              f" | {ryw['post_ms']['p95_ms']:.1f} ms | {ryw['post_ms']['p99_ms']:.1f} / {ryw['post_ms']['max_ms']:.1f} ms |",
              f"| then `GET /contacts/{{id}}` (saw it: {ryw['visible']:,} of {ryw['cycles']:,})"
              f" | {ryw['get_after_post_ms']['p50_ms']:.1f} ms | {ryw['get_after_post_ms']['p95_ms']:.1f} ms"
              f" | {ryw['get_after_post_ms']['p99_ms']:.1f} / {ryw['get_after_post_ms']['max_ms']:.1f} ms |",
              f"| write sent → read that sees it | {seen['p50_ms']:.1f} ms | {seen['p95_ms']:.1f} ms"
              f" | {seen['p99_ms']:.1f} / {seen['max_ms']:.1f} ms |",
              f"| projection lag behind the event store (sampled every 50 ms) | {lag_p['events_p50']} events,"
              f" {lag_p['ms_p50']} ms | {lag_p['events_p95']} events, {lag_p['ms_p95']} ms | max {lag_p['events_max']}"
              f" events, {lag_p['ms_max']} ms |",
              f"| relay lag behind the event store (sampled every 50 ms) | {lag_r['events_p50']} events,"
              f" {lag_r['ms_p50']} ms | {lag_r['events_p95']} events, {lag_r['ms_p95']} ms | max {lag_r['events_max']}"
              f" events, {lag_r['ms_max']} ms |"]
    if nats.get("count"):
        lines.append(f"| event time → stored in JetStream ({nats['count']:,} messages) | {nats['p50_ms']:.1f} ms"
                     f" | {nats['p95_ms']:.1f} ms | {nats['p99_ms']:.1f} / {nats['max_ms']:.1f} ms |")
    lines += ["", f"{raw['events_stored']:,} events stored during the load ({raw['events_per_s']:,.1f}/s); the worker"
              f" had projected and relayed all of them {_n(raw['drain_after_load_s'], 2)} s after the load stopped."
              + (f" **{raw['rate_limited_responses']} responses were 429** (rate limit not disabled)."
                 if raw.get("rate_limited_responses") else ""), ""]
    waiting, active = raw.get("backends_waiting_for_a_lock"), raw.get("backends_active")
    if waiting and active:
        lines.append(f"PostgreSQL backends (sampled with the lag): waiting for a lock p50 {waiting['p50']}, p95"
                     f" {waiting['p95']}, max {waiting['max']}; running a statement p50 {active['p50']}, p95"
                     f" {active['p95']}, max {active['max']}.")
        lines.append("")
    cpu = raw.get("cpu_during_load")
    if cpu:
        busy = ", ".join(f"{role} {v:.2f}" for role, v in sorted(cpu["cores_busy"].items(), key=lambda kv: -kv[1]))
        lines += [f"CPU during the load, in cores kept busy (of {entry['cores']}): {busy}.", ""]
    return lines


# -- memory -----------------------------------------------------------------------------------

def _memory(parts: dict[str, Any]) -> list[str]:
    roles = [(role, label) for role, label in ROLES if any(role in e["peak_rss_mb"] for e in parts.values())]
    lines = ["#### Peak memory of each process (MB)", "",
             "Sampled every second while each part ran: `VmHWM` (the kernel's peak resident size) for the Python"
             " processes and NATS; for PostgreSQL the largest sum of PSS over the postmaster and its backends"
             " (shared buffers counted once).", "",
             "| part | " + " | ".join(label for _, label in roles) + " | cores · load (max) |",
             "|---|" + "---:|" * len(roles) + "---|"]
    for name in ("imports", "queries", "writes"):
        if name in parts:
            e = parts[name]
            peaks = e["peak_rss_mb"]
            lines.append(f"| {name} ({e['size']}) | " + " | ".join(_n(peaks.get(role)) for role, _ in roles)
                         + f" | {e['cores']} · {e['load_average']['max_1m']:.2f} |")
    lines += ["", f"Goals: below {RSS_GOAL_IMPORT_MB} MB per process while importing, {RSS_GOAL_EXPORT_MB} MB while"
              " exporting (the imports part's API and worker)." , ""]
    return lines


def summary_markdown(suite: dict[str, Any]) -> str:
    parts = suite.get("parts", {})
    lines = [f"Results: `bench/results/suite.json` (updated {suite.get('updated', '?')}). Each part says the command"
             " and size that produced it.", ""]
    for name, render in (("imports", _imports), ("queries", _queries), ("writes", _writes)):
        if name in parts:
            lines += render(parts[name])
    if parts:
        lines += _memory(parts)
    return "\n".join(lines).rstrip() + "\n"


# -- README -----------------------------------------------------------------------------------

def readme_table(suite: dict[str, Any]) -> str:
    parts = suite.get("parts", {})
    rows = ["| figure | measured | goal | met | cores · load |", "|---|---:|---|---|---|"]

    def ctx(e: dict[str, Any]) -> str:
        return f"{e['cores']} · {e['load_average']['mean_1m']:.1f}"

    if "imports" in parts:
        e, raw = parts["imports"], parts["imports"]["raw"]
        floor = raw["floor_parse_and_copy"]["rows_per_s"]
        csv_rate = raw["csv_import"]["rows_per_s"]
        rows.append(f"| CSV import, {raw['rows']:,} rows | {csv_rate:,} rows/s ({_ratio(csv_rate, floor)} the {floor:,}"
                    f" rows/s COPY floor) | ≥ 15,000 rows/s and ≥ 0.7 × floor | "
                    f"{_met(csv_rate >= IMPORT_GOAL_ROWS_S and csv_rate >= IMPORT_GOAL_FLOOR_RATIO * floor)} | {ctx(e)} |")
        export = raw["csv_export"]["rows_per_s"]
        rows.append(f"| CSV export | {export:,} rows/s | ≥ 50,000 rows/s | {_met(export >= EXPORT_GOAL_ROWS_S)}"
                    f" | {ctx(e)} |")
    if "queries" in parts:
        e, raw = parts["queries"], parts["queries"]["raw"]
        cases = raw["cases"]
        filters = [c for c in cases if c["kind"] == "filter"]
        worst = max(filters, key=lambda c: c["http"]["p95_ms"]) if filters else None
        meets = sum(1 for c in cases if c["meets_p95"])
        ratio = sum(1 for c in cases if c["meets_ratio"])
        if worst:
            rows.append(f"| GET /contacts, {raw['contacts']:,} contacts | p95 ≤ goal in {meets} of {len(cases)} cases,"
                        f" ≤ 1.5 × SQL in {ratio}; worst filter p95 {worst['http']['p95_ms']:.0f} ms ({worst['case']})"
                        f" | p95 ≤ 50 ms (search 150) and ≤ 1.5 × SQL | {_met(meets == len(cases) and ratio == len(cases))}"
                        f" | {ctx(e)} |")
    if "writes" in parts:
        e, raw = parts["writes"], parts["writes"]["raw"]
        post = raw["endpoints"].get("POST /contacts", {})
        w, ryw = raw["writes"], raw["read_your_writes"]
        base = raw.get("baseline_1_client") or {}
        base_post, base_w = base.get("endpoints", {}).get("POST /contacts", {}), base.get("writes", {})

        def vs_alone(loaded: dict[str, Any], alone: dict[str, Any]) -> str:
            if not alone.get("p95_ms"):
                return ""
            return (f" (1 client alone: {alone['per_s']:,.0f}/s, p95 {alone['p95_ms']:,.0f} ms;"
                    f" p95 ×{loaded['p95_ms'] / alone['p95_ms']:.1f})")

        rows.append(f"| `POST /contacts`, {raw['users']} clients | {post.get('per_s', 0):,.0f}/s; p50 / p95 / p99"
                    f" {post.get('p50_ms', 0):,.0f} / {post.get('p95_ms', 0):,.0f} / {post.get('p99_ms', 0):,.0f} ms"
                    f"{vs_alone(post, base_post)} | — | — | {ctx(e)} |")
        rows.append(f"| all single writes (create, PATCH, list add) | {w['per_s']:,.0f}/s; p50 / p95 / p99"
                    f" {w['p50_ms']:,.0f} / {w['p95_ms']:,.0f} / {w['p99_ms']:,.0f} ms{vs_alone(w, base_w)}"
                    f" | — | — | {ctx(e)} |")
        seen = ryw["post_to_seen_ms"]
        rows.append(f"| write → read that sees it | p50 / p95 {seen['p50_ms']:,.0f} / {seen['p95_ms']:,.0f} ms; seen at once"
                    f" {ryw['visible']:,} of {ryw['cycles']:,} | every read sees it | {_met(ryw['visible'] == ryw['cycles'])}"
                    f" | {ctx(e)} |")
        lag, nats = raw["relay_lag"], raw["relay_event_to_nats_ms"]
        rows.append(f"| relay lag under that load | p95 {lag['events_p95']} events / {lag['ms_p95']} ms (max"
                    f" {lag['events_max']} / {lag['ms_max']} ms); event → JetStream p95 {nats.get('p95_ms', 0):,.0f} ms"
                    f" | — | — | {ctx(e)} |")
    peaks: dict[str, float] = {}
    for e in parts.values():
        for role, mb in e["peak_rss_mb"].items():
            peaks[role] = max(peaks.get(role, 0), mb)
    if peaks:
        rows.append("| peak RSS, any part | " + ", ".join(f"{label.split(' ')[0]} {peaks[role]:.0f} MB"
                                                        for role, label in ROLES if role in peaks)
                    + " | import < 300 MB, export < 200 MB (see docs) | — | — |")
    runs: dict[str, list[str]] = {}
    for name, e in parts.items():
        runs.setdefault(e["command"], []).append(f"{name} {e['date'][:16].replace('T', ' ')} UTC")
    produced = "; ".join(f"`{command}` ({', '.join(names)})" for command, names in runs.items())
    return "\n".join(rows) + "\n\nProduced by " + produced + "."


def update_docs(suite: dict[str, Any]) -> None:
    from bench.queries import update_docs as replace_section

    replace_section(DOCS, "suite", summary_markdown(suite).rstrip())
    replace_section(README, "suite", readme_table(suite))


def main(argv: list[str] | None = None) -> None:
    suite = json.loads(SUITE_JSON.read_text())
    markdown = summary_markdown(suite)
    (SUITE_JSON.parent / "suite.md").write_text(markdown)
    update_docs(suite)
    print(markdown)


if __name__ == "__main__":
    main(sys.argv[1:])

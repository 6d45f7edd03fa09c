"""Single writes against the plain CRUD floor, side by side in one run: the write path's cost.

    python -m bench writes --floor [--connections 32] [--seconds 15] [--rounds 2]

Starts one embedded PostgreSQL (with ``pg_stat_statements``) and, against it, the
real service (``contacts serve``: API, worker, embedded NATS) and the floor
(``bench/floor.py``, in a database of its own on the same server). The same load
generator (wrk, C, a few percent of a core) sends ``POST /api/v1/contacts`` with a
new Kenyan number per request to each, in alternating runs of the same length and
the same connections. Then, on the service alone: one connection (latency without
queueing), ``PATCH /contacts/{id}`` and ``POST /contact-lists/{id}/contacts`` at the
same connections, the SQL statements per create (``pg_stat_statements`` calls over
the creates), and the share of busy backends waiting for a lock (``pg_stat_activity``
sampled every 20 ms during a create run).

Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.procs import PeakSampler, Sampler
from bench.server import ROOT, ServeProcess, preload_pg_stat_statements, wait_healthy
from service.embedded import EmbeddedPostgres, free_port, stop_process

DATA = ROOT / "bench" / ".data" / "suite" / "write-floor"
SECRET = "bench-secret-0123456789-0123456789-abcdef"
FLOOR_DB = "floor"

# Each wrk thread learns its number (tid), so that its requests differ from the other threads'.
THREAD_ID_LUA = r"""
local threads = 0
local counter = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  tid = tonumber(tid or 0)
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
end
"""

# Per wrk thread and per run, numbers no other request uses: +2547<prefix digit><7 digits>.
CREATE_LUA = THREAD_ID_LUA + r"""
local base = tonumber(os.getenv("BENCH_BASE") or "0")
function request()
  counter = counter + 1
  local serial = base + tid * 100000 + counter
  local body = string.format('{"firstName":"Amina","lastName":"Otieno","phone":"+2547%d%07d","tags":["vip","nairobi"]}',
                             1 + math.floor(serial / 10000000) % 2, serial % 10000000)
  return wrk.format("POST", "/api/v1/contacts", nil, body)
end
"""

# Each request names one contact (ids from a file, one per line), in turn: PATCH it, or add it to a list.
IDS_LUA = THREAD_ID_LUA + r"""
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local mode = os.getenv("BENCH_MODE")
local list = os.getenv("BENCH_LIST")
function request()
  counter = counter + 1
  local id = ids[((counter * nthreads + tid) % #ids) + 1]
  if mode == "patch" then
    return wrk.format("PATCH", "/api/v1/contacts/" .. id, nil, '{"firstName":"Baraka","tags":["vip","b2b"]}')
  end
  return wrk.format("POST", "/api/v1/contact-lists/" .. list .. "/contacts", nil, '{"contactIds":["' .. id .. '"]}')
end
"""

def wrk(url: str, script: Path, connections: int, seconds: float, headers: dict[str, str],
        env: dict[str, str]) -> dict[str, Any]:
    """One wrk run; requests/s, latency percentiles (ms) and non-2xx answers, parsed from its report."""
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", **env, "BENCH_THREADS": str(threads)}).stdout
    result: dict[str, Any] = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        match = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        result[f"p{pct}_ms"] = round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(bad.group(1)) if bad else 0
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return result


class ActivitySampler(Sampler):
    """Every 20 ms: backends of the database running a statement, and those among them waiting for a lock."""

    def __init__(self, database_url: str):
        super().__init__("activity-sampler", join_s=5)
        self.database_url = database_url
        self.active = self.waiting = 0

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                active, waiting = conn.execute(
                    "SELECT count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state = 'active'"
                    " AND wait_event_type = 'Lock') FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()").fetchone()
                self.active += active
                self.waiting += waiting
                self._stop.wait(0.02)

    @property
    def lock_wait_share(self) -> float:
        return round(self.waiting / self.active, 3) if self.active else 0.0


def statements_per_write(database_url: str, writes: int, since: dict[str, int]) -> dict[str, Any]:
    """Calls per write of every statement run since ``since`` (pg_stat_statements of the service's database)."""
    now = _statement_calls(database_url)
    # The benchmark's own sampling queries run on the same database: not the service's.
    delta = {q: n - since.get(q, 0) for q, n in now.items()
             if n - since.get(q, 0) > 0 and "pg_stat_acti" not in q and "pg_stat_statements" not in q}
    per_write = {q: round(n / writes, 2) for q, n in sorted(delta.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(delta.values()) / writes, 2), "by_statement": dict(list(per_write.items())[:20])}


def _statement_calls(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120), calls FROM pg_stat_statements"
                            " s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()").fetchall()
    calls: dict[str, int] = {}
    for query, n in rows:
        calls[query] = calls.get(query, 0) + n
    return calls


def _postgres(data_dir: Path) -> EmbeddedPostgres:
    """The embedded server, restarted once with pg_stat_statements preloaded."""
    pg = preload_pg_stat_statements(data_dir)
    pg.start()
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (FLOOR_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{FLOOR_DB}"')
    with psycopg.connect(_admin(pg, pg.url.rsplit("/", 1)[1]), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # in the service's database
    return pg


def _admin(pg: EmbeddedPostgres, database: str) -> str:
    """The superuser on ``database`` (setting the server up; the floor runs as it too)."""
    return pg.admin_url.rsplit("/", 1)[0] + "/" + database


def run(connections: int, seconds: float, rounds: int, log: Any = print) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("writes --floor needs wrk (Debian: apt-get install wrk)")
    from service.auth import mint_token

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    pg = _postgres(DATA)
    floor_url_db = _admin(pg, FLOOR_DB)
    scripts = DATA / "scripts"
    scripts.mkdir()
    (scripts / "create.lua").write_text(CREATE_LUA)
    (scripts / "ids.lua").write_text(IDS_LUA)
    result: dict[str, Any] = {"connections": connections, "seconds": seconds, "rounds": rounds, "runs": [],
                              **_context()}
    floor_port = free_port()
    from bench import floor

    floor.prepare(floor_url_db)
    floor_proc = subprocess.Popen([sys.executable, "-m", "bench", "floor-serve", "--database-url", floor_url_db,
                                   "--port", str(floor_port)], cwd=ROOT)
    try:
        with ServeProcess(DATA, SECRET) as svc:
            floor_url = f"http://127.0.0.1:{floor_port}"
            wait_healthy_floor(floor_proc, floor_url)
            account = uuid.uuid4()
            token = mint_token(SECRET, account, "bench", ttl_s=3600)
            auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            plain = {"Content-Type": "application/json"}
            base = 0
            targets = {"floor": (floor_url, plain), "service": (svc.url, auth)}
            # Warm both (connections, caches) before measuring.
            for name, (url, headers) in targets.items():
                wrk(url, scripts / "create.lua", connections, 3, headers, {"BENCH_BASE": str(base)})
                base += 1_000_000
            service_writes = 0
            calls_before = _statement_calls(svc.database_url)
            sampler_shares = []
            for r in range(rounds):
                order = ["floor", "service"] if r % 2 == 0 else ["service", "floor"]
                for name in order:
                    url, headers = targets[name]
                    with ActivitySampler(svc.database_url) as sampler, PeakSampler([DATA], interval_s=0.5) as procs:
                        run_ = wrk(url, scripts / "create.lua", connections, seconds, headers,
                                   {"BENCH_BASE": str(base)})
                    cpu = procs.cpu()["seconds"]
                    run_["cpu_ms_per_write"] = {role: round(s_ * 1000 / max(run_["requests"], 1), 3)
                                                for role, s_ in cpu.items() if s_ > 0}
                    if name == "service":
                        run_["lock_wait_share"] = sampler.lock_wait_share
                        sampler_shares.append(sampler.lock_wait_share)
                        service_writes += run_["requests"] - run_["non_2xx"]
                    base += 1_000_000
                    run_.update(target=name, round=r + 1)
                    result["runs"].append(run_)
                    log(f"writes --floor: round {r + 1} {name}: {run_['requests_per_s']:,.0f} writes/s,"
                        f" p50 {run_['p50_ms']} ms, p99 {run_['p99_ms']} ms, non-2xx {run_['non_2xx']}")
            result["statements_per_create"] = statements_per_write(svc.database_url, service_writes, calls_before)
            for name in targets:
                runs = [x for x in result["runs"] if x["target"] == name]
                result[name] = {k: round(sum(x[k] for x in runs) / len(runs), 2)
                                for k in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms")}
            result["ratio"] = round(result["service"]["requests_per_s"] / result["floor"]["requests_per_s"], 3)
            result["service"]["lock_wait_share"] = round(sum(sampler_shares) / len(sampler_shares), 3)
            one = {}
            for name, (url, headers) in targets.items():
                one[name] = wrk(url, scripts / "create.lua", 1, min(seconds, 10), headers, {"BENCH_BASE": str(base)})
                base += 1_000_000
            result["one_client"] = one
            with psycopg.connect(svc.database_url) as conn:
                ids = [str(r[0]) for r in conn.execute("SELECT id FROM contacts WHERE account_id = %s LIMIT 200000",
                                                       (account,))]
            (scripts / "ids.txt").write_text("\n".join(ids) + "\n")
            list_id = httpx.post(f"{svc.url}/api/v1/contact-lists", headers=auth, json={"name": "bench"}).json()["id"]
            for mode in ("patch", "add"):
                result[mode] = wrk(svc.url, scripts / "ids.lua", connections, seconds, auth,
                                   {"BENCH_IDS": str(scripts / "ids.txt"), "BENCH_MODE": mode, "BENCH_LIST": list_id})
                log(f"writes --floor: {mode}: {result[mode]['requests_per_s']:,.0f}/s, p99 {result[mode]['p99_ms']} ms")
    finally:
        stop_process(floor_proc)
        pg.stop()
    result["load_average_end"] = list(os.getloadavg())  # the machine is shared: compare within a run
    return result


def _context() -> dict[str, Any]:
    """When, on which code, and how busy the machine was at the start."""
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": code.stdout.strip() or None,
            "load_average_start": list(os.getloadavg())}


def wait_healthy_floor(proc: subprocess.Popen, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the floor exited with code {proc.returncode}")
        try:
            httpx.post(f"{url}/api/v1/contacts", json={}, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise TimeoutError("the floor did not answer") from None
            time.sleep(0.1)


def print_summary(result: dict[str, Any]) -> None:
    f, s = result["floor"], result["service"]
    print(f"POST /api/v1/contacts, {result['connections']} connections, {result['rounds']} alternating rounds of"
          f" {result['seconds']:g} s each (code {result.get('code')}, {result.get('utc')}, load average"
          f" {result.get('load_average_start', ['?'])[0]} at the start, {result.get('load_average_end', ['?'])[0]}"
          " at the end):")
    print(f"  floor   {f['requests_per_s']:>8,.0f} writes/s  p50 {f['p50_ms']:>7} ms  p99 {f['p99_ms']:>7} ms")
    print(f"  service {s['requests_per_s']:>8,.0f} writes/s  p50 {s['p50_ms']:>7} ms  p99 {s['p99_ms']:>7} ms")
    print(f"  ratio service/floor: {result['ratio']}x; busy backends waiting for a lock: {s['lock_wait_share']:.1%}")
    one = result["one_client"]
    print(f"  one client alone: floor p50 {one['floor']['p50_ms']} ms, service p50 {one['service']['p50_ms']} ms")
    print(f"  PATCH /contacts/{{id}} p99 {result['patch']['p99_ms']} ms; POST /contact-lists/{{id}}/contacts p99"
          f" {result['add']['p99_ms']} ms (create p99 {s['p99_ms']} ms)")
    for name in ("floor", "service"):
        last = [x for x in result["runs"] if x["target"] == name][-1]
        print(f"  CPU ms per write ({name}, last run): {last['cpu_ms_per_write']}")
    spw = result["statements_per_create"]
    print(f"  SQL statements per create (pg_stat_statements calls / creates): {spw['total']}")
    for query, n in spw["by_statement"].items():
        print(f"    {n:>6}  {query}")

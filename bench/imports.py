"""Import and export benchmark (issue: "Import and export … at 15k rows/s").

    python -m bench.imports --rows 100000            # CSV, XLSX and JSON imports, exports, floor
    python -m bench.imports --rows 100000 --memory-rows 1000000   # plus peak RSS for 1M rows

Runs the real service (`contacts serve`: api + worker, embedded PostgreSQL and NATS in
bench/.data/imports) as a child process and talks to it over HTTP. Figures go to
bench/results/imports.json and are printed with the machine's core count.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

import httpx

from bench.procs import status_kb
from bench.server import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "imports"
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-0123456789-0123456789-abcdef"

# Mobile prefixes (with country code) that the operator directory knows, per country.
VALID = {"KE": ["254712", "254722", "254733", "254110"], "NG": ["234803", "234805", "234813"],
         "GH": ["233244", "233201"], "UG": ["256772", "256701"], "TZ": ["255754", "255713"],
         "ZA": ["2782", "2783"]}
DIGITS = {"KE": 12, "NG": 13, "GH": 12, "UG": 12, "TZ": 12, "ZA": 11}  # E.164 digits per country
UNKNOWN_NETWORK = {"25420": 12, "2712": 11}  # landline ranges: valid numbers, no mobile operator
FIRST = ["Amina", "Baraka", "Chidi", "Wanjiru", "Kofi", "Zanele", "Otieno", "Fatuma", "Tendai", "Ngozi"]
LAST = ["Otieno", "Okeke", "Mensah", "Kamau", "Dlamini", "Mwangi", "Nakato", "Juma", "Banda", "Abebe"]
TAGS = ["vip", "nairobi", "lagos", "newsletter", "promo", "churn-risk", "b2b", "retail"]


def generate(path: Path, rows: int, seed: int = 42) -> dict[str, int]:
    """A realistic file: ~2 % duplicates, ~2 % unparseable, ~2 % unknown networks."""
    rng = random.Random(seed)
    made: list[str] = []
    kinds = {"valid": 0, "duplicate": 0, "unparseable": 0, "unknown_network": 0}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["first_name", "last_name", "phone", "email", "tags", "notes"])
        for i in range(rows):
            roll = rng.random()
            if roll < 0.02 and made:
                phone, kind = rng.choice(made), "duplicate"
            elif roll < 0.04:
                phone, kind = f"07{rng.randint(0, 99)}", "unparseable"
            elif roll < 0.06:
                prefix = rng.choice(list(UNKNOWN_NETWORK))
                width = UNKNOWN_NETWORK[prefix] - len(prefix)
                phone, kind = f"+{prefix}{i % 10 ** width:0{width}d}", "unknown_network"
            else:
                country = rng.choice(list(VALID))
                prefix = rng.choice(VALID[country])
                width = DIGITS[country] - len(prefix)
                phone, kind = f"+{prefix}{i % 10 ** width:0{width}d}", "valid"
            made.append(phone) if kind == "valid" else None
            kinds[kind] += 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            writer.writerow([first, last, phone, f"{first}.{last}{i}@example.com".lower(),
                             ";".join(rng.sample(TAGS, rng.randint(0, 3))),
                             "met at expo, prefers SMS" if rng.random() < 0.1 else ""])
    return kinds


def to_xlsx(csv_path: Path, xlsx_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet()
    with csv_path.open(newline="", encoding="utf-8") as src:
        for record in csv.reader(src):
            sheet.append(record)
    book.save(xlsx_path)


def to_json(csv_path: Path) -> bytes:
    with csv_path.open(newline="", encoding="utf-8") as src:
        reader = csv.DictReader(src)
        contacts = [{"firstName": r["first_name"], "lastName": r["last_name"], "phone": r["phone"],
                     "email": r["email"], "tags": [t for t in r["tags"].split(";") if t],
                     "notes": r["notes"] or None} for r in reader]
    return json.dumps({"contacts": contacts}).encode()


class Service(ServeProcess):
    """`contacts serve` in a child process, with its own data dir and port."""

    def __init__(self, data_dir: Path):
        super().__init__(data_dir, SECRET)

    def peak_rss_mb(self) -> dict[str, int]:
        """Peak resident memory (VmHWM), in MB, of the API process and of the worker it runs."""
        workers, relays = self._children(_processes())
        return {"api": vm_hwm_mb(self.proc.pid), **{"worker": vm_hwm_mb(pid) for pid in workers},
                **{"relay": vm_hwm_mb(pid) for pid in relays}}

    def _children(self, procs: dict[int, tuple[int, str, float]]) -> tuple[set[int], list[int]]:
        """The worker processes (the API's Python children) and the relays (theirs), among ``procs``."""
        workers = {pid for pid, (ppid, comm, _) in procs.items() if ppid == self.proc.pid and comm.startswith("python")}
        return workers, [pid for pid, (ppid, comm, _) in procs.items() if ppid in workers and comm.startswith("python")]

    def relay_pid(self, timeout: float = 30) -> int:
        """The relay process (the worker's child), once it runs."""
        deadline = time.monotonic() + timeout
        while not (relays := self._children(_processes())[1]):
            if time.monotonic() > deadline:
                raise TimeoutError("no relay process started")
            time.sleep(0.2)
        return relays[0]

    def settle(self, timeout: float = 60) -> "Service":
        """Wait until the relay has started up (its CPU time stops growing), so that its start-up (loading
        its modules, creating the stream) is not counted in the first import measured."""
        pid, deadline = self.relay_pid(), time.monotonic() + timeout
        last = _processes()[pid][2]
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = _processes()[pid][2]
            if now - last < 0.05:
                break
            last = now
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the API, its worker, the relay, PostgreSQL and NATS."""
        procs = _processes()
        postmaster = int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        workers, relays = self._children(procs)
        totals = {"api": 0.0, "worker": 0.0, "relay": 0.0, "postgres": 0.0, "nats": 0.0}
        for pid, (ppid, comm, seconds) in procs.items():
            if pid == self.proc.pid:
                totals["api"] += seconds
            elif pid in workers:
                totals["worker"] += seconds
            elif pid in relays:
                totals["relay"] += seconds  # the worker's lower-priority relay process
            elif pid == postmaster or ppid == postmaster:
                totals["postgres"] += seconds
            elif ppid == self.proc.pid and comm.startswith("nats-server"):
                totals["nats"] += seconds
        return totals

    def client(self) -> httpx.Client:
        from service.auth import mint_token

        token = mint_token(SECRET, uuid.uuid4(), "bench", 86400)
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=3600)


def vm_hwm_mb(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), in MB."""
    return round(status_kb(pid, "VmHWM") / 1024)


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process we may read."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        found[int(stat.parent.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / tick)
    return found


def _floor_cpu_seconds(postmaster: int) -> dict[str, float]:
    """CPU time so far of the floor's two sides: this Python process and its PostgreSQL server."""
    procs = _processes()
    return {"python": time.process_time(),
            "postgres": sum(cpu for pid, (ppid, _, cpu) in procs.items() if postmaster in (pid, ppid))}


def _cpu_per_row(before: dict[str, float], after: dict[str, float], rows: int) -> dict[str, float]:
    """Microseconds of CPU per row, per process group, between two ``cpu_seconds`` readings."""
    spent = {k: (after[k] - before[k]) * 1e6 / rows for k in after}
    return {**{k: round(v) for k, v in spent.items()}, "total": round(sum(spent.values()))}


def nats_messages(data_dir: Path) -> int:
    import nats

    from service.embedded import EmbeddedNats

    async def count() -> int:
        nc = await nats.connect(EmbeddedNats(data_dir).url)
        try:
            return (await nc.jetstream().stream_info("CONTACTS")).state.messages
        except nats.js.errors.NotFoundError:
            return 0  # the relay has not created the stream yet
        finally:
            await nc.close()
    return asyncio.run(count())


def timed_import(svc: Service, api: httpx.Client, name: str, content: bytes | None, rows: int,
                 json_body: bytes | None = None) -> dict:
    before = nats_messages(svc.data_dir)
    cpu_start = svc.cpu_seconds()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    if json_body is not None:
        r = api.post("/api/v1/contacts/bulk", content=json_body, headers={"content-type": "application/json"})
    else:
        r = api.post("/api/v1/contacts/import", files={"file": (name, content)})
    responded = time.perf_counter() - started
    cpu_response = svc.cpu_seconds()
    assert r.status_code == 201, r.text[:500]
    body = r.json()
    expected = before + body["imported"] + 2  # one created message per contact, plus progress/completion
    while nats_messages(svc.data_dir) < expected and time.perf_counter() - started < 3600:
        time.sleep(0.2)
    on_nats = time.perf_counter() - started
    cpu_nats = svc.cpu_seconds()
    return {"rows": rows, "seconds_to_response": round(responded, 2), "rows_per_s": round(rows / responded),
            "seconds_to_last_nats_message": round(on_nats, 2), "rows_per_s_to_nats": round(rows / on_nats),
            "counts": {k: body[k] for k in ("imported", "valid", "invalid", "skipped", "rows")},
            "cpu_us_per_row_to_response": _cpu_per_row(cpu_start, cpu_response, rows),
            "cpu_us_per_row_after_response": _cpu_per_row(cpu_response, cpu_nats, rows),
            "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2)}


def floor(csv_path: Path, rows: int, indexed: bool = False, service_parser: bool = False) -> dict:
    """The direct path: read the CSV, parse every phone and COPY the rows into a table.

    Phones are parsed the plain way, with phonenumbers (parse, is_valid_number, E.164), as
    the writes' CRUD floor does (bench/floor.py); with ``service_parser`` by the service's
    own fast path instead (command/phones.py, about 6x cheaper), a stricter floor that
    speeds up whenever the service's parser does. The table is a bare one (a primary key
    and a unique phone), or with ``indexed`` the plain CRUD floor's contacts table (a
    unique (account, phone), a GIN index on tags and a trigram index on the name, as a
    searchable contacts table needs).
    """
    import phonenumbers
    import psycopg

    from bench.floor import ACCOUNT, SCHEMA
    from command.phones import parse_phone
    from service.embedded import EmbeddedPostgres

    def plain_e164(text: str) -> str:
        number = phonenumbers.parse(text, "KE")
        if not phonenumbers.is_valid_number(number):
            raise ValueError(text)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def service_e164(text: str) -> str:
        return parse_phone(text, "KE").e164

    e164_of = service_e164 if service_parser else plain_e164
    pg = EmbeddedPostgres(DATA / ("floor-indexed" if indexed else "floor"))
    url = pg.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS floor_contacts")
            if indexed:
                conn.execute(SCHEMA)
                copy_sql = "COPY floor_contacts (id, account_id, first_name, last_name, phone, email, tags, notes)" \
                           " FROM STDIN"
            else:
                conn.execute("CREATE TABLE floor_contacts (id uuid PRIMARY KEY, first_name text, last_name text,"
                             " phone text UNIQUE, email text, tags text[], notes text)")
                copy_sql = "COPY floor_contacts FROM STDIN"
            postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
            cpu_before = _floor_cpu_seconds(postmaster)
            started = time.perf_counter()
            seen = set()
            with csv_path.open(newline="", encoding="utf-8") as src, conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    for r in csv.DictReader(src):
                        try:
                            e164 = e164_of(r["phone"])
                        except Exception:  # noqa: BLE001
                            continue
                        if e164 in seen:
                            continue
                        seen.add(e164)
                        tags = [t for t in r["tags"].split(";") if t]
                        row = (uuid.uuid4(), r["first_name"], r["last_name"], e164, r["email"], tags, r["notes"])
                        copy.write_row((row[0], ACCOUNT, *row[1:]) if indexed else row)
            elapsed = time.perf_counter() - started
            cpu_after = _floor_cpu_seconds(postmaster)
    finally:
        pg.stop()
    return {"rows": rows, "seconds": round(elapsed, 2), "rows_per_s": round(rows / elapsed),
            "cpu_us_per_row": _cpu_per_row(cpu_before, cpu_after, rows),
            "table": "the CRUD floor's contacts table (bench/floor.py)" if indexed else "a bare table",
            "phones": "the service's parser (command/phones.py)" if service_parser else "phonenumbers"}


def _ratios(results: dict) -> dict[str, float]:
    """The CSV import against each floor, to the response and to the last NATS message."""
    ratios = {}
    for floor_key, name in (("floor_parse_and_copy", "floor"), ("floor_parse_and_copy_indexed", "indexed_floor"),
                            ("floor_service_parser", "service_parser_floor"),
                            ("floor_service_parser_indexed", "service_parser_indexed_floor")):
        floor_rate = results[floor_key]["rows_per_s"]
        ratios[f"csv_vs_{name}"] = round(results["csv_import"]["rows_per_s"] / floor_rate, 2)
        ratios[f"csv_to_nats_vs_{name}"] = round(results["csv_import"]["rows_per_s_to_nats"] / floor_rate, 2)
    return ratios


def timed_export(api: httpx.Client, path: str, rows: int) -> dict:
    started = time.perf_counter()
    size = 0
    with api.stream("GET", path) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            size += len(chunk)
    elapsed = time.perf_counter() - started
    return {"rows": rows, "seconds": round(elapsed, 2), "rows_per_s": round(rows / elapsed), "bytes": size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--memory-rows", type=int, default=0, help="also measure peak RSS for this many rows")
    parser.add_argument("--skip-xlsx", action="store_true")
    args = parser.parse_args(argv)
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    csv_path, xlsx_path = DATA / "contacts.csv", DATA / "contacts.xlsx"
    kinds = generate(csv_path, args.rows)
    results: dict = {"cores": os.cpu_count(), "rows": args.rows, "file_kinds": kinds,
                     "command": "python -m bench.imports " + " ".join(argv or sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}
    # The floor: the plain way (phonenumbers); beside it the same with the service's own
    # parser, a stricter floor (every speed-up of that parser raises it), into a bare table
    # and into the CRUD floor's searchable one.
    for key, kwargs in (("floor_parse_and_copy", {}), ("floor_parse_and_copy_indexed", {"indexed": True}),
                        ("floor_service_parser", {"service_parser": True}),
                        ("floor_service_parser_indexed", {"indexed": True, "service_parser": True})):
        results[key] = floor(csv_path, args.rows, **kwargs)
        print(key, json.dumps(results[key]), flush=True)
    (DATA / "svc").mkdir()
    with Service(DATA / "svc") as svc:
        svc.settle()
        results["csv_import"] = timed_import(svc, svc.client(), "contacts.csv", csv_path.read_bytes(), args.rows)
        print("csv", json.dumps(results["csv_import"]), flush=True)
        results.update(_ratios(results))
        print("ratios", json.dumps(_ratios(results)), flush=True)
        results["json_import"] = timed_import(svc, svc.client(), "", None, args.rows, json_body=to_json(csv_path))
        print("json", json.dumps(results["json_import"]), flush=True)
        if not args.skip_xlsx:
            to_xlsx(csv_path, xlsx_path)
            results["xlsx_import"] = timed_import(svc, svc.client(), "contacts.xlsx", xlsx_path.read_bytes(),
                                                  args.rows)
            print("xlsx", json.dumps(results["xlsx_import"]), flush=True)
        api = svc.client()
        imported = timed_import(svc, api, "contacts.csv", csv_path.read_bytes(), args.rows)["counts"]["imported"]
        results["csv_export"] = timed_export(api, "/api/v1/contacts/export", imported)
        results["json_export"] = timed_export(api, "/api/v1/contacts/export-data", imported)
        print("exports", json.dumps(results["csv_export"]), json.dumps(results["json_export"]), flush=True)
        results["service_peak_rss_mb"] = svc.peak_rss_mb()
    if args.memory_rows:
        big = DATA / "big.csv"
        generate(big, args.memory_rows, seed=7)
        (DATA / "svc-mem").mkdir()
        with Service(DATA / "svc-mem") as svc:
            svc.settle()
            api = svc.client()
            results["memory_import"] = _big_import(svc, api, big, args.memory_rows)
            results["memory_import"]["peak_rss_mb"] = svc.peak_rss_mb()
            imported = results["memory_import"]["counts"]["imported"]
            results["memory_export"] = timed_export(api, "/api/v1/contacts/export", imported)
            results["memory_export"]["peak_rss_mb_after"] = svc.peak_rss_mb()
        print("memory", json.dumps(results["memory_import"]), json.dumps(results["memory_export"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imports.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _big_import(svc: Service, api: httpx.Client, path: Path, rows: int) -> dict:
    """Stream a large file from disk (the client never holds it whole either)."""
    cpu_start, load = svc.cpu_seconds(), os.getloadavg()[0]
    started = time.perf_counter()
    with path.open("rb") as f:
        r = api.post("/api/v1/contacts/import", files={"file": ("big.csv", f)})
    elapsed = time.perf_counter() - started
    assert r.status_code == 201, r.text[:500]
    body = r.json()
    return {"rows": rows, "seconds_to_response": round(elapsed, 2), "rows_per_s": round(rows / elapsed),
            "counts": {k: body[k] for k in ("imported", "valid", "invalid", "skipped", "rows")},
            "cpu_us_per_row_to_response": _cpu_per_row(cpu_start, svc.cpu_seconds(), rows),
            "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    main()

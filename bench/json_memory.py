"""The API's peak memory for one JSON bulk import, and the import's time.

    python -m bench.json_memory            # a maximal body: 100,000 contacts with 400-character notes (51.5 MB)
    python -m bench.json_memory --bench    # bench.imports' realistic 100,000-row file, as JSON
    python -m bench.json_memory --key      # with an Idempotency-Key (its request hash encodes the body again)

Starts `contacts serve` (bench.imports.Service: api + worker, embedded PostgreSQL and NATS in
bench/.data/json_memory), posts the body once to a fresh service and prints the API process's
peak resident memory (VmHWM) before and after the request, and the request's time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from bench.imports import ROOT, Service, generate, to_json, vm_hwm_mb

DATA = ROOT / "bench" / ".data" / "json_memory"


def maximal_body(rows: int, note: int) -> bytes:
    """``rows`` contacts, each with a note of ``note`` characters: near the endpoint's 50 MiB."""
    return json.dumps({"contacts": [{"firstName": f"Name{i}", "lastName": "Otieno", "phone": f"+2547{12000000 + i:08d}",
                                     "tags": ["vip", "promo"], "notes": (f"n{i} " + "x" * note)[:note]}
                                    for i in range(rows)]}).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.json_memory", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--note", type=int, default=400, help="characters of each contact's note")
    parser.add_argument("--bench", action="store_true", help="bench.imports' realistic file instead")
    parser.add_argument("--key", action="store_true", help="send an Idempotency-Key")
    args = parser.parse_args(argv)
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    if args.bench:
        generate(DATA / "contacts.csv", args.rows)
        body = to_json(DATA / "contacts.csv")
    else:
        body = maximal_body(args.rows, args.note)
    with Service(DATA / "service") as svc:
        api = svc.client()
        start = vm_hwm_mb(svc.proc.pid)
        began = time.perf_counter()
        headers = {"content-type": "application/json", **({"Idempotency-Key": "bench"} if args.key else {})}
        r = api.post("/api/v1/contacts/bulk", content=body, headers=headers)
        seconds = time.perf_counter() - began
        print(json.dumps({"status": r.status_code, "body_mb": round(len(body) / 1e6, 1), "rows": args.rows, "key": args.key,
                          "api_start_mb": start, "api_peak_mb": vm_hwm_mb(svc.proc.pid),
                          "seconds": round(seconds, 2), "rows_per_s": round(args.rows / seconds)}), flush=True)


if __name__ == "__main__":
    main()

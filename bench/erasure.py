"""Purge erasure off the relay's ordered path: another account's events while 10,000 contacts are erased.

    python -m bench.erasure                  # 10,000 purged contacts (the issue's size)
    python -m bench.erasure --contacts 2000  # a quicker look

Runs the real service (``contacts serve``: api + worker, embedded PostgreSQL and NATS
in bench/.data/erasure, made afresh) as a child process. Account A gets ``--contacts``
contacts (single creates, four at a time), trashes them and, once the relay has published
all that, purges them in one ``DELETE /contacts/trash``. From the moment that purge is
sent, account B creates a contact every ``--every`` seconds; a plain NATS subscription
on B's subjects notes when each one's ``contact.created`` is published to the stream.
The figure is the time from sending B's create to its message, p50/p95/max, while A's
erasures drain (``contacts_pending_erasures`` back to 0). Goal: p95 under 1 s. Before
the erasure had its own job, the relay erased inline (about 9 ms a message), and B's
events waited behind all 10,000 contacts: about three minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.server import ServeProcess
from service.auth import mint_token

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "erasure"
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-0123456789-0123456789-abcdef"
GOAL_P95_S = 1.0


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] erasure: {text}", flush=True)


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def _wait_metric_zero(base: str, name: str, timeout: float) -> float:
    started = time.monotonic()
    while (value := _metric(base, name)) != 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{name} still {value} after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


class Arrivals:
    """A NATS subscription on one account's ``created`` messages, in a thread: aggregate id -> arrival time."""

    def __init__(self, nats_url: str, subject: str):
        self.nats_url, self.subject = nats_url, subject
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import nats

        nc = await nats.connect(self.nats_url)

        async def arrived(msg) -> None:
            self.seen.setdefault(json.loads(msg.data)["aggregateid"], time.monotonic())
        await nc.subscribe(self.subject, cb=arrived)
        await nc.flush()
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    def __enter__(self) -> "Arrivals":
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _create(client: httpx.Client, contacts: int, threads: int = 4) -> list[str]:
    """``contacts`` single creates, a few at a time.

    Not one ``POST /contacts/bulk``: trashing or purging an imported contact loads its
    whole import batch (up to 1,000 contacts, all unsealed) per contact, and trashing
    10,000 imported contacts did not finish in 9 minutes on the loaded machine.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        r = client.post("/api/v1/contacts", json={"phone": f"+2547{i:08d}", "firstName": f"Purgeable{i}",
                                                  "tags": ["bench"]})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(contacts)))


def run(contacts: int, every: float) -> dict:
    shutil.rmtree(DATA, ignore_errors=True)
    purger, other = uuid.uuid4(), uuid.uuid4()
    with ServeProcess(DATA, SECRET) as svc:
        base = svc.url
        a = httpx.Client(base_url=base, timeout=600, headers={"Authorization": f"Bearer {mint_token(SECRET, purger)}"})
        b = httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {mint_token(SECRET, other)}"})
        ids = _create(a, contacts)
        r = a.post("/api/v1/contacts/bulk-delete", json={"ids": ids})
        assert r.status_code == 200 and r.json() == {"deleted": contacts}, r.text[:300]
        _log(f"{contacts:,} contacts created and trashed; waiting for the relay")
        _wait_metric_zero(base, "contacts_relay_lag_events", 600)
        sent: dict[str, float] = {}
        with Arrivals(svc.nats_url, f"contacts.{other}.contact.*.created") as arrivals:
            purge = threading.Thread(target=lambda: a.request("DELETE", "/api/v1/contacts/trash", json={"ids": ids}))
            started = time.monotonic()
            purge.start()
            n = 0
            while True:
                t0 = time.monotonic()
                r = b.post("/api/v1/contacts", json={"phone": f"+2547229{n:05d}"})
                assert r.status_code == 201, r.text
                sent[r.json()["id"]] = t0
                n += 1
                if not purge.is_alive() and _metric(base, "contacts_pending_erasures") == 0 \
                        and _metric(base, "contacts_relay_lag_events") == 0:
                    break
                time.sleep(max(0.0, every - (time.monotonic() - t0)))
            purge.join()
            erased_s = time.monotonic() - started
            time.sleep(2)  # the last probes' messages
        latencies = sorted(arrivals.seen[i] - t0 for i, t0 in sent.items() if i in arrivals.seen)
        missing = len(sent) - len(latencies)
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    result = {"purged_contacts": contacts, "erasure_done_s": round(erased_s, 1),
              "erased_per_s": round(contacts / erased_s, 1), "probes": len(sent), "probes_missing": missing,
              "probe_p50_s": round(statistics.median(latencies), 3), "probe_p95_s": round(q[18], 3),
              "probe_max_s": round(latencies[-1], 3), "goal_p95_s": GOAL_P95_S,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _log(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000, help="contacts purged at once (default 10,000)")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between the other account's creates")
    args = parser.parse_args(argv)
    result = run(args.contacts, args.every)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "erasure.json").write_text(json.dumps(result, indent=2) + "\n")
    _log(f"wrote {RESULTS / 'erasure.json'}; p95 {result['probe_p95_s']} s (goal {GOAL_P95_S} s)")


if __name__ == "__main__":
    main()

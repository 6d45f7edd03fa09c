"""What a ``contact.created`` message costs NATS, by what it carries: a subject of its own, a ``Nats-Msg-Id``.

    python -m bench.nats_costs --messages 100000 --rounds 3

An embedded nats-server (service/embedded.py) with a file stream made as the relay
makes it (24 h duplicate window, fast batches allowed), and the relay's own fast batches
(events/acks.py ``FastBatch``, settled every 1,000 messages as an import batch is)
publishing the AsyncAPI example ``contact.created`` message (events/asyncapi_examples.json)
with new ids, three ways, alternating, each into a new server:

- ``shipped``: each contact's own subject (``<prefix>.<account>.contact.<id>.created``)
  and the ``Nats-Msg-Id`` header, as the relay publishes;
- ``one_subject``: every message under one subject (erasure purges a contact by its
  subject, so this is a measure, not an option);
- ``no_msg_id``: no ``Nats-Msg-Id`` (the stream then deduplicates nothing: exactly once
  across a relay's restart rests on it, and the header is part of the event contract).

Prints the server's CPU µs a message (user + system, from /proc) and the messages/s,
then the medians; figures go to bench/results/nats-costs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench.imports import _processes
from events.acks import FastBatch
from service.embedded import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "nats-costs"
RESULTS = ROOT / "bench" / "results"
EXAMPLE = json.loads((ROOT / "events" / "asyncapi_examples.json").read_text())["contacts.contact.created.v1"]
VARIANTS = ("shipped", "one_subject", "no_msg_id")
BATCH = 1_000  # messages a fast batch, as an import batch's


def _messages(count: int) -> list[tuple[str, bytes, str]]:
    """(contact id, payload, message id) for ``count`` new contacts, the example's shape."""
    template = json.dumps(EXAMPLE["payload"])
    contact, event = EXAMPLE["payload"]["aggregateid"], EXAMPLE["payload"]["id"]
    out = []
    for _ in range(count):
        cid, eid = str(uuid.uuid4()), str(uuid.uuid4())
        out.append((cid, template.replace(contact, cid).replace(event, eid).encode(), eid))
    return out


def _cpu_s(server: EmbeddedNats) -> float:
    """The nats-server's CPU seconds so far (user + system)."""
    assert server.proc is not None
    return _processes()[server.proc.pid][2]


async def publish(variant: str, server: EmbeddedNats, messages: list[tuple[str, bytes, str]]) -> dict:
    """Publish ``messages`` the ``variant``'s way; the server's CPU a message and the rate."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE,
                                                     duplicate_window=24 * 3600.0, allow_batched=True))
        if variant == "no_msg_id":
            send = nc.publish

            async def without_header(subject: str, payload: bytes = b"", reply: str = "",
                                     headers: dict | None = None) -> None:
                await send(subject, payload, reply=reply)

            nc.publish = without_header  # FastBatch always names the header: leave it out here
        batch = FastBatch(nc)
        await batch.start()
        account = uuid.uuid4()
        cpu, start = _cpu_s(server), time.perf_counter()
        for n, (cid, payload, msg_id) in enumerate(messages, 1):
            subject = f"bench.{account}.contact.{cid if variant != 'one_subject' else 'all'}.created"
            await batch.publish(subject, payload, msg_id)
            if n % BATCH == 0:
                await batch.settle()
        await batch.settle()
        elapsed = time.perf_counter() - start
        stored = (await nc.jetstream().stream_info("BENCH")).state.messages
        if stored != len(messages):
            raise RuntimeError(f"{variant}: the stream holds {stored} messages of {len(messages)}")
        return {"variant": variant, "server_cpu_us_per_message": round(
                    1e6 * (_cpu_s(server) - cpu) / len(messages), 1),
                "messages_per_s": round(len(messages) / elapsed)}
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_costs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict = {"cores": os.cpu_count(), "messages": args.messages,
                     "command": "python -m bench.nats_costs " + " ".join(argv or sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "runs": []}
    messages = _messages(args.messages)
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            shutil.rmtree(DATA, ignore_errors=True)
            DATA.mkdir(parents=True)
            server = EmbeddedNats(DATA)
            server.start()
            try:
                run = asyncio.run(publish(variant, server, messages))
            finally:
                server.stop()
            run["round"] = round_ + 1
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    results["median_server_cpu_us_per_message"] = {
        v: statistics.median(r["server_cpu_us_per_message"] for r in results["runs"] if r["variant"] == v)
        for v in VARIANTS}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nats-costs.json").write_text(json.dumps(results, indent=2) + "\n")
    print("medians", json.dumps(results["median_server_cpu_us_per_message"]))


if __name__ == "__main__":
    main()

"""Offline audit export and the reference stream consumer (`contacts events export`, `contacts tail`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO
from uuid import UUID

import msgspec

from events.contract import attributes, counts
from events.history import _data

BATCH = 500
# The fields sealed with the contact's own key (crypto-shredded on purge): left out by --no-personal-data.
SEALED = frozenset({"phone", "firstName", "lastName", "email", "notes", "tags"})  # sealed in the event store


def audit_event(event: Any, position: int, personal: bool = True) -> dict[str, Any]:
    """One event as the stream's CloudEvent (the same attributes and names), with every stored field in ``data``.

    Unlike the stream, ``data`` also holds email and notes; without ``personal`` it holds
    none of the sealed personal fields. Import counts say ``rows``, as the HTTP API does.
    """
    data = _data(event)
    if "counts" in data:
        data["counts"] = counts(data["counts"])
    if not personal:
        data = {k: v for k, v in data.items() if k not in SEALED}
        if isinstance(data.get("changes"), dict):
            data["changes"] = {k: v for k, v in data["changes"].items() if k not in SEALED}
    return {**attributes(event, position), "data": data}


def export_account(app: Any, account_id: UUID, out: TextIO,
                   progress: Callable[[int, int, int], None] | None = None, personal: bool = True) -> int:
    """Write every event of one account as NDJSON CloudEvents, oldest first; return how many.

    ``progress`` is called with (position read, head of the log, events written).
    """
    head = app.recorder.max_notification_id() or 0
    written = 0
    for position, event in _account_events(app, account_id):
        events = event.created_events() if hasattr(event, "created_events") else []
        for item in [*events, event]:
            out.write(msgspec.json.encode(audit_event(item, position, personal)).decode() + "\n")
            written += 1
        if progress is not None:
            progress(position, head, written)
    return written


def _account_events(app: Any, account_id: UUID) -> Iterator[tuple[int, Any]]:
    position = 0
    while True:
        notifications = app.recorder.select_notifications(start=position, limit=BATCH, inclusive_of_start=False)
        if not notifications:
            return
        for notification, event in zip(notifications, app.decode(notifications)):
            if getattr(event, "account_id", None) == account_id:
                yield notification.id, event
        position = notifications[-1].id


async def tail(nats_url: str, stream: str, subject: str, durable: str | None, limit: int | None,
               idle_timeout: float | None, out: TextIO = sys.stdout) -> int:
    """Follow the stream (a durable consumer resumes where it stopped) and print one line per event."""
    import nats

    from events.nats_log import server_list

    nc = await nats.connect(server_list(nats_url))
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    seen = 0
    try:
        while limit is None or seen < limit:
            try:
                messages = await sub.fetch(100 if limit is None else min(100, limit - seen), timeout=idle_timeout or 5)
            except TimeoutError:  # nats.errors.TimeoutError is one; nats-py 2.16's fetch also raises asyncio's
                if idle_timeout is not None:
                    break
                continue
            for msg in messages:
                event = msgspec.json.decode(msg.data)
                out.write(f"{event['time']} {event['type']} {event['subject']} v{event['aggregateversion']}"
                          f" by {event['actor']} {msgspec.json.encode(event['data']).decode()}\n")
                out.flush()
                await msg.ack()
                seen += 1
    finally:
        await sub.unsubscribe()
        await nc.close()
    return seen


def run_tail(*args: Any, **kwargs: Any) -> int:
    return asyncio.run(tail(*args, **kwargs))

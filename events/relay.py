"""Relay: publishes every stored event to NATS JetStream, in order, exactly once in the stream.

The relay reads the notification log after its checkpoint, publishes a batch with
``Nats-Msg-Id`` = the event id (JetStream drops a republished id inside the stream's
duplicate window), waits for every ack, and only then moves its checkpoint in
PostgreSQL. A crash between publish and checkpoint republishes the batch, which the
stream deduplicates. NATS being down only delays the relay: API writes never touch NATS.
The messages themselves were encoded when the event was stored (events/outbox.py): the
relay adds the subject prefix and the sequence, opening sealed ones with one decryption.

A ``contact.purged`` message is the one exception: the relay queues it in
``pending_erasures`` with its checkpoint, and the worker's eraser publishes it once it
has deleted that contact's personal messages from the stream (events/erasure.py), out
of the ordered path that every account's events share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import nats
import psycopg
from nats.js.api import StorageType, StreamConfig
from psycopg_pool import ConnectionPool

from command.crypto import KeyStore
from command.domain import IMPORT_BATCH_TOPICS
from command.notification_log import LogFollower
from command.unit_of_work import EVENTS_TABLE, wait_for_flush
from events import erasure, locks, outbox
from events.contract import to_messages
from events.leader import Leader

log = logging.getLogger(__name__)
RELAY_NAME = "nats_relay"


class Relay(Leader):
    """Follows the event store and publishes to one JetStream stream (one relay at a time: two would
    interleave messages out of order)."""

    name, lock_key, idle_s = "relay", locks.RELAY, 1.0

    def __init__(self, pool: ConnectionPool, decode: Callable[[list[Any]], list[Any]], keys: KeyStore, *,
                 nats_url: str, database_url: str, stream: str, subject_prefix: str, duplicate_window_s: int,
                 batch_size: int = 500, replicas: int = 1):
        self.pool = pool
        self.follower = LogFollower(pool, self._select, batch_size)
        self.decode = decode  # stored events to domain events: only for those stored without their messages
        self.keys = keys
        self.nats_url = nats_url
        self.database_url = database_url
        super().__init__()
        self.stream = stream
        self.prefix = subject_prefix
        self.duplicate_window_s = duplicate_window_s
        self.replicas = replicas  # CONTACTS_NATS_REPLICAS: 3 on a 3-node cluster, so the stream survives a node
        self.acks: AckWindow | None = None
        self.published_total = 0

    # -- checkpoint --------------------------------------------------------------------

    def position(self) -> int:
        with self.pool.connection() as conn:  # autocommit: a failed statement leaves nothing open
            try:
                row = conn.execute("SELECT position FROM relay_tracking WHERE name = %s", (RELAY_NAME,)).fetchone()
            except psycopg.errors.UndefinedTable:  # a new database: the table is made once, not on every wake
                conn.execute("CREATE TABLE IF NOT EXISTS relay_tracking (name text PRIMARY KEY,"
                             " position bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now())")
                row = None
            return row[0] if row else 0

    def _wait_durable(self) -> None:
        """Publish only events on disk: writes commit before their WAL flush (command/unit_of_work.py),
        so a batch read now waits for a flush that covers it; a crash cannot take back a published event."""
        with self.pool.connection() as conn:
            wait_for_flush(conn)

    def _checkpoint(self, position: int, erasures: list[tuple[int, Any]] | None = None) -> None:
        """Move past ``position``; queue the erasures met on the way in the same transaction."""
        with self.pool.connection() as conn, conn.transaction():
            if erasures:
                erasure.record(conn, erasures)
            conn.execute("INSERT INTO relay_tracking (name, position) VALUES (%s, %s) ON CONFLICT (name)"
                         " DO UPDATE SET position = EXCLUDED.position, updated_at = now()", (RELAY_NAME, position))
        if erasures:
            erasures.clear()  # queued for good

    # -- NATS --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS, start the ack window, and make the stream if it is missing."""
        await super().start()
        self.acks = AckWindow(self.nc)
        await self.acks.start()
        config = StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"], storage=StorageType.FILE,
                              duplicate_window=float(self.duplicate_window_s), num_replicas=self.replicas)
        try:
            await self.js.stream_info(self.stream)  # exists: keep the operator's limits
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)

    async def close(self) -> None:
        await super().close()
        self.acks = None

    # -- main loop ---------------------------------------------------------------------

    async def publish_pending(self) -> int:
        """Publish everything after the checkpoint; return how many messages were published.

        Acks are awaited in windows of about ``window`` messages; the checkpoint moves
        to the last notification whose messages were all acknowledged.
        """
        total = 0
        window = 2000
        while True:
            position = await asyncio.to_thread(self.position)
            notifications = await asyncio.to_thread(self.follower.next_batch, position)
            if not notifications:
                return total
            await asyncio.to_thread(self._wait_durable)
            acks = self.acks
            erasures: list[tuple[int, Any]] = []  # (position, contact.purged message) for the eraser
            for group in _groups(notifications):
                notification = group[-1]
                for position, m in await asyncio.to_thread(self._messages, group):
                    if m.erases:
                        # Not published here: queued with the checkpoint, after the acks of
                        # everything before it, for the eraser (events/erasure.py).
                        erasures.append((position, m))
                        continue
                    await acks.publish(m.subject, m.payload, m.msg_id)
                    total += 1
                if acks.in_flight >= window:
                    await acks.settle()
                    await asyncio.to_thread(self._checkpoint, notification.id, erasures)
            await acks.settle()
            await asyncio.to_thread(self._checkpoint, notifications[-1].id, erasures)
            self.published_total = total

    def _select(self, start: int, limit: int, inclusive_of_start: bool = False) -> list[Stored]:
        """The notifications after ``start`` with their stored messages (the state only where there are none)."""
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT notification_id, originator_id, originator_version, topic, CASE WHEN"
                                f" messages IS NULL THEN state END, messages FROM {EVENTS_TABLE}"
                                f" WHERE notification_id {'>=' if inclusive_of_start else '>'} %s"
                                " ORDER BY notification_id LIMIT %s", (start, limit)).fetchall()
        return [Stored(*row) for row in rows]

    def _messages(self, notifications: list[Stored]) -> list[tuple[int, Any]]:
        """The messages of each notification: the stored ones completed (one query for the keys they need),
        else decoded from the event (stored before its messages were, or its contact's key is gone)."""
        frames = {n.id: outbox.decode(n.messages) for n in notifications if n.messages is not None}
        keys = self.keys.get_many(outbox.sealed_by(frames.values()))
        done = {position: outbox.complete(f, position, self.prefix, keys) for position, f in frames.items()}
        stale = [n for n in notifications if done.get(n.id) is None]
        if stale:
            # A purged contact's key is gone: decoding its event yields the ``erased`` message.
            for n, event in zip(stale, self.decode(self._with_state(stale))):
                done[n.id] = to_messages(event, n.id, self.prefix)
        return [(n.id, m) for n in notifications for m in done[n.id]]

    def _with_state(self, notifications: list[Stored]) -> list[Stored]:
        missing = [n.id for n in notifications if n.state is None]
        if not missing:
            return notifications
        with self.pool.connection() as conn:
            states = dict(conn.execute(f"SELECT notification_id, state FROM {EVENTS_TABLE}"
                                       " WHERE notification_id = ANY(%s)", (missing,)).fetchall())
        return [n if n.state is not None else n._replace(state=bytes(states[n.id])) for n in notifications]

    # -- leadership (events/leader.py) ------------------------------------------------------

    async def round(self) -> None:
        await self.publish_pending()


class AckWindow:
    """JetStream publishes whose acks all come back on one inbox subscription.

    A JetStream publish is a NATS publish with a reply subject; the stream answers on
    it with its ack (or an error). nats-py's ``publish_async`` makes a future, a random
    token, a done-callback and a semaphore turn per message and builds a ``PubAck``
    from each answer: about 50 µs of this process's CPU a message, measured against a
    local nats-server. Here each message gets ``<inbox>.<n>`` as its reply subject and
    one subscription ticks them off: about 22 µs. ``settle`` waits until every message
    published since the last one is acknowledged, and raises if any was refused (no
    stream, a stream error) or if the acks stop coming; the relay then reconnects and
    publishes again from its checkpoint, deduplicated by ``Nats-Msg-Id``.
    """

    def __init__(self, nc: Any, timeout_s: float = 15.0):
        self.nc = nc
        self.timeout_s = timeout_s
        self.inbox = nc.new_inbox()
        self.sent = 0
        self.waiting: set[int] = set()
        self.refused: str | None = None
        self.clear = asyncio.Event()
        self.clear.set()

    async def start(self) -> None:
        await self.nc.subscribe(self.inbox + ".*", cb=self._ack)

    @property
    def in_flight(self) -> int:
        return len(self.waiting)

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        await self.nc.publish(subject, payload, reply=self.expect(), headers={"Nats-Msg-Id": msg_id})

    def expect(self) -> str:
        """Book the next answer: the reply subject for the message about to be published."""
        self.sent += 1
        self.waiting.add(self.sent)
        self.clear.clear()
        return f"{self.inbox}.{self.sent}"

    async def _ack(self, msg: Any) -> None:
        try:
            number = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        if number not in self.waiting:
            return  # a duplicate answer
        if msg.headers and msg.headers.get("Status") == "503":
            self.refused = f"no stream answered for {msg.subject}"
        elif b'"error"' in msg.data and (error := _ack_error(msg.data)):
            self.refused = error
        self.waiting.discard(number)
        if not self.waiting:
            self.clear.set()

    async def settle(self) -> None:
        """Wait for every ack; raise if one was a refusal or they stopped coming."""
        if self.waiting:
            try:
                await asyncio.wait_for(self.clear.wait(), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"{len(self.waiting)} JetStream acks missing after {self.timeout_s:.0f} s") from None
        if self.refused is not None:
            refused, self.refused = self.refused, None
            raise RuntimeError(f"JetStream refused a message: {refused}")


class Stored(NamedTuple):
    """One row of the notification log as the relay reads it."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes | None      # read only for an event stored without its messages
    messages: bytes | None   # events/outbox.py


def _ack_error(data: bytes) -> str | None:
    """The error of a JetStream answer (``{"error": {...}}``), else None."""
    try:
        answer = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return f"unreadable JetStream answer {data[:100]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error)[:300] if error else None


def _groups(notifications: list[Any]) -> list[list[Any]]:
    """Runs of ordinary events together; each import batch (up to 1,000 contacts) alone."""
    groups: list[list[Any]] = []
    run: list[Any] = []
    for n in notifications:
        if n.topic in IMPORT_BATCH_TOPICS:
            if run:
                groups.append(run)
                run = []
            groups.append([n])
        else:
            run.append(n)
    if run:
        groups.append(run)
    return groups

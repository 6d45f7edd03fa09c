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
import math
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from uuid import UUID

import nats
from nats.js.api import StorageType, StreamConfig
from psycopg import sql
from psycopg_pool import ConnectionPool

from command.crypto import KeyStore, PiiMapper
from command.domain import IMPORT_BATCH_TOPICS
from command.notification_log import MAX_BATCH_BYTES, bounded_batch
from command.unit_of_work import EVENTS_TABLE
from events import erasure, locks, outbox
from events.acks import AckWindow, BatchingRefused, FastBatch
from events.contract import import_messages, to_messages
from events.leader import Leader

log = logging.getLogger(__name__)
RELAY_NAME = "nats_relay"
# After a batch that was not full the relay waits this long before its next look: 5 ms,
# plus 50 µs per event/s published lately (20 ms from 400 events/s on), so that each
# statement and ack round trip carries more events as the rate grows, and an idle relay
# still publishes a write the moment it is notified.
MIN_COALESCE_S, MAX_COALESCE_S, COALESCE_PER_EVENT_S = 0.005, 0.020, 0.000050
ROUND_S = 1.0  # a round under sustained load returns this often, for the leader's lock check
# After this many batches in a row the relay needs no wake-ups until a look finds nothing:
# the LISTEN connection stops listening (about 100 µs of CPU a notification, PostgreSQL's
# and this process's), for an UNLISTEN, a LISTEN and one more look when the run ends.
BUSY_BATCHES = 3
# A batch of at least this many messages (or holding an import batch) goes out as a JetStream
# fast-ingest batch where the stream takes them (events/acks.py FastBatch): an ack per
# hundreds of messages instead of one each, for a round trip at its start and at its end.
# Measured against a local nats-server (batches of N messages, publisher and server CPU a
# message, ack each -> fast): N=8 29-34 -> 41-49 and 29-35 -> 46-56 µs; N=16 25-27 -> 29-31
# and about 31 both; N=32 about 21 both; N=64 18.4-19.1 -> 16.4-16.9 and 17-30 -> 16-47.
FAST_BATCH_MIN = 64

# One look at the log (``Relay._next``): the checkpoint of the batch before, the next batch
# with each contact's key, and the flush wait (a transactional logical message: its commit
# waits for the WAL flush, which covers every event the statement read).
_NEXT = sql.SQL("""WITH saved AS (
    INSERT INTO relay_tracking (name, position) SELECT %(name)s, %(checkpoint)s::bigint
     WHERE %(checkpoint)s::bigint IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()),
  batch AS MATERIALIZED ({batch}),
  flushed AS (SELECT pg_logical_emit_message(true, 'contacts.flush', '') WHERE EXISTS (SELECT FROM batch))
SELECT b.notification_id, b.originator_id, b.originator_version, b.topic, b.state, b.messages, k.key, b.is_contact,
       b.upto
  FROM batch b CROSS JOIN flushed LEFT JOIN contact_keys k ON b.is_contact AND k.contact_id = b.originator_id
 ORDER BY b.notification_id""").format(batch=bounded_batch(
    sql.SQL("notification_id, originator_id, originator_version, topic, CASE WHEN messages IS NULL THEN state END"
            " AS state, messages, strpos(topic, '.domain:Contact.') > 0 AS is_contact"),
    sql.SQL("coalesce(messages, state)")))
# A subject without wildcards: tokens of printable characters but blanks, '*' and '>', dot-separated.
_SUBJECT_PREFIX = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")
_SAVE = ("INSERT INTO relay_tracking (name, position) VALUES (%s, %s) ON CONFLICT (name)"
         " DO UPDATE SET position = EXCLUDED.position, updated_at = now()")


class Relay(Leader):
    """Follows the event store and publishes to one JetStream stream (one relay at a time: two would
    interleave messages out of order)."""

    name, lock_key, idle_s = "relay", locks.RELAY, 1.0
    # nats-py checks each subject and reply subject with a regular expression (no blank, no
    # line break) before it publishes: about 1 µs of the 4–5 a publish costs, measured. The
    # relay builds its subjects from the prefix, checked once here, and from ids and fixed names.
    connect_options = {"skip_subject_validation": True}

    def __init__(self, pool: ConnectionPool, decode: Callable[[list[Any]], list[Any]], keys: KeyStore, *,
                 nats_url: str, database_url: str, stream: str, subject_prefix: str, duplicate_window_s: int,
                 batch_size: int = 500, replicas: int = 1, mapper: PiiMapper | None = None):
        self.pool = pool
        self.mapper = mapper  # opens import batches for their messages alone (else ``decode`` them whole)
        self.batch_size = batch_size
        self.max_bytes = MAX_BATCH_BYTES
        self.decode = decode  # stored events to domain events: only for those stored without their messages
        self.keys = keys
        self.nats_url = nats_url
        self.database_url = database_url
        super().__init__()
        self.stream = stream
        if not _SUBJECT_PREFIX.fullmatch(subject_prefix):
            raise ValueError(f"the NATS subject prefix {subject_prefix!r} is not a subject: tokens of printable"
                             " characters but '*' and '>', separated by dots")
        self.prefix = subject_prefix
        self.duplicate_window_s = duplicate_window_s
        self.replicas = replicas  # CONTACTS_NATS_REPLICAS: 3 on a 3-node cluster, so the stream survives a node
        self.acks: AckWindow | None = None
        self.fast: FastBatch | None = None  # where the server and the stream take fast-ingest batches
        self.batching = True  # False once a server refused a fast batch: one by one from then on
        self.published_total = 0
        # The checkpoint as this leader last read or wrote it (None: read it first), and a
        # position published and acknowledged but not yet written: the next read writes it.
        self.saved: int | None = None
        self.unsaved: int | None = None
        self.rate = RateMeter()
        self.next_query: str | None = None
        # Open while the relay wants a wake-up per stored event; closed while it publishes
        # batch after batch (service/worker.py listen: the LISTEN connection stops listening).
        self.wakeups_wanted = asyncio.Event()
        self.wakeups_wanted.set()

    # -- checkpoint --------------------------------------------------------------------

    def position(self) -> int:
        # relay_tracking is made with the rest of the write side's tables (command/schema.sql, applied
        # by service/schema.py before any process runs): not here as well.
        with self.pool.connection() as conn:
            row = conn.execute("SELECT position FROM relay_tracking WHERE name = %s", (RELAY_NAME,)).fetchone()
            return row[0] if row else 0

    def _checkpoint(self, position: int, erasures: list[tuple[int, Any]]) -> None:
        """Move past ``position`` now, queueing the erasures met on the way in the same transaction."""
        with self.pool.connection() as conn, conn.transaction():
            erasure.record(conn, erasures)
            conn.execute(_SAVE, (RELAY_NAME, position))
        erasures.clear()  # queued for good
        self.saved, self.unsaved = position, None

    # -- NATS --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS, start the ack window, and make the stream if it is missing."""
        await super().start()
        self.acks = AckWindow(self.nc)
        await self.acks.start()
        batching = self.batching and _knows_fast_batches(self.nc)
        config = StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"], storage=StorageType.FILE,
                              duplicate_window=float(self.duplicate_window_s), num_replicas=self.replicas,
                              allow_batched=True if batching else None)
        try:
            info = await self.js.stream_info(self.stream)  # exists: keep the operator's settings
        except nats.js.errors.NotFoundError:
            info = await self.js.add_stream(config)
        self.fast = None
        if batching and info.config.allow_batched:
            self.fast = FastBatch(self.nc)
            await self.fast.start()

    async def close(self) -> None:
        await super().close()
        self.acks = self.fast = None
        self.lead_taken()  # after a failure the round starts over from the checkpoint in the table

    def lead_taken(self) -> None:
        """Forget the checkpoint kept in memory: another leader may have moved it meanwhile."""
        self.saved = self.unsaved = None
        self.wakeups_wanted.set()

    # -- main loop ---------------------------------------------------------------------

    async def publish_pending(self) -> int:
        """Publish everything after the checkpoint; return how many messages were published.

        Each batch is one statement (``_next``) that also writes the checkpoint of the
        batch before it. Acks are awaited at the end of a batch and every ``window``
        messages inside one; the checkpoint moves to the last notification whose messages
        were all acknowledged. A batch that was not full is followed by a short pause
        (``coalesce_s``) so that the next one carries the events stored meanwhile.
        """
        total = 0
        window = 2000
        started = time.monotonic()
        streak = 0  # batches found one after the other in this round
        if self.saved is None:
            self.saved = await asyncio.to_thread(self.position)
        while True:
            after = self.unsaved if self.unsaved is not None else self.saved
            batch = await asyncio.to_thread(self._next, after, self.unsaved)
            if self.unsaved is not None:
                self.saved, self.unsaved = self.unsaved, None  # written by that statement
            self.rate.add(len(batch.notifications))
            if not batch.notifications:
                self.wakeups_wanted.set()
                return total
            streak += 1
            if streak == BUSY_BATCHES:
                self.wakeups_wanted.clear()  # it looks again after each pause anyway
            acks = self._sender(batch)
            erasures: list[tuple[int, Any]] = []  # (position, contact.purged message) for the eraser
            for n in batch.notifications:
                messages = batch.ready.get(n.id)
                if messages is None:  # an import batch: a thousand messages, built when their turn comes
                    messages = [m for _, m in await asyncio.to_thread(self._messages, [n], batch.keys)]
                for m in messages:
                    if m.erases:
                        # Not published here: queued with the checkpoint, after the acks of
                        # everything before it, for the eraser (events/erasure.py).
                        erasures.append((n.id, m))
                        continue
                    await acks.publish(m.subject, m.payload, m.msg_id)
                    total += 1
                if acks.in_flight >= window:
                    await acks.settle()
                    await asyncio.to_thread(self._checkpoint, n.id, erasures)
            await acks.settle()
            self.published_total = total
            last = batch.notifications[-1].id
            if erasures:
                await asyncio.to_thread(self._checkpoint, last, erasures)
            else:
                self.unsaved = last
            if time.monotonic() - started > ROUND_S:
                # Back to the leader's loop, which checks the lock still holds, and at once
                # here again; the next batch writes the checkpoint.
                self.wakeup.set()
                return total
            if not batch.full:
                await asyncio.sleep(self.coalesce_s())

    def _sender(self, batch: Batch) -> AckWindow | FastBatch:
        """Fast-ingest batches for a batch of many messages where the stream takes them, else an ack each."""
        if self.fast is not None and (len(batch.ready) < len(batch.notifications)  # an import batch
                                      or sum(map(len, batch.ready.values())) >= FAST_BATCH_MIN):
            return self.fast
        return self.acks

    def coalesce_s(self) -> float:
        """How long notifications gather before the relay looks again: longer as the rate grows, bounded.

        Idle, the first write after a pause wakes the relay at once; under load each
        look carries the events of a few milliseconds, so that the statement, the ack
        round trip and the wake-up are paid once for many events.
        """
        return min(MAX_COALESCE_S, max(MIN_COALESCE_S, self.rate.per_s * COALESCE_PER_EVENT_S))

    def _next(self, after: int, checkpoint: int | None) -> Batch:
        """The next batch, read with its contacts' keys, its messages built (import batches' excepted).

        One statement (``_NEXT``): it writes ``checkpoint`` if given, reads the notifications
        after ``after`` bounded by count and stored size, joins each contact's key, and
        emits a transactional logical message so that its commit waits for the WAL flush:
        writes commit before their flush (command/unit_of_work.py), and this one returns
        only once every event it read is on disk. A crash cannot take back a published event.
        """
        with self.pool.connection() as conn:
            if self.next_query is None:  # composed once: composing it again cost 22 µs a batch
                self.next_query = _NEXT.as_string(conn)
            # Binary results: a batch's state and messages come as bytes, not as hex text twice
            # their size that PostgreSQL encodes and psycopg decodes (an import batch: ~0.5 MB).
            rows = conn.execute(self.next_query, {"name": RELAY_NAME, "checkpoint": checkpoint, "after": after,
                                                  "limit": self.batch_size, "max_bytes": self.max_bytes},
                                binary=True).fetchall()
        notifications = [Stored(*row[:6]) for row in rows]
        keys = {row[1]: (bytes(row[6]) if row[6] is not None else None) for row in rows if row[7]}
        ordinary = [n for n in notifications if n.topic not in IMPORT_BATCH_TOPICS]
        ready: dict[int, list[Any]] = {}
        if ordinary:
            for position, m in self._messages(ordinary, keys):
                ready.setdefault(position, []).append(m)
            for n in ordinary:
                ready.setdefault(n.id, [])
        return Batch(notifications, ready, keys, len(rows) >= self.batch_size or len(ordinary) < len(notifications)
                     or _cut_by_size(rows, self.max_bytes))

    def _messages(self, notifications: list[Stored], keys: dict[UUID, bytes | None]) -> list[tuple[int, Any]]:
        """The messages of each notification: the stored ones completed, else decoded from the event (stored
        before its messages were, without them, or its contact's key is gone). ``keys`` came with the batch;
        a key it lacks is fetched."""
        frames = {n.id: outbox.decode(n.messages) for n in notifications if n.messages is not None}
        if frames:
            missing = [cid for cid in outbox.sealed_by(frames.values()) if cid not in keys]
            keys = {**keys, **self.keys.get_many(missing)} if missing else keys
        done = {position: outbox.complete(f, position, self.prefix, keys) for position, f in frames.items()}
        stale = [n for n in notifications if done.get(n.id) is None]
        if self.mapper is not None and any(n.topic in IMPORT_BATCH_TOPICS for n in stale):
            # An import batch's thousand contacts opened only as far as their messages need.
            for n in self._with_state([n for n in stale if n.topic in IMPORT_BATCH_TOPICS]):
                opened = self.mapper.open_import_batch(n)
                if opened is not None:
                    done[n.id] = import_messages(*opened, n.id, self.prefix)
            stale = [n for n in stale if done.get(n.id) is None]
        if stale:
            # A purged contact's key is gone: decoding its event yields the ``erased`` message.
            with self.keys.batch(()):
                self.keys.seed_cache(keys)  # the decoder asks only for keys the batch lacks
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
        try:
            await self.publish_pending()
        except BatchingRefused:
            # A server or stream that takes no fast batches (an older server in a cluster, the
            # setting turned off): the round starts again from the checkpoint, an ack each.
            self.batching = False
            raise


class Batch(NamedTuple):
    """What one look at the log found: the notifications, the messages built already, their contacts' keys."""

    notifications: list[Stored]
    ready: dict[int, list[Any]]         # notification id → its messages (not for import batches)
    keys: dict[UUID, bytes | None]      # each contact's key, None where it is gone (purged)
    full: bool                          # more is waiting: look again at once


class RateMeter:
    """Events per second published lately (an exponential average over about half a second)."""

    def __init__(self, tau_s: float = 0.5):
        self.tau_s = tau_s
        self.per_s = 0.0
        self.last = time.monotonic()

    def add(self, events: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self.last, 1e-3)
        self.last = now
        self.per_s += (1 - math.exp(-elapsed / self.tau_s)) * (events / elapsed - self.per_s)


class Stored(NamedTuple):
    """One row of the notification log as the relay reads it."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes | None      # read only for an event stored without its messages
    messages: bytes | None   # events/outbox.py


def _knows_fast_batches(nc: Any) -> bool:
    """Whether the connected server takes JetStream fast-ingest batches (nats-server 2.14 or later)."""
    version = nc.connected_server_version
    try:
        return (version.major, version.minor) >= (2, 14)
    except (TypeError, ValueError, AttributeError):  # an unreadable version: the safe way
        return False


def _cut_by_size(rows: list[Any], max_bytes: int) -> bool:
    """Whether a batch's stored size came near its bound (the last column: the running size)."""
    return bool(rows) and rows[-1][-1] * 2 >= max_bytes

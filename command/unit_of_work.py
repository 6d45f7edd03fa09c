"""The unit of work: one PostgreSQL transaction per command, read tables included.

A command's events, the write-side rows that go with them (phone claims and releases,
the contacts' new keys, import origins and idempotency keys), the read-table rows the
projector derives from the events, and the projection's position all commit together
(an *inline* projection, as Marten's are). When a write answers, every reader sees it:
there is nothing to wait for and nothing to catch up.

The order inside the transaction keeps the events table's lock (the append lock, an
advisory lock: command/locks.py) short and free of deadlocks:

1. keys (with an import batch's origin), claims, idempotency key and releases (row locks on write-side
   tables only: nothing done after the lock touches them, so a writer waiting for the
   lock never holds what the lock's holder needs; claims in one order, so two imports
   never deadlock on each other's numbers); new contacts' claims, keys, append and
   projection are one statement for a group of creates (``create``, ``LoopGroups``,
   ``create_contacts`` in command/schema.sql), whose new rows go before the lock too;
   before those, an import batch's new read rows (its contacts and their memberships,
   ``project_ahead``): no other writer can see them until the commit, so they need no
   place in the log's order, and they are the dearest part of a batch (the ``COPY``
   into ``contacts`` and its nine indexes); before those, the batch takes an advisory
   lock shared, which the rebuild's swap takes alone (command/locks.py); after its
   claims, it waits for the batch of its import ahead of it (``before_lock``);
2. ``append_events`` (``command/schema.sql``), one statement: the append lock
   (from here to the commit writers are serialised, so notification ids are in commit
   order and the relay never passes a gap that fills later), the events with their NATS
   messages (encoded and sealed before the lock: ``events/outbox.py``), the projection's
   position and the relay's wake-up;
3. the projector's statements, from the events in memory (no read-back, no decryption),
   and from the contacts' rows it read before the lock (``prefetch``), so no statement
   under the lock waits for an answer: for an import batch, only the rows writers share
   (list totals, the tag index, time counts, the job's row) and a check that the
   batch's lists still exist (a list deleted since step 1 loses the batch's members),
   sent in one pipeline with step 2 (``_commit_import_batch``);
4. ``COMMIT``, without waiting for the WAL flush; the flush is awaited after it,
   outside the lock (``wait_for_flush``), before the write is acknowledged (an import
   batch's by the import's last save, which is acknowledged, not by each batch).

A write with no write-side rows whose every event the projector applies with one
server-side call (a PATCH that keeps the number, a list-add or -remove, an opt-out) skips 1 and sends 2
and 3 as one statement, its own transaction (``commit_contact_events``), then the flush
wait.

The projector runs under the lock so that the read tables are built in exactly the
order of the notification log, which is the order a rebuild replays: live and rebuilt
tables cannot differ by an interleaving. A projector that fails rolls everything back:
the write answers an error and nothing is stored.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent
from psycopg import Cursor, sql
from psycopg.rows import tuple_row

from command.domain import Contact, ContactImport
from command.group_commit import LoopGroups, WriteGroups, sqlstate, stored_nothing
from command.ids import uuid_array
from command.locks import WRITE_AHEAD

EVENTS_TABLE = "contacts_events"
SMALL_KEY_SET = 20  # up to this many new keys (and no import batch) a write goes in pipeline mode
GROUPED_EVENTS = 50  # a write of more events than this (a bulk action's chunk) commits alone


class Projector(Protocol):
    """Applies one domain event to the read tables inside the caller's transaction."""

    name: str

    def prefetch(self, events: list[Any], cur: Cursor[Any]) -> None:
        """Before the lock: read what applying ``events`` will need (kept for this thread until ``forget``)."""

    def apply(self, event: Any, cur: Cursor[Any]) -> None: ...

    def project_ahead(self, events: list[Any], cur: Cursor[Any]) -> None:
        """Before the lock: the read rows of ``events`` that no other writer can see until the commit (an
        import batch's new contacts), so that ``apply`` writes only what writers share under the lock."""

    def forget(self) -> None: ...

    def created_row(self, event: Any) -> str:
        """A new contact's read row as JSON, for the create's single statement (``UnitOfWork.create``)."""

    def server_call(self, event: Any) -> tuple[str, str] | None:
        """The event's projection as one server-side call (kind, JSON argument), or None if it is not one."""

    def prepare_import(self, event: Any, started: Any) -> None:
        """Before the unit of work, in the importing thread: format an import batch's read rows ahead
        (``started``: the import's start); applying the batch then only sends them."""


class Outbox(Protocol):
    """Encodes an event's published messages before it is stored (``events/outbox.py``), sealing personal
    data with the contact's key from ``key_of``."""

    def __call__(self, event: Any, key_of: Any) -> bytes | None: ...


DEADLOCK = psycopg.errors.DeadlockDetected.sqlstate


#: New contacts' keys (``_keys``: the keys as one bytea the server cuts into KEY_BYTES each, the
#: import batch that created them or two NULLs, the ids): alone, or ahead of a write's claims in one
#: statement. One statement whatever their number: an import batch's thousand keys went by COPY, two
#: round trips more in its transaction (each one a wait for the GIL in a busy API), and took longer
#: to format than to send as one blob.
KEY_BYTES = 32  # AES-256 (command/crypto.py)
INSERT_KEYS = ("INSERT INTO contact_keys (contact_id, key, import_id, import_version)"
               f" SELECT k.id, substring(%b::bytea FROM (k.n::integer - 1) * {KEY_BYTES} + 1 FOR {KEY_BYTES}),"
               " %s::uuid, %s::integer FROM unnest(%s::uuid[]) WITH ORDINALITY AS k(id, n)")


class UnitOfWork:
    """Commits a command: events, write-side rows and read-table rows in one transaction."""

    def __init__(self, datastore: Any, mapper: Mapper, projector: Projector, channel: str,
                 outbox: Outbox | None = None):
        self.datastore = datastore
        self.mapper = mapper
        self.projector = projector
        self.channel = channel
        self.outbox = outbox
        self.creates = LoopGroups(self._store_creates)
        self.writes = WriteGroups(self._commit_writes, alone_if=stored_nothing)  # the use cases that run in threads
        self.loop_writes = LoopGroups(self._commit_group, limit=32, alone_if=stored_nothing)  # those on the loop

    def commit(self, events: Sequence[Any], **kwargs: Any) -> None:
        """Store ``events`` and everything that goes with them, or nothing (``prepare`` says what goes).

        A concurrent write to the same aggregate, or a phone number claimed concurrently,
        raises eventsourcing's ``IntegrityError`` and stores nothing. A write returns once it
        is committed and on disk: every reader sees it, and a crash keeps it.
        """
        if not events:
            return
        write = self.prepare(events, **kwargs)
        if write.apart is not None:
            self._commit_writes([write], **write.apart)
        else:
            self.writes.submit(write)

    async def commit_async(self, write: _Write) -> None:
        """``commit`` for a use case on the event loop: ``write`` (``prepare``) joins the loop's next group.

        A group is one transaction in one thread (``LoopGroups``), so a write takes no
        thread of its own; a write that commits alone (an import batch, a large write) takes one.
        """
        if write.apart is not None:
            await asyncio.to_thread(self._commit_writes, [write], **write.apart)
        else:
            await self.loop_writes.submit(write)

    def prepare(self, events: Sequence[Any], *, account_id: UUID | None = None,
                claims: Iterable[tuple[UUID, UUID]] = (), releases: Iterable[tuple[UUID, UUID, bool]] = (),
                origin: tuple[UUID, int] | None = None, new_keys: dict[UUID, bytes] | None = None,
                idempotency: tuple[str, UUID, bytes | None] | None = None,
                stored: Sequence[StoredEvent] | None = None,
                before_lock: Callable[[], None] | None = None) -> _Write:
        """A write of ``events`` ready to commit, sealed now (before any lock; inside the caller's key batch).

        ``stored`` is ``events`` already mapped (sealed) by the caller, as an import does
        for its next batch while this one commits. ``origin`` (import id, version of its
        batch event) is the event that creates the contacts of ``new_keys``, stored beside
        their keys. An import batch's ``before_lock`` is called in its transaction, after its
        write-side rows and before its append: the import's wait for the batch ahead of it
        (it raises to roll the batch back when that one was not stored).
        """
        write = _Write(events, self._encode(events, stored), account_id, sorted(claims, key=_claim_order),
                       list(releases), origin, new_keys or {}, idempotency)
        write.before_lock = before_lock
        # A single write goes in pipeline mode: every statement is sent at once and the
        # server runs them back to back, so the events lock is held for the server's own
        # work, never across a round trip or this process's wait for the GIL; and with the
        # writes that arrive while others are committed (``WriteGroups``, ``LoopGroups``). An
        # import batch writes by COPY, which a pipeline cannot carry; it and a large write go alone.
        if _import_of(events) is not None:
            # An import batch does not wait for the WAL flush: nothing is acknowledged until the
            # import's last save (Completed or Failed), whose flush covers every batch before it
            # (the WAL is written in order, so a crash loses the newest batches only, and a job
            # resumes after its last stored row); the relay publishes only what is flushed.
            write.apart = {"pipelined": False, "durable": False}
        elif len(write.new_keys) > SMALL_KEY_SET:
            write.apart = {"pipelined": False}
        elif len(events) > GROUPED_EVENTS:
            write.apart = {}
        return write

    def _commit_writes(self, group: list[_Write], pipelined: bool = True, durable: bool = True,
                       committed: Callable[[], None] = lambda: None) -> None:
        """One transaction for ``group``'s writes, in their order, then the flush wait.

        Writes with no write-side rows whose every event the projector applies with one
        server-side call (PATCHes of contacts' fields or lists, list-adds) go as one
        statement (``_commit_calls``); the others as a transaction in a pipeline. ``committed``
        is called as soon as the commit is known (``LoopGroups`` then starts the next group).
        """
        calls = [self.projector.server_call(e) for w in group for e in w.events]
        if pipelined and None not in calls and not any(w.write_side for w in group):
            self._commit_calls(group, calls, committed)  # type: ignore[arg-type]
            return
        events, stored, messages = self._flat(group)
        with self._transaction(pipelined, group, durable, committed) as cur:
            if _import_of(events) is not None:
                self._commit_import_batch(cur, group, events, stored, messages)
                return
            with cur.connection.pipeline() if not pipelined else nullcontext():
                for w in group:
                    self._write_side(cur, w.events, w.account_id, w.claims, w.releases, w.origin, w.new_keys,
                                     w.idempotency)
                self._append(cur, events, stored, messages)
            self._project(cur, events)

    def _commit_import_batch(self, cur: Cursor[Any], group: list[_Write], events: list[Any], stored: list[Any],
                             messages: list[bytes | None] | None) -> None:
        """An import batch's transaction (never pipelined: its rows go by COPY, which a pipeline cannot carry).

        Before the lock: the advisory lock the rebuild's swap waits for (command/locks.py),
        the batch's new read rows (``project_ahead``), then its keys and claims in one round
        trip, then ``before_lock`` (the import's wait for the batch ahead of it). Under the
        lock, the append and the projection's statements in one pipeline, one round trip,
        then the commit: each round trip under the lock is also a wait for the API's GIL
        while every writer of the service queues.
        """
        cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (WRITE_AHEAD,))
        self.projector.project_ahead(list(events), cur)
        with cur.connection.pipeline():
            for w in group:
                self._write_side(cur, w.events, w.account_id, w.claims, w.releases, w.origin, w.new_keys,
                                 w.idempotency)
        for w in group:
            if w.before_lock is not None:
                w.before_lock()
        with cur.connection.pipeline():
            self._append(cur, events, stored, messages)
            self._project(cur, events)

    def _commit_calls(self, group: list[_Write], calls: list[tuple[str, str]], committed: Callable[[], None]) -> None:
        """Writes with no write-side rows whose projections are all server-side calls: one statement
        (``commit_contact_events``, command/schema.sql), its own transaction, then the flush wait. A PATCH of a contact's fields or lists and a list-add go this way: no BEGIN,
        COMMIT or pipeline, which cost this process more than the statements themselves (py-spy: a third
        of a PATCH's CPU in the API was psycopg's pipeline and transaction around seven statements)."""
        events, stored, messages = self._flat(group)
        with _deadlock_as_conflict(), self.datastore.get_connection() as conn, \
                conn.cursor(row_factory=tuple_row) as cur:
            cur.execute("SELECT commit_contact_events(%s::uuid[], %s::integer[], %s::text[], %b::bytea[], %s::bytea[],"
                        " %s, %s, %s::uuid[], %s::timestamptz[], %s::text[], %s::jsonb[])",
                        (uuid_array(s.originator_id for s in stored), _literal(s.originator_version for s in stored),
                         [s.topic for s in stored], [s.state for s in stored], messages, self.projector.name,
                         self.channel, uuid_array(e.account_id for e in events), [e.timestamp for e in events],
                         [c[0] for c in calls], [c[1] for c in calls]))
            for w in group:
                w.committed = True
            committed()
            wait_for_flush(conn)

    def _commit_group(self, group: list[_Write], committed: Callable[[], None]) -> None:
        """A group of writes from the event loop (``commit_async``): one transaction."""
        self._commit_writes(group, committed=committed)

    def _flat(self, group: list[_Write]) -> tuple[list[Any], list[Any], list[bytes | None] | None]:
        """``group``'s events, stored events and NATS messages (None without an outbox), in order."""
        messages = [m for w in group for m in w.messages] if self.outbox is not None else None
        return [e for w in group for e in w.events], [s for w in group for s in w.stored], messages

    def new_contact(self, claim: tuple[UUID, UUID], events: Sequence[Any], *, account_id: UUID, key: bytes,
                    opted_out: bool) -> NewContact:
        """A new contact made ready to store (``create``): its one event, contact.created, sealed and encoded.

        Call it inside the key batch that holds the contact's key. ``opted_out`` says
        whether the event's contact is opted out.
        """
        stored, messages = self._encode(events)
        if len(stored) != 1:
            raise ValueError("a create stores exactly one event, contact.created")
        created = events[0]
        return NewContact(claim[0], account_id, claim[1], key, opted_out, stored[0], messages[0] if messages else None,
                          self.projector.created_row(created), list(created.list_ids))

    async def create(self, new: NewContact) -> UUID | None:
        """Store ``new`` with the creates that arrive with it (``LoopGroups``); the answer is its number's holder.

        The new contact itself when it was stored; another contact's id, nothing stored,
        when the number was taken; None, nothing stored, when the number carries an opt-out
        and the contact is not opted out (the caller builds it again, opted out).
        """
        await self.creates.submit(new)
        return new.holder

    def _store_creates(self, group: list[NewContact], committed: Callable[[], None]) -> None:
        """One ``create_contacts`` statement for ``group`` (command/schema.sql), then the flush wait.

        Its own transaction (autocommit; append_events commits it without waiting for the WAL
        flush), so ``committed`` runs as soon as it returns, before the flush wait. Sets each
        item's ``holder``; raises, nothing stored, if the statement fails.
        """
        group = sorted(group, key=lambda c: c.rid.int)  # claims in one order: no deadlock between two groups
        with _deadlock_as_conflict(), self.datastore.get_connection() as conn, \
                conn.cursor(row_factory=tuple_row) as cur:
            holders = cur.execute(
                "SELECT create_contacts(%s::uuid[], %s::uuid[], %s::uuid[], %b::bytea[], %s::boolean[],"
                " %s::integer[], %s::text[], %b::bytea[], %b::bytea[], %s, %s, %s::jsonb, %s::jsonb)",
                (uuid_array(c.rid for c in group), uuid_array(c.account_id for c in group),
                 uuid_array(c.contact_id for c in group), [c.key for c in group],
                 _literal("t" if c.opted_out else "f" for c in group),
                 _literal(c.stored.originator_version for c in group), [c.stored.topic for c in group],
                 [c.stored.state for c in group], [c.message for c in group], self.projector.name,
                 self.channel, "[" + ",".join(c.row for c in group) + "]",
                 msgspec.json.encode([c.list_ids for c in group]).decode())).fetchone()[0]
            committed()
            for item, holder in zip(group, holders):
                item.holder = holder
            if any(c.holder == c.contact_id for c in group):
                wait_for_flush(conn)

    def _encode(self, events: Sequence[Any], stored: Sequence[StoredEvent] | None = None
                ) -> tuple[Sequence[Any], list[bytes | None] | None]:
        """The events as stored (personal fields sealed) and their NATS messages (events/outbox.py)."""
        if stored is None:
            stored = [self.mapper.to_stored_event(event) for event in events]
        # Encoded (and sealed) here from the events in memory, so the relay sends bytes
        # instead of decoding and decrypting each event again.
        messages = [self.outbox(e, self.mapper._key) for e in events] if self.outbox is not None else None
        return stored, messages

    @contextmanager
    def _transaction(self, pipelined: bool, group: list[_Write], durable: bool,
                     committed: Callable[[], None]) -> Iterator[Cursor[Any]]:
        """One transaction on one connection; the WAL flush awaited after its commit (``wait_for_flush``)
        when ``durable``; then ``group``'s writes marked committed."""
        try:
            with _deadlock_as_conflict(), self.datastore.get_connection() as conn:
                with conn.pipeline() if pipelined else nullcontext():
                    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                        yield cur
                    # In a pipeline the flush wait travels with the transaction: one round trip
                    # for both, and the pipeline's exit raises if either failed.
                    if durable:
                        wait_for_flush(conn)
                for w in group:
                    w.committed = True
                committed()
        finally:
            self.projector.forget()

    def _append(self, cur: Cursor[Any], events: Sequence[Any], stored: Sequence[Any],
                messages: list[bytes | None] | None) -> None:
        """The events under the events table's lock (step 2), the rows the projector will need read before."""
        self.projector.prefetch(list(events), cur)
        # The states go in binary (%b): as text, psycopg's list dumper escapes every byte of
        # an import batch's half a megabyte in Python (py-spy: 13 % of the API's CPU during
        # an import); binary is a copy.
        cur.execute("SELECT append_events(%s::uuid[], %s::integer[], %s::text[], %b::bytea[], %s::bytea[], %s, %s)",
                    (uuid_array(s.originator_id for s in stored), _literal(s.originator_version for s in stored),
                     [s.topic for s in stored], [s.state for s in stored], messages, self.projector.name,
                     self.channel))

    def _project(self, cur: Cursor[Any], events: Sequence[Any]) -> None:
        """The projector's statements, under the lock (step 3)."""
        for event in events:
            self.projector.apply(event, cur)

    @staticmethod
    def _write_side(cur: Cursor[Any], events: Sequence[Any], account_id: UUID | None,
                    claims: list[tuple[UUID, UUID]], releases: list[tuple[UUID, UUID, bool]],
                    origin: tuple[UUID, int] | None, new_keys: dict[UUID, bytes],
                    idempotency: tuple[str, UUID, bytes | None] | None) -> None:
        """The write-side rows, before the events table's lock (nothing after the lock touches them)."""
        if claims:
            # A phone change's claim, or an import batch's claims, with the new contacts' keys in
            # one statement (a data-modifying CTE always runs).
            cur.execute(f"WITH k AS ({INSERT_KEYS}) SELECT claim_phone_reservations(%s::uuid[], %s, %s::uuid[], %s)",
                        (*_keys(new_keys, origin), uuid_array(c[0] for c in claims), account_id,
                         uuid_array(c[1] for c in claims), _import_of(events)))
        elif new_keys:
            cur.execute(INSERT_KEYS, _keys(new_keys, origin))
        if idempotency is not None:
            key, import_id, request_hash = idempotency
            cur.execute("INSERT INTO import_idempotency (account_id, idempotency_key, import_id, request_hash)"
                        " VALUES (%s, %s, %s, %s)", (account_id, key, import_id, request_hash))
        if releases:
            _release(cur, releases)
        purged = [e.originator_id for e in events if isinstance(e, Contact.Purged)]
        if purged:
            # Erasure: without its key, no stored event of the contact can be read again. An
            # imported contact's row stays, its key erased, for the origin it holds (history).
            cur.execute("WITH erased AS (UPDATE contact_keys SET key = NULL WHERE contact_id = ANY(%(ids)s::uuid[])"
                        " AND import_id IS NOT NULL)"
                        " DELETE FROM contact_keys WHERE contact_id = ANY(%(ids)s::uuid[]) AND import_id IS NULL",
                        {"ids": uuid_array(purged)})


class _Write:
    """A single write on its way to a transaction (``UnitOfWork.commit``), then whether it committed, or its error."""

    __slots__ = ("events", "stored", "messages", "account_id", "claims", "releases", "origin", "new_keys",
                 "idempotency", "error", "alone", "committed", "done", "apart", "before_lock")

    def __init__(self, events: Sequence[Any], encoded: tuple[Sequence[Any], list[bytes | None] | None],
                 account_id: UUID | None, claims: list[tuple[UUID, UUID]], releases: list[tuple[UUID, UUID, bool]],
                 origin: tuple[UUID, int] | None, new_keys: dict[UUID, bytes],
                 idempotency: tuple[str, UUID, bytes | None] | None):
        self.events, (self.stored, self.messages) = events, encoded
        self.account_id, self.claims, self.releases, self.origin = account_id, claims, releases, origin
        self.new_keys, self.idempotency = new_keys, idempotency
        self.error: BaseException | None = None
        self.alone = False  # its group stored nothing: it commits again on its own
        self.committed = False  # known committed: whatever fails after, it is never committed again
        self.done = threading.Event()
        # How it commits when it goes in no group: ``_commit_writes``' options (None: in a group).
        # Options, not a bound call: a partial holding ``[self]`` made every import batch a
        # reference cycle, kept (with the batch's rows, events and keys) until the collector's
        # oldest generation ran (service/heap.py collects it rarely).
        self.apart: dict[str, bool] | None = None
        self.before_lock: Callable[[], None] | None = None  # an import batch's, before its append

    @property
    def write_side(self) -> bool:
        """Whether the write has rows of the write side's tables to store with its events."""
        return bool(self.claims or self.releases or self.origin or self.new_keys or self.idempotency)


class NewContact:
    """A create on its way to ``create_contacts``: what it stores, then its answer (``holder``)."""

    __slots__ = ("rid", "account_id", "contact_id", "key", "opted_out", "stored", "message", "row", "list_ids",
                 "holder")

    def __init__(self, rid: UUID, account_id: UUID, contact_id: UUID, key: bytes, opted_out: bool,
                 stored: StoredEvent, message: bytes | None, row: str, list_ids: list[UUID]):
        self.rid, self.account_id, self.contact_id, self.key = rid, account_id, contact_id, key
        self.opted_out, self.stored, self.message, self.row, self.list_ids = opted_out, stored, message, row, list_ids
        self.holder: UUID | None = None


def wait_for_flush(conn: Any) -> None:
    """Return once every commit made before this call is on disk (the WAL is flushed past it).

    The unit of work commits without waiting for the flush (``append_events``), so that
    the events table's lock is free as soon as the commit is written, not an fsync later
    (about 2 ms on this machine: a ceiling of ~500 writes/s for the whole service). Then
    this tiny transaction commits synchronously and so waits for a flush that covers the
    earlier commit too; concurrent writers waiting here share one fsync. PostgreSQL flushes
    at commit only for a transaction that has an xid *and* wrote WAL (a bare
    ``pg_current_xact_id()`` commits asynchronously: the crash test lost acknowledged
    writes with it), hence the transactional logical message, which needs both. A write is
    answered only after this, so no acknowledged write is lost in a crash; readers may see
    a write up to one flush before it is durable.
    """
    conn.execute("SELECT pg_logical_emit_message(true, 'contacts.flush', '')")


def _keys(keys: dict[UUID, bytes], origin: tuple[UUID, int] | None) -> tuple[bytes, UUID | None, int | None, str]:
    """``INSERT_KEYS``' parameters: the keys as one blob, the batch event that created them (``origin``), the ids."""
    blob = b"".join(keys.values())
    if len(blob) != KEY_BYTES * len(keys):  # cut at the wrong places, every key after would be wrong
        raise ValueError(f"contact keys must be {KEY_BYTES} bytes each")
    import_id, version = origin or (None, None)
    return blob, import_id, version, uuid_array(list(keys))


def _release(cur: Cursor[Any], releases: list[tuple[UUID, UUID, bool]]) -> None:
    """Free the numbers of contacts that changed number or were purged (keeping their opt-out)."""
    cur.execute(
        "UPDATE phone_reservations r SET contact_id = NULL, import_id = NULL, suppressed = t.sup,"
        " updated_at = now() FROM unnest(%s::uuid[], %s::uuid[], %s::boolean[]) AS t(rid, cid, sup)"
        " WHERE r.reservation_id = t.rid AND r.contact_id = t.cid",
        (uuid_array(r[0] for r in releases), uuid_array(r[1] for r in releases),
         _literal("t" if r[2] else "f" for r in releases)))


@contextmanager
def _deadlock_as_conflict() -> Iterator[None]:
    """Two claims that crossed (a deadlock) raise ``IntegrityError``, retried like a lost race."""
    try:
        yield
    except Exception as exc:  # psycopg's, as the datastore translates it (the original is its cause)
        if sqlstate(exc) == DEADLOCK:
            raise IntegrityError(str(exc)) from exc
        raise




def _claim_order(claim: tuple[UUID, UUID]) -> int:
    """Claims are sent in reservation id order (so two writers never deadlock on each other's numbers):
    sorted by the ids' integers, as UUIDs compared in Python cost ~1.4 ms a thousand claims against 0.09."""
    return claim[0].int


def _import_of(events: Sequence[Any]) -> UUID | None:
    """The import whose batch claims the numbers (None for a single write)."""
    return next((e.originator_id for e in events if isinstance(e, ContactImport.Progressed)), None)


def _literal(values: Iterable[Any]) -> str:
    """Array literal of values whose text needs no quoting (uuids, integers, booleans)."""
    return "{" + ",".join(str(v) for v in values) + "}"

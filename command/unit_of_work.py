"""The unit of work: one PostgreSQL transaction per command, read tables included.

A command's events, the write-side rows that go with them (phone claims and releases,
the contacts' new keys, import origins and idempotency keys), the read-table rows the
projector derives from the events, and the projection's position all commit together
(an *inline* projection, as Marten's are). When a write answers, every reader sees it:
there is nothing to wait for and nothing to catch up.

The order inside the transaction keeps the events table's EXCLUSIVE lock short and
free of deadlocks:

1. keys (with an import batch's origin), claims, idempotency key and releases (row locks on write-side
   tables only: nothing done after the lock touches them, so a writer waiting for the
   lock never holds what the lock's holder needs; claims in one order, so two imports
   never deadlock on each other's numbers); a new contact's claim, key, append and
   projection are one statement (``create``, ``create_contact`` in command/schema.sql);
2. ``append_events`` (``command/schema.sql``), one statement: ``LOCK`` the events table
   (from here to the commit writers are serialised, so notification ids are in commit
   order and the relay never passes a gap that fills later), the events with their NATS
   messages (encoded and sealed before the lock: ``events/outbox.py``), the projection's
   position and the relay's wake-up;
3. the projector's statements, from the events in memory (no read-back, no decryption),
   and from the contacts' rows it read before the lock (``prefetch``), so no statement
   under the lock waits for an answer;
4. ``COMMIT``, without waiting for the WAL flush; the flush is awaited after it,
   outside the lock (``wait_for_flush``), before the write is acknowledged (an import
   batch's by the import's last save, which is acknowledged, not by each batch).

The projector runs under the lock so that the read tables are built in exactly the
order of the notification log, which is the order a rebuild replays: live and rebuilt
tables cannot differ by an interleaving. A projector that fails rolls everything back:
the write answers an error and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent
from psycopg import Cursor
from psycopg.rows import tuple_row

from command.domain import Contact, ContactImport
from command.ids import uuid_array

EVENTS_TABLE = "contacts_events"
SMALL_KEY_SET = 20  # up to this many new keys (and no import batch) a write goes in pipeline mode


class Projector(Protocol):
    """Applies one domain event to the read tables inside the caller's transaction."""

    name: str

    def prefetch(self, events: list[Any], cur: Cursor[Any]) -> None:
        """Before the lock: read what applying ``events`` will need (kept for this thread until ``forget``)."""

    def apply(self, event: Any, cur: Cursor[Any]) -> None: ...

    def forget(self) -> None: ...

    def created_row(self, event: Any) -> str:
        """A new contact's read row as JSON, for the create's single statement (``UnitOfWork.create``)."""

    def prepare_import(self, event: Any, started: Any) -> None:
        """Before the unit of work, in the importing thread: format an import batch's read rows ahead
        (``started``: the import's start); applying the batch then only sends them."""


class Outbox(Protocol):
    """Encodes an event's published messages before it is stored (``events/outbox.py``), sealing personal
    data with the contact's key from ``key_of``."""

    def __call__(self, event: Any, key_of: Any) -> bytes | None: ...


SUPPRESSED = "CT001"  # create_contact: the number carries an opt-out the new contact must honour
DEADLOCK = psycopg.errors.DeadlockDetected.sqlstate

#: A query and its parameters, whose first row a write answers with (``UnitOfWork.commit``'s ``read``).
ReadBack = tuple[Any, Any]  # the query, its parameters (a sequence or a mapping)

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

    def commit(self, events: Sequence[Any], *, account_id: UUID | None = None,
               claims: Iterable[tuple[UUID, UUID]] = (), releases: Iterable[tuple[UUID, UUID, bool]] = (),
               origin: tuple[UUID, int] | None = None, new_keys: dict[UUID, bytes] | None = None,
               idempotency: tuple[str, UUID, bytes | None] | None = None,
               stored: Sequence[StoredEvent] | None = None, read: ReadBack | None = None) -> Any:
        """Store ``events`` and everything that goes with them, or nothing.

        ``stored`` is ``events`` already mapped (sealed) by the caller, as an import does
        for its next batch while this one commits. ``origin`` (import id, version of its
        batch event) is the event that creates the contacts of ``new_keys``, stored beside
        their keys. A phone number claimed concurrently,
        or a concurrent write to the same aggregate, raises eventsourcing's
        ``IntegrityError`` and stores nothing. ``read`` (a query and its parameters) runs
        right after the commit on the same connection, in the same round trip, and its
        first row is the answer (None without events or without ``read``): a write that
        answers with what it wrote needs no second transaction.
        """
        if not events:
            return None
        encoded = self._encode(events, stored)  # sealed before any lock
        new_keys = new_keys or {}
        # A single write goes in pipeline mode: every statement is sent at once and the
        # server runs them back to back, so the events lock is held for the server's own
        # work, never across a round trip or this process's wait for the GIL. An import
        # batch writes by COPY, which a pipeline cannot carry.
        batch = _import_of(events) is not None
        pipelined = len(new_keys) <= SMALL_KEY_SET and not batch
        answer: list[Any] = []
        # An import batch does not wait for the WAL flush: nothing is acknowledged until the
        # import's last save (Completed or Failed), whose flush covers every batch before it
        # (the WAL is written in order, so a crash loses the newest batches only, and a job
        # resumes after its last stored row); the relay publishes only what is flushed.
        with self._transaction(pipelined, read, answer, durable=not batch) as cur:
            # An import batch's claims and append go in pipeline mode together (its projection's
            # COPY cannot): one round trip for both, each one a wait for the GIL in a busy API.
            with cur.connection.pipeline() if batch else nullcontext():
                self._write_side(cur, events, account_id, sorted(claims, key=_claim_order), list(releases), origin,
                                 new_keys, idempotency)
                self._append(cur, events, *encoded)
            self._project(cur, events)
        return answer[0] if answer else None

    def create(self, claim: tuple[UUID, UUID], events: Sequence[Any], *, account_id: UUID, key: bytes,
               opted_out: bool) -> UUID | None:
        """A new contact in one statement (``create_contact``, command/schema.sql), plus the flush wait.

        ``events`` say whether the contact is opted out (``opted_out``). The answer is the
        number's holder: the new contact itself when it was stored; another contact's id,
        nothing stored, when the number was taken; None, nothing stored, when the number
        carries an opt-out and ``opted_out`` is false (the caller builds the contact again,
        opted out). Two statements (``create_contact``, the flush wait): the claim, the key,
        the append and the projection run server-side, in that order, in the statement's
        own transaction.
        """
        stored, messages = self._encode(events)
        created = events[0]
        try:
            with _deadlock_as_conflict(), self.datastore.get_connection() as conn, \
                    conn.cursor(row_factory=tuple_row) as cur:
                # One statement, its own transaction (autocommit; append_events commits it
                # without waiting for the WAL flush), then the flush wait: two round trips,
                # cheaper for this process than a pipeline with BEGIN and COMMIT around it.
                holder = cur.execute(
                    "SELECT create_contact(%s, %s, %s, %b, %s, %s::uuid[], %s::integer[], %s::text[],"
                    " %b::bytea[], %s::bytea[], %s, %s, %s::jsonb, %s::uuid[])",
                    (claim[0], account_id, claim[1], key, opted_out, uuid_array(s.originator_id for s in stored),
                     _literal(s.originator_version for s in stored), [s.topic for s in stored],
                     [s.state for s in stored], messages, self.projector.name, self.channel,
                     self.projector.created_row(created), list(created.list_ids))).fetchone()[0]
                if holder == created.originator_id:
                    wait_for_flush(conn)
                return holder
        except Exception as exc:  # psycopg's, as the datastore translates it (the original is its cause)
            if _sqlstate(exc) == SUPPRESSED:
                return None
            raise

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
    def _transaction(self, pipelined: bool, read: ReadBack | None = None,
                     answer: list[Any] | None = None, durable: bool = True) -> Iterator[Cursor[Any]]:
        """One transaction on one connection; the WAL flush awaited after its commit (``wait_for_flush``)
        when ``durable``; ``read``'s first row, read after the commit, appended to ``answer``."""
        try:
            with _deadlock_as_conflict(), self.datastore.get_connection() as conn, \
                    conn.cursor(row_factory=tuple_row) as reader:
                with conn.pipeline() if pipelined else nullcontext():
                    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                        yield cur
                    if read is not None:  # after the commit: outside the events table's lock
                        reader.execute(*read)
                    # In a pipeline the flush wait travels with the transaction: one round trip
                    # for both, and the pipeline's exit raises if either failed.
                    if durable:
                        wait_for_flush(conn)
                if read is not None and answer is not None:
                    answer.append(reader.fetchone())
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
        if _sqlstate(exc) == DEADLOCK:
            raise IntegrityError(str(exc)) from exc
        raise


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, or of the one an eventsourcing error was raised from."""
    for error in (exc, exc.__cause__):
        if isinstance(error, psycopg.Error):
            return error.sqlstate
    return None


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

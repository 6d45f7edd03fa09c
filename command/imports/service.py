"""The Import command: rows in, batch events out, with a reason for every row not imported cleanly.

Rows are read lazily and handled in batches: each batch is one ``ContactImport.Progressed``
event carrying up to ``batch_size`` new contacts (each one's personal data sealed
with its own key), saved with the batch's phone claims in one transaction. A
number already held in the account, or seen earlier in the same import, skips the
row; a concurrent writer that claims a number first makes the batch retry.

Batches flow through three stages at once (``ImportService.run``): parse, resolve and
seal, store. A batch is resolved while the ones before it are being stored, so the
numbers those claim count as this import's; if a store loses a race, that batch is
redone from the database and the batches behind it are resolved again.

Two batches are stored at once, on two connections: batch N+1 starts once batch N is
about to append, so N+1's rows and claims, before the lock, overlap N's append, shared
rows and commit. N+1 appends only once N is stored (so the job's events keep their order
in the log), and rolls back if N was not (``_BatchBeforeNotStored``): no batch is stored
after one that was not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from command.application import ContactsApplication
from command.context import Actor
from command.domain import ContactImport, is_email
from command.errors import STORE_UNAVAILABLE, DomainError, InvalidPhoneError, ValidationError
from command.field_limits import MAX_TAG_CHARS, MAX_TAGS, MAX_TEXT
from command.ids import uuid7_many
from command.phones import reservation_ids

BATCH_SIZE = 1000
STORING = 2  # batches stored at once (``ImportService._store``)
BEFORE_TIMEOUT_S = 60.0  # a batch waits at most this long for the one before it to be stored
# Lines remembered to name a duplicate's earlier line: about 100 bytes each, so a file
# of a million rows keeps at most ~25 MB. Past it (or after a resumed job's restart)
# the report names the earlier contact only.
MAX_REMEMBERED_LINES = 250_000
_SHORTEST_CAP = min(MAX_TEXT.values())
# The row's text fields the sum in ``_parse`` covers: every capped one.
assert set(MAX_TEXT) == {"first_name", "last_name", "email", "notes"}, "_parse sums these fields' lengths"


class Row(Protocol):
    row: int
    line: int
    phone: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    tags: list[str]
    notes: str | None
    is_opted_out: bool


@dataclass(frozen=True)
class Parsed:
    """A batch after stage one: its rows, the parsed phones, and rows already set aside."""

    rows: list[Any]
    phones: list[tuple[Any, Any, UUID]]
    skipped: list[dict[str, Any]]


@dataclass
class Prepared:
    """A batch after stage two: the job's batch event, sealed, with its claims, keys and origin."""

    job_id: UUID
    parsed: Parsed
    events: list[Any]
    stored: list[Any]
    new_keys: dict[UUID, bytes]
    claimed: dict[UUID, UUID]  # reservation -> the new contact that claims it
    origin: tuple[UUID, int]  # the batch event (import id, version) that creates the new contacts
    counts: dict[str, int]
    redone: bool = False  # its store lost a race and it was imported again from the database
    before: Prepared | None = None  # the batch stored ahead of it, if that one is still in flight
    future: Future[None] | None = None  # its store, once submitted
    # Set once it is about to append (the batch before it is stored), or its store ended,
    # however: the batch behind it starts its transaction then, never earlier (``_store``).
    turn: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ImportOutcome:
    import_id: UUID
    counts: dict[str, int]
    replayed: bool = False  # an Idempotency-Key retry answered with the first result
    status: str = "completed"


class _BatchBeforeNotStored(IntegrityError):
    """The batch stored ahead of this one was not stored: this one, resolved against it, rolls back
    and is imported again from the database, as a batch that lost a race is."""


class ImportInProgressError(ValidationError):
    code = "import_in_progress"


class IdempotencyKeyReusedError(ValidationError):
    """The key was first used for another request (other data, list, mapping or endpoint)."""

    code = "idempotency_key_reused"


class ImportService:
    """Runs imports on the write side; thin over the application and the domain."""

    def __init__(self, app: ContactsApplication, batch_size: int = BATCH_SIZE):
        self.app = app
        self.batch_size = batch_size
        self._lines: dict[int, int] = {}  # reservation id -> the line that imported it, this run

    # -- starting ------------------------------------------------------------------------

    def existing(self, actor: Actor, idempotency_key: str,
                 request_hash: bytes | None = None) -> ContactImport | None:
        """The import first made with this key; refused if that one was made from other data."""
        row = self.app.recorder.idempotent_import(actor.account_id, idempotency_key)
        if row is None:
            return None
        # Keys stored before hashes were kept (NULL) cannot be checked, and are replayed as before.
        if row[1] is not None and request_hash is not None and bytes(row[1]) != request_hash:
            raise IdempotencyKeyReusedError(
                f"this Idempotency-Key was used for a different request (import {row[0]}): send a new key",
                field="Idempotency-Key", extra={"importId": str(row[0])})
        return self.app.repository.get(row[0])

    def start(self, actor: Actor, *, source: str, filename: str | None, list_id: UUID | None,
              idempotency_key: str | None, request_hash: bytes | None = None,
              lease: Callable[[UUID], bool] | None = None) -> tuple[ContactImport, ImportOutcome | None]:
        """Open an import job, or return the first result of an earlier one with this key and data.

        With ``lease`` (the caller's hold on a job for as long as it runs it: True if taken,
        False if a live process holds it or a worker owns it), a new job is leased before it
        is stored, and an earlier one still running that nobody holds any more (its process
        died mid-import) is returned to be run again, from after its last stored row.
        """
        if list_id is not None:
            self.app.check_lists(actor, [list_id], field="listId")
        if idempotency_key:
            earlier = self.existing(actor, idempotency_key, request_hash)
            if earlier is not None:
                return self._resumed_or_replayed(earlier, lease)
        job = ContactImport.start(actor, source=source, filename=filename, list_id=list_id,
                                  idempotency_key=idempotency_key)
        if lease is not None:
            lease(job.id)  # a new id: nobody else can hold it
        try:
            self.app.save_all(job, account_id=actor.account_id,
                              idempotency=(idempotency_key, job.id, request_hash) if idempotency_key else None)
        except IntegrityError:
            earlier = self.existing(actor, idempotency_key or "", request_hash)
            if earlier is None:
                raise
            return self._resumed_or_replayed(earlier, lease)
        return job, None

    def _resumed_or_replayed(self, earlier: ContactImport,
                             lease: Callable[[UUID], bool] | None) -> tuple[ContactImport, ImportOutcome | None]:
        """An earlier job with the request's key: to be resumed here if it was left running, else its result."""
        if earlier.status == "running" and lease is not None and lease(earlier.id):
            earlier = self.app.repository.get(earlier.id)  # as its last runner left it (it may have just ended)
            if earlier.status == "running":
                return earlier, None
        return earlier, self._replay(earlier)

    def give_up(self, actor: Actor, interrupted: ImportInterruptedError) -> ImportInterruptedError:
        """Mark an interrupted job that nothing will resume (no key, not queued) failed; if the database still
        refuses, the worker's sweep of abandoned jobs marks it later. Either way no retry resumes it."""
        counts = interrupted.counts
        try:
            job = self.fail_interrupted(actor, interrupted.job_id,
                                        f"{INTERRUPTED}: {failure_reason(interrupted.cause)}")
            counts = dict(job.counts) if job is not None else counts
        except STORE_UNAVAILABLE:
            pass
        return ImportInterruptedError(interrupted.job_id, counts, interrupted.cause, resumable=False)

    def fail_interrupted(self, actor: Actor, job_id: UUID, reason: str) -> ContactImport | None:
        """Mark a job that stopped part-way, and that nothing will resume, failed; None if it was not running."""
        job = self.app.repository.get(job_id)
        if job.status != "running":
            return None
        job.fail(actor, reason[:500])
        self.app.save_all(job)
        return job

    @staticmethod
    def _replay(job: ContactImport) -> ImportOutcome:
        if job.status == "running":
            raise ImportInProgressError(f"import {job.id} with this Idempotency-Key is still running",
                                        extra={"importId": str(job.id)})
        return ImportOutcome(import_id=job.id, counts=dict(job.counts), replayed=True, status=job.status)

    # -- running -------------------------------------------------------------------------

    def run(self, actor: Actor, job: ContactImport, rows: Iterable[Row], *, region: str | None = None,
            on_batch: Callable[[dict[str, int]], None] | None = None) -> ImportOutcome:
        """Import every row after ``job.last_row`` (so a restarted job resumes), then complete.

        Three stages overlap: a thread reads and parses batch N+2, this thread resolves
        and seals batch N+1, and two more store batches N-1 and N (their transactions are
        mostly PostgreSQL's work, and waiting on it releases the GIL).
        """
        iterator: Iterator[Row] = (r for r in rows if r.row > job.last_row)
        known_stored = dict(job.counts)  # the counts as of the last batch known stored

        def stored(counts: dict[str, int]) -> None:
            nonlocal known_stored
            known_stored = counts
            if on_batch is not None:
                on_batch(counts)

        def next_parsed() -> Parsed | None:
            batch = list(islice(iterator, self.batch_size))
            return self._parse(actor, batch, region) if batch else None

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="import-parse") as ahead, \
                    ThreadPoolExecutor(STORING, thread_name_prefix="import-store") as storing:
                pending = ahead.submit(next_parsed)
                in_flight: list[Prepared] = []  # being stored, oldest first
                while (parsed := pending.result()) is not None:
                    pending = ahead.submit(next_parsed)
                    claimed = {rid: cid for p in in_flight for rid, cid in p.claimed.items()}
                    prepared = self._prepare(actor, job, parsed, claimed)
                    if len(in_flight) == STORING and not self._stored_in_order(actor, in_flight, stored, 1):
                        # A batch ahead lost a number to a concurrent writer and was redone from
                        # the database (and so were those behind it): this one was resolved
                        # against what they would have claimed, so it is resolved again.
                        job = self.app.repository.get(job.id)
                        prepared = self._prepare(actor, job, parsed, {})
                    prepared.before = in_flight[-1] if in_flight else None
                    prepared.future = storing.submit(self._store, actor, prepared)
                    # The batch behind it waits for its turn: given however its store ends.
                    prepared.future.add_done_callback(lambda _, turn=prepared.turn: turn.set())
                    in_flight.append(prepared)
                if not self._stored_in_order(actor, in_flight, stored, len(in_flight)):
                    job = self.app.repository.get(job.id)
        except STORE_UNAVAILABLE as exc:
            # Not the file's fault: the job stays running, to be resumed after its last stored row.
            raise ImportInterruptedError(job.id, known_stored, exc) from exc
        except Exception as exc:
            job = self.app.repository.get(job.id)
            job.fail(actor, failure_reason(exc))
            self.app.save_all(job)
            raise ImportFailedError(job, exc) from exc
        job.complete(actor)
        self.app.save_all(job)
        return ImportOutcome(import_id=job.id, counts=dict(job.counts))

    def _stored_in_order(self, actor: Actor, in_flight: list[Prepared],
                         on_batch: Callable[[dict[str, int]], None] | None, count: int) -> bool:
        """Wait for the oldest ``count`` batches in flight, taking them off the list; when one was redone,
        every batch in flight (each rolled back behind it) too. True if all stored as prepared."""
        as_prepared = True
        while in_flight and (count > 0 or not as_prepared):
            as_prepared = self._stored(actor, in_flight.pop(0), on_batch) and as_prepared
            count -= 1
        return as_prepared

    def _stored(self, actor: Actor, prepared: Prepared, on_batch: Callable[[dict[str, int]], None] | None) -> bool:
        """Wait for a batch's store; redo it here if it lost a race. True if it stored as prepared."""
        assert prepared.future is not None
        try:
            prepared.future.result()
            stored_as_prepared = True
        except IntegrityError:  # a lost race, or the batch before it was not stored
            prepared.redone = True
            counts = self._import_batch(actor, self.app.repository.get(prepared.job_id), prepared.parsed).counts
            stored_as_prepared = False
        finally:
            prepared.before = None  # done with: the batches in flight hold no chain of those stored
        if on_batch is not None:
            on_batch(dict(prepared.counts) if stored_as_prepared else dict(counts))
        return stored_as_prepared

    def _parse(self, actor: Actor, batch: list[Row], region: str | None) -> Parsed:
        """Stage one, pure CPU: phones parsed, over-long fields and bad numbers set aside."""
        parsed: list[tuple[Row, Any]] = []
        skipped: list[dict[str, Any]] = []
        for row in batch:
            if not row.phone:
                skipped.append(_skip(row, "missing_phone", "the row has no phone number"))
                continue
            try:
                phone = self.app.parse(row.phone, region)
            except InvalidPhoneError as exc:
                # The report holds no values from the file: "phone '0712…' is invalid: …" loses the number.
                skipped.append(_skip(row, "unparseable_phone", exc.message.replace(f" {row.phone!r}", "")))
                continue
            # Fields that add up to no more than the smallest cap are all within theirs: most
            # rows, checked with one sum instead of a look at each field.
            if len(row.first_name or "") + len(row.last_name or "") + len(row.email or "") \
                    + len(row.notes or "") > _SHORTEST_CAP:
                too_long = [f for f, limit in MAX_TEXT.items() if len(getattr(row, f) or "") > limit]
                if too_long:
                    skipped.append(_skip(row, "field_too_long",
                                         f"{too_long[0]} is longer than {MAX_TEXT[too_long[0]]}"))
                    continue
            tags = row.tags
            if tags and (len(tags) > MAX_TAGS or max(map(len, tags)) > MAX_TAG_CHARS):
                skipped.append(_skip(row, "field_too_long",
                                     f"tags hold more than {MAX_TAGS} tags or a tag longer than {MAX_TAG_CHARS}"))
                continue
            parsed.append((row, phone))
        rids = reservation_ids(self.app.hash_key, actor.account_id, [phone.e164 for _, phone in parsed])
        return Parsed(rows=batch, phones=[(row, phone, rid) for (row, phone), rid in zip(parsed, rids)],
                      skipped=skipped)

    def _import_batch(self, actor: Actor, job: ContactImport, parsed: "Parsed") -> ContactImport:
        """Stages two and three in turn: resolve and store one batch, redone if a concurrent writer took a number."""
        for _ in range(10):
            try:
                self._store(actor, self._prepare(actor, job, parsed, {}))
                return job
            except IntegrityError:
                job = self.app.repository.get(job.id)  # a concurrent writer took a number: redo
        raise ValidationError("too many concurrent changes to the same phone numbers; retry the import")

    def _prepare(self, actor: Actor, job: ContactImport, parsed: "Parsed",
                 in_flight: dict[UUID, UUID]) -> "Prepared":
        """Stage two: check numbers against the account (and the batch being stored), record and seal the batch."""
        contacts, skipped, claims = self._resolve(job, parsed, in_flight)
        counts = dict(job.counts)
        counts["read"] += len(parsed.rows)
        counts["imported"] += len(contacts)
        counts["valid"] += sum(1 for c in contacts if c["status"] == "valid")
        counts["invalid"] += sum(1 for c in contacts if c["status"] != "valid")
        counts["skipped"] += sum(1 for s in skipped if s["outcome"] == "skipped")
        job.record_rows(actor, contacts, skipped, parsed.rows[-1].row, counts)
        events = job.collect_events()
        # The batch's read rows are formatted here, while the batch before is being stored,
        # rather than in its own transaction, under the events table's lock.
        for event in events:
            if isinstance(event, ContactImport.Progressed):
                self.app.unit_of_work.projector.prepare_import(event, job.created_on)
        ids = [c["id"] for c in contacts]
        with self.app.keys.batch([]):
            new_keys = self.app.keys.generate(ids)
            stored = [self.app.mapper.to_stored_event(e) for e in events]  # sealed outside the store's transaction
        return Prepared(job_id=job.id, parsed=parsed, events=events, stored=stored, new_keys=new_keys,
                        claimed=dict(claims), origin=(job.id, job.version), counts=counts)

    def _store(self, actor: Actor, prepared: "Prepared") -> None:
        """Stage three: one unit of work (the batch event, its claims, keys with their origin, and read rows).

        Behind a batch in flight (``prepared.before``) it starts once that one is about to
        append, so its own rows and claims, before the lock, overlap the other's append,
        shared rows and commit. It appends only once that one is stored (and rolls back if
        it was not): the job's events enter the log in version order. Waiting, it holds no
        lock the other needs (new rows, claims of other numbers), and the other, appending,
        waits for no one that waits for it: the one wait PostgreSQL cannot see closes no cycle.
        """
        before = prepared.before

        def before_lock() -> None:
            if before is not None:
                try:
                    # Bounded, so that a broken order would show as an error, not as an import that never ends.
                    before.future.result(timeout=BEFORE_TIMEOUT_S)  # type: ignore[union-attr]
                except TimeoutError:
                    raise
                except BaseException as exc:
                    raise _BatchBeforeNotStored(f"the batch before was not stored: {exc}") from exc
            prepared.turn.set()

        if before is not None:
            before.turn.wait()
        self.app.unit_of_work.commit(prepared.events, account_id=actor.account_id, claims=prepared.claimed.items(),
                                     origin=prepared.origin, new_keys=prepared.new_keys, stored=prepared.stored,
                                     before_lock=before_lock)

    def _resolve(self, job: ContactImport, parsed: "Parsed",
                 in_flight: dict[UUID, UUID]) -> tuple[list[dict], list[dict], list[tuple[UUID, UUID]]]:
        held = self._reservations([rid for _, _, rid in parsed.phones])
        # Numbers the batch being stored claims: this import's, whether or not its commit is visible yet.
        held.update({rid: (contact_id, job.id, False) for rid, contact_id in in_flight.items()})
        skipped = list(parsed.skipped)
        contacts, claims = [], []
        seen: dict[UUID, UUID] = {}  # reservation -> the contact this batch makes for it
        fresh_ids = iter(uuid7_many(len(parsed.phones)))  # time-ordered: cheaper b-tree inserts
        # One list for the batch's entries (read, never changed: the projector and the sealing
        # only read an entry), as each row's tags are its own list already (ImportRow).
        list_ids = [job.list_id] if job.list_id else []
        classify, remember, add, claim = self.app.directory.classify, self._remember_line, contacts.append, claims.append
        for row, phone, rid in parsed.phones:
            holder = held.get(rid)
            if rid in seen or (holder and holder[0] is not None and holder[1] == job.id):
                earlier = seen.get(rid) or (holder[0] if holder and holder[1] == job.id else None)
                skipped.append(self._duplicate(row, rid, earlier))
                continue
            if holder and holder[0] is not None:
                skipped.append(_skip(row, "already_exists", "the account already has a contact with this number",
                                     contact_id=holder[0]))
                continue
            contact_id = next(fresh_ids)
            seen[rid] = contact_id
            remember(rid, row.line)
            email = row.email
            if email and not is_email(email):
                skipped.append({"row": row.row, "line": row.line, "outcome": "imported",
                                "reason": "invalid_email_dropped",
                                "detail": "the email address was not valid and was left out", "contact_id": contact_id})
                email = None
            match = classify(phone)
            add({
                "id": contact_id, "row": row.row, "line": row.line,
                "pii": {"first_name": row.first_name, "last_name": row.last_name, "phone": phone.e164,
                        "email": email.lower() if email else None, "notes": row.notes},
                "tags": row.tags, "list_ids": list_ids,
                "is_opted_out": bool(holder and holder[2]) or row.is_opted_out, "reservation_id": rid, **match,
            })
            claim((rid, contact_id))
        return contacts, skipped, claims

    def _remember_line(self, rid: UUID, line: int) -> None:
        """Note the line that imported a number, for a later duplicate's report (bounded)."""
        if line and len(self._lines) < MAX_REMEMBERED_LINES:
            self._lines[rid.int] = line

    def _duplicate(self, row: Row, rid: UUID, earlier_contact: UUID | None) -> dict[str, Any]:
        """A duplicate_in_file row, naming the earlier line that imported the number when it is known."""
        earlier = self._lines.get(rid.int)
        if earlier:
            return _skip(row, "duplicate_in_file", f"the number appears earlier in this import, on line {earlier}",
                         contact_id=earlier_contact)
        return _skip(row, "duplicate_in_file", "the number appears earlier in this import", contact_id=earlier_contact)

    def _reservations(self, rids: list[UUID]) -> dict[UUID, tuple[UUID | None, UUID | None, bool]]:
        if not rids:
            return {}
        return self.app.recorder.reservations(rids)


def _skip(row: Row, reason: str, detail: str, contact_id: UUID | None = None) -> dict[str, Any]:
    return {"row": row.row, "line": row.line, "outcome": "skipped", "reason": reason, "detail": detail,
            "contact_id": contact_id}


def failure_reason(exc: Exception) -> str:
    """What the job's ``error`` says: a client error's own message; otherwise the exception's kind too."""
    if isinstance(exc, DomainError):
        return exc.message[:500]  # shown to users as it is, like the synchronous answer's message
    return f"{type(exc).__name__}: {exc}"[:500]


INTERRUPTED = "interrupted"  # how the ``error`` of a job stopped by a fault not its own begins


class ImportInterruptedError(Exception):
    """The database became unavailable part-way (or full): nothing about the request is wrong.

    The job stays running with what it stored (``counts``: as of the last batch known
    stored), to be resumed after its last stored row: by a retry with its Idempotency-Key,
    or by the worker for a queued job. ``resumable`` is False for a job sent without a key
    (``ImportService.give_up``): no retry can name it.
    """

    def __init__(self, job_id: UUID, counts: dict[str, int], cause: Exception, *, resumable: bool = True):
        super().__init__(str(cause))
        self.job_id = job_id
        self.counts = counts
        self.cause = cause
        self.resumable = resumable


class ImportFailedError(Exception):
    """The import stopped part-way; what it stored is in ``job.counts`` (reported, not hidden)."""

    def __init__(self, job: ContactImport, cause: Exception):
        super().__init__(str(cause))
        self.job = job
        self.cause = cause

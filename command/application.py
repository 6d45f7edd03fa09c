"""The write application: thin use cases that load aggregates, call them and save.

Each use case returns ``(result, position)`` where ``position`` is the notification id
of the last event it stored (0 when nothing changed); the caller waits for the
projections to reach it before answering (read-your-writes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.sql import SQL, Identifier

from command.context import Actor
from command.crypto import KeyStore, PiiMapper
from command.domain import BulkAction, Contact, ContactList, check_version
from command.errors import ConcurrencyError, NotFoundError, PhoneTakenError, UnknownListsError
from command.phones import OperatorDirectory, Phone, parse_phone, reservation_id
from command.transcoder import MsgspecJSONTranscoder

T = TypeVar("T")
SAVE_CHUNK = 500  # events per save(): large pipelined saves are known to stall


def retry_on_conflict(func: Callable[..., T]) -> Callable[..., T]:
    """Re-run a use case from a fresh load when a concurrent writer won the race."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for _ in range(8):
            try:
                return func(*args, **kwargs)
            except IntegrityError:
                continue
        raise ConcurrencyError("the resource changed concurrently too many times; retry the request")

    return wrapper


class ContactsApplication(Application):
    """Event-sourced contacts and contact lists on PostgreSQL."""

    name = "contacts"

    def __init__(self, env: dict[str, str], *, keys: KeyStore, directory: OperatorDirectory, hash_key: bytes,
                 default_region: str):
        self.keys = keys
        env = {**env, "APPLICATION_RECORDER_TOPIC": "command.recorder:ContactsRecorder"}
        super().__init__(env)
        self.directory = directory
        self.hash_key = hash_key
        self.default_region = default_region

    def construct_transcoder(self) -> MsgspecJSONTranscoder:
        transcoder = MsgspecJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_mapper(self) -> PiiMapper:
        mapper = self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=PiiMapper)
        mapper.keys = self.keys
        return mapper

    def decode(self, notifications: list[Any]) -> list[Any]:
        """Domain events of stored notifications, fetching the contacts' keys in one query.

        An import batch fetches its own contacts' keys (one query per batch, as it is
        decoded), so its half-megabyte state is parsed once, not twice.
        """
        sealed = [n.originator_id for n in notifications if ".domain:Contact." in n.topic]
        with self.keys.batch(sealed):
            return [self.mapper.to_domain_event(n) for n in notifications]

    # -- helpers ---------------------------------------------------------------------

    def save_all(self, *objs: Any, account_id: UUID | None = None,
                 claims: Iterable[tuple[UUID, UUID]] = (),
                 releases: Iterable[tuple[UUID, UUID, bool]] = (), **extra: Any) -> int:
        """Save aggregates' pending events (chunked), with phone claims and releases.

        A claim or release travels in the chunk holding its contact's events, so it
        commits or fails with them. Keys of contacts whose personal data is sealed
        are fetched (or created) in one round trip per chunk.
        """
        events = [e for obj in objs for e in obj.collect_events()]
        claims_by_contact = {c[1]: c for c in claims}
        releases_by_contact = {r[1]: r for r in releases}
        position = 0
        for start in range(0, len(events), SAVE_CHUNK):
            chunk = events[start:start + SAVE_CHUNK]
            ids = {e.originator_id for e in chunk}
            sealed_ids = [e.originator_id for e in chunk if isinstance(getattr(e, "pii", None), dict)]
            with self.keys.batch(sealed_ids):
                missing = [cid for cid in dict.fromkeys(sealed_ids) if self.keys.get(cid) is None]
                if missing:
                    self.keys.seed_cache(self.keys.create_many(missing))
                recordings = self.save(
                    *chunk, account_id=account_id, **extra,
                    claims=[c for cid, c in claims_by_contact.items() if cid in ids],
                    releases=[r for cid, r in releases_by_contact.items() if cid in ids])
            position = max([position, *(r.notification.id for r in recordings)])
        return position

    def _get(self, cls: type[T], aggregate_id: UUID) -> T | None:
        if cls is Contact:
            imported = self._imported_contact(aggregate_id)
            if imported is not None:
                return imported  # type: ignore[return-value]
        try:
            agg = self.repository.get(aggregate_id, projector_func=_mutate_all)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, cls) else None

    def _imported_contact(self, contact_id: UUID) -> Contact | None:
        """A contact created inside an import batch: its Created lives in that batch event."""
        events = self.aggregate_events(contact_id, imported_only=True)
        contact = None
        for event in events:
            contact = event.mutate(contact)
        return contact

    def aggregate_events(self, aggregate_id: UUID, *, imported_only: bool = False) -> list[Any]:
        """An aggregate's events in order; an imported contact's creation comes from its batch."""
        with self.keys.pool.connection() as conn:
            origin = conn.execute("SELECT import_id, import_version FROM contact_origins WHERE contact_id = %s",
                                  (aggregate_id,)).fetchone()
        if origin is None and imported_only:
            return []
        created = []
        if origin is not None:
            batch = next(iter(self.events.get(origin[0], gt=origin[1] - 1, lte=origin[1])))
            created = [batch.created_event(aggregate_id)]
        return [*created, *self.events.get(aggregate_id)]

    def reservation(self, rid: UUID) -> tuple[UUID | None, bool] | None:
        """(holder contact id or None, suppressed) of a phone reservation, if it exists."""
        with self.keys.pool.connection() as conn:
            row = conn.execute("SELECT contact_id, suppressed FROM phone_reservations WHERE reservation_id = %s",
                               (rid,)).fetchone()
        return (row[0], row[1]) if row else None

    def get_list(self, actor: Actor, list_id: UUID) -> ContactList:
        contact_list = self._get(ContactList, list_id)
        if contact_list is None:
            raise NotFoundError(f"contact list {list_id} not found", field="id")
        contact_list.check_visible_to(actor)
        return contact_list

    def get_contact(self, actor: Actor, contact_id: UUID) -> Contact:
        contact = self._get(Contact, contact_id)
        if contact is None:
            raise NotFoundError(f"contact {contact_id} not found", field="id")
        contact.check_visible_to(actor)
        return contact

    def check_lists(self, actor: Actor, list_ids: Iterable[UUID], field: str = "listIds") -> list[UUID]:
        """Return the ids de-duplicated, or raise naming every unknown or foreign one (and the request's field)."""
        wanted = list(dict.fromkeys(list_ids))
        unknown = []
        for list_id in wanted:
            found = self._get(ContactList, list_id)
            if found is None or found.account_id != actor.account_id or found.is_deleted:
                unknown.append(str(list_id))
        if unknown:
            raise UnknownListsError(f"unknown contact lists: {', '.join(unknown)}", field=field,
                                    extra={"unknownListIds": unknown})
        return wanted

    def parse(self, raw_phone: object, region: str | None = None) -> Phone:
        return parse_phone(raw_phone, region or self.default_region)

    def check_phone_free(self, actor: Actor, phone: Phone, contact_id: UUID) -> tuple[UUID, bool]:
        """The reservation id for the number and whether it carries an opt-out; 409 if held."""
        rid = reservation_id(self.hash_key, actor.account_id, phone.e164)
        found = self.reservation(rid)
        if found is not None and found[0] not in (None, contact_id):
            raise PhoneTakenError(f"phone {phone.e164} already belongs to contact {found[0]}",
                                  field="phone", extra={"contactId": str(found[0])})
        return rid, bool(found and found[1])

    # -- contact lists -----------------------------------------------------------------

    def create_list(self, actor: Actor, name: str, description: str | None) -> tuple[UUID, int]:
        contact_list = ContactList.create(actor, name, description)
        return contact_list.id, self.save_all(contact_list)

    @retry_on_conflict
    def update_list(self, actor: Actor, list_id: UUID, changes: dict[str, Any],
                    expected_version: int | None = None) -> tuple[UUID, int]:
        contact_list = self.get_list(actor, list_id)
        check_version(contact_list, expected_version)
        contact_list.update(actor, changes)
        return list_id, self.save_all(contact_list)

    @retry_on_conflict
    def delete_list(self, actor: Actor, list_id: UUID, expected_version: int | None = None) -> tuple[None, int]:
        contact_list = self.get_list(actor, list_id)
        check_version(contact_list, expected_version)
        contact_list.delete(actor)
        return None, self.save_all(contact_list)

    # -- contacts ------------------------------------------------------------------------

    def create_contact(self, actor: Actor, *, phone: str, region: str | None = None,
                       pii: dict[str, Any], tags: list[str], list_ids: list[UUID],
                       is_opted_out: bool = False) -> tuple[UUID, int]:
        parsed = self.parse(phone, region)
        list_ids = self.check_lists(actor, list_ids)
        for _ in range(3):
            contact_id = uuid4()
            rid, suppressed = self.check_phone_free(actor, parsed, contact_id)
            contact = Contact.create(
                actor, contact_id=contact_id, pii={**pii, "phone": parsed.e164}, tags=tags, list_ids=list_ids,
                is_opted_out=is_opted_out or suppressed,
                directory_match=self.directory.classify(parsed), reservation_id=rid,
            )
            try:
                return contact.id, self.save_all(contact, account_id=actor.account_id,
                                                 claims=[(rid, contact_id)])
            except IntegrityError:
                continue  # a concurrent claim won: check again and report who holds it
        raise ConcurrencyError("the phone number changed hands concurrently; retry the request")

    @retry_on_conflict
    def update_contact(self, actor: Actor, contact_id: UUID, *, pii: dict[str, Any],
                       changes: dict[str, Any], region: str | None = None,
                       list_ids: list[UUID] | None = None, is_opted_out: bool | None = None,
                       expected_version: int | None = None) -> tuple[UUID, int]:
        contact = self.get_contact(actor, contact_id)
        check_version(contact, expected_version)
        claims, releases = [], []
        if "phone" in pii:
            parsed = self.parse(pii["phone"], region)
            pii["phone"] = parsed.e164
            if parsed.e164 != contact.phone:
                rid, suppressed = self.check_phone_free(actor, parsed, contact.id)
                claims.append((rid, contact.id))
                releases.append((contact.reservation_id, contact.id, contact.is_opted_out))
                if suppressed and is_opted_out is None:
                    is_opted_out = True  # the new number opted out before: keep honouring it
                changes = {**changes, **self.directory.classify(parsed), "reservation_id": rid}
        if list_ids is not None:
            list_ids = self.check_lists(actor, list_ids)
        contact.update(actor, pii, changes)
        if list_ids is not None:
            contact.sync_lists(actor, list_ids)
        if is_opted_out is not None:
            contact.set_opted_out(actor, is_opted_out)
        return contact_id, self.save_all(contact, account_id=actor.account_id, claims=claims, releases=releases)

    @retry_on_conflict
    def add_to_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> tuple[int, int]:
        self.get_list(actor, list_id)
        changed = [c for c in self._active_contacts(actor, contact_ids) if c.add_to_lists(actor, [list_id])]
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def remove_from_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> tuple[int, int]:
        self.get_list(actor, list_id)
        changed = [c for c in self._active_contacts(actor, contact_ids) if c.remove_from_lists(actor, [list_id])]
        return len(changed), self.save_all(*changed)

    # -- bulk actions (select-all) -----------------------------------------------------------

    @retry_on_conflict
    def bulk(self, actor: Actor, action: str, params: dict[str, Any], contact_ids: list[UUID]) -> tuple[int, int]:
        """Do ``action`` to the account's active contacts among ``contact_ids``; count those it changed."""
        changed = self._act(actor, action, params, contact_ids)
        return len(changed), self.save_all(*changed)

    def start_bulk(self, actor: Actor, job_id: UUID, action: str, params: dict[str, Any],
                   matched: int) -> tuple[UUID, int]:
        """A bulk action queued as a job (its matches are already stored under ``job_id``)."""
        if action in ("add_to_list", "remove_from_list"):
            self.get_list(actor, UUID(params["list_id"]))
        job = BulkAction.start(actor, action=action, params=params, matched=matched, job_id=job_id)
        return job.id, self.save_all(job)

    @retry_on_conflict
    def bulk_step(self, actor: Actor, job_id: UUID, contact_ids: list[UUID]) -> tuple[int, int]:
        """One step of a bulk job: the contacts' changes and the job's progress, saved together."""
        job = self.repository.get(job_id)
        changed = self._act(actor, job.action, job.params, contact_ids)
        job.progress(actor, len(contact_ids), len(changed))
        return len(changed), self.save_all(*changed, job)

    def end_bulk(self, actor: Actor, job_id: UUID, failure: str | None = None) -> tuple[None, int]:
        """Mark a bulk job completed, or failed with ``failure``."""
        job = self.repository.get(job_id)
        if failure is None:
            job.complete(actor)
        else:
            job.fail(actor, failure)
        return None, self.save_all(job)

    def _act(self, actor: Actor, action: str, params: dict[str, Any], contact_ids: list[UUID]) -> list[Contact]:
        """The contacts ``action`` changed (their events pending), of the account's active ones."""
        if action in ("add_to_list", "remove_from_list"):
            self.get_list(actor, UUID(str(params["list_id"])))
        list_ids = [UUID(str(params["list_id"]))] if "list_id" in params else []
        tags = list(params.get("tags", []))
        do = {"delete": lambda c: c.trash(actor), "add_to_list": lambda c: c.add_to_lists(actor, list_ids),
              "remove_from_list": lambda c: c.remove_from_lists(actor, list_ids),
              "tag": lambda c: c.tag(actor, tags), "untag": lambda c: c.untag(actor, tags),
              "opt_out": lambda c: c.opt_out(actor), "opt_in": lambda c: c.opt_in(actor)}[action]
        return [c for c in self._active_contacts(actor, contact_ids) if do(c)]

    def _active_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> Iterable[Contact]:
        for contact in self._load_contacts(list(dict.fromkeys(contact_ids))).values():
            if contact.account_id == actor.account_id and contact.is_active:
                yield contact

    def _load_contacts(self, contact_ids: list[UUID]) -> dict[UUID, Contact]:
        """Many contacts at once: each import batch holding their creations is decoded once, not once per
        contact (a bulk action over 5,000 imported contacts ran at 16 contacts/s loading them one by one),
        and their keys are fetched in one query."""
        with self.keys.pool.connection() as conn:
            origins = dict(((r[0], (r[1], r[2])) for r in conn.execute(
                "SELECT contact_id, import_id, import_version FROM contact_origins WHERE contact_id = ANY(%s)",
                (contact_ids,))))
        batches: dict[tuple[UUID, int], dict[UUID, Any]] = {}
        found: dict[UUID, Contact] = {}
        with self.keys.batch(contact_ids):
            own = self._own_events(contact_ids)
            for contact_id in contact_ids:
                contact = None
                if contact_id in origins:
                    if origins[contact_id] not in batches:
                        import_id, version = origins[contact_id]
                        batch = next(iter(self.events.get(import_id, gt=version - 1, lte=version)))
                        batches[origins[contact_id]] = {e.originator_id: e for e in batch.created_events()}
                    contact = batches[origins[contact_id]][contact_id].mutate(None)
                contact = _mutate_all(contact, own.get(contact_id, []))
                if isinstance(contact, Contact):
                    found[contact_id] = contact
        return found

    def _own_events(self, contact_ids: list[UUID]) -> dict[UUID, list[Any]]:
        """Each aggregate's own stored events, in order, in one query (not one per aggregate)."""
        table = SQL("{}.{}").format(Identifier(self.recorder.datastore.schema),
                                    Identifier(self.recorder.events_table_name))
        with self.keys.pool.connection() as conn:
            rows = conn.execute(SQL("SELECT originator_id, originator_version, topic, state FROM {}"
                                    " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
                                    ).format(table), (contact_ids,)).fetchall()
        own: dict[UUID, list[Any]] = {}
        for originator_id, version, topic, state in rows:
            stored = StoredEvent(originator_id=originator_id, originator_version=version, topic=topic,
                                 state=bytes(state))
            own.setdefault(originator_id, []).append(self.mapper.to_domain_event(stored))
        return own

    def _trashed_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> Iterable[Contact]:
        for contact_id in dict.fromkeys(contact_ids):
            contact = self._get(Contact, contact_id)
            if (contact is not None and contact.account_id == actor.account_id
                    and contact.deleted_at is not None and not contact.is_purged):
                yield contact

    # -- trash -------------------------------------------------------------------------------

    @retry_on_conflict
    def trash(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """SoftDelete: active contacts of the account move to the trash."""
        changed = [c for c in self._active_contacts(actor, contact_ids) if c.trash(actor)]
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def trash_contact(self, actor: Actor, contact_id: UUID, expected_version: int | None = None) -> tuple[None, int]:
        """SoftDelete of one contact, if it is still at ``expected_version`` (when given); 404 if not active."""
        contact = self.get_contact(actor, contact_id)
        check_version(contact, expected_version)
        contact.trash(actor)
        return None, self.save_all(contact)

    @retry_on_conflict
    def restore(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """Restore: trashed contacts come back with their lists and tags."""
        changed = [c for c in self._trashed_contacts(actor, contact_ids) if c.restore(actor)]
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def purge(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """Purge: trashed contacts are erased; their numbers are freed (opt-outs kept)."""
        purged = [c for c in self._trashed_contacts(actor, contact_ids) if c.purge(actor)]
        releases = [(c.reservation_id, c.id, c.is_opted_out) for c in purged]
        return len(purged), self.save_all(*purged, account_id=actor.account_id, releases=releases)


def _mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its per-event ``isinstance`` check
    against a runtime-checkable Protocol, which costs about 29 µs an event on Python 3.11
    (timeit, 20,000 checks): a single write loads its contact's events first."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate

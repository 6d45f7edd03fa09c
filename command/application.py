"""The write application: thin use cases that load aggregates, call them and save.

Each use case returns its result (the new id, a count). Saving is one unit of work
(``command/unit_of_work.py``): the events and the read-table rows derived from them
commit together, so a caller that gets the result can read it at once.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from command.context import Actor
from command.crypto import KeyStore, PiiMapper
from command.domain import BulkAction, Contact, ContactList, check_version
from command.errors import ConcurrencyError, NotFoundError, PhoneTakenError, UnknownListsError
from command.group_commit import LoopGroups
from command.phones import OperatorDirectory, Phone, parse_phone, reservation_id
from command.transcoder import MsgspecJSONTranscoder
from command.turns import one_at_a_time
from command.unit_of_work import NewContact, Outbox, Projector, UnitOfWork

T = TypeVar("T")
SAVE_CHUNK = 500  # events per save(): large pipelined saves are known to stall
RETRIES = 8  # a use case re-run from a fresh load after a lost race, at most
#: The longest wait before the first re-run; each later one waits up to twice as long as the
#: one before, a random part of it, so that writers that lost together come back at
#: different times instead of meeting again. This process's writers of one aggregate take
#: turns (``command/turns.py``) and do not race; these waits are for writers in other
#: processes. Measured before the turns, with the service's own API (400 requests, 8
#: clients at once): PATCHes of one contact answered 68 times 409 re-run at once, 23 with
#: waits of up to 2 ms doubling; renames of one list 37 and 25.
BACKOFF_S = 0.002


def _backoff(attempt: int) -> float:
    """How long to wait before re-running after lost race ``attempt`` (0 for the first): full jitter."""
    return random.uniform(0, BACKOFF_S * 2 ** attempt)


def retry_on_conflict(func: Callable[..., T]) -> Callable[..., T]:
    """Re-run a use case from a fresh load when a concurrent writer won the race (a coroutine's too)."""
    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def retrying(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(RETRIES):
                try:
                    return await func(*args, **kwargs)
                except IntegrityError:
                    if attempt + 1 < RETRIES:
                        await asyncio.sleep(_backoff(attempt))
            raise _too_many_conflicts()

        return retrying  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(RETRIES):
            try:
                return func(*args, **kwargs)
            except IntegrityError:
                if attempt + 1 < RETRIES:
                    time.sleep(_backoff(attempt))
        raise _too_many_conflicts()

    return wrapper


def _too_many_conflicts() -> ConcurrencyError:
    return ConcurrencyError("the resource changed concurrently too many times; retry the request")


class ContactsApplication(Application):
    """Event-sourced contacts and contact lists on PostgreSQL."""

    name = "contacts"

    #: Set by the composition root once the schema exists (``service/bootstrap.py``).
    directory: OperatorDirectory
    hash_key: bytes

    def __init__(self, env: dict[str, str], *, keys: KeyStore, default_region: str, projector: Projector,
                 outbox: Outbox | None = None):
        self.keys = keys
        env = {**env, "APPLICATION_RECORDER_TOPIC": "command.recorder:ContactsRecorder"}
        super().__init__(env)
        self.default_region = default_region
        self.unit_of_work = UnitOfWork(self.recorder.datastore, self.mapper, projector, self.recorder.channel_name,
                                       outbox)
        # The loads of use cases on the loop. A load cannot fail for its own ids (a database away
        # fails the whole group), so a failed group answers every load with its error, at once.
        self.loads: LoopGroups[_Load] = LoopGroups(self._load_group, alone_if=lambda error: False)

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
                 releases: Iterable[tuple[UUID, UUID, bool]] = (),
                 idempotency: tuple[str, UUID, bytes | None] | None = None) -> None:
        """Save aggregates' pending events (chunked), each chunk one unit of work with its phone claims and releases.

        A new contact's key is made here, sealed into its events and stored in the same
        transaction; the keys of existing contacts come in one query per chunk.
        """
        for chunk, kwargs in _chunks(objs, claims, releases, idempotency):
            sealed = [e for e in chunk if isinstance(getattr(e, "pii", None), dict)]
            new = {e.originator_id for e in sealed if isinstance(e, Contact.Created)}
            with self.keys.batch([e.originator_id for e in sealed if e.originator_id not in new]):
                new_keys = self.keys.generate(sorted(new))
                self.unit_of_work.commit(chunk, account_id=account_id, new_keys=new_keys, **kwargs)

    async def _save(self, keys: dict[UUID, bytes], *objs: Any, account_id: UUID | None = None,
                    claims: Iterable[tuple[UUID, UUID]] = (), releases: Iterable[tuple[UUID, UUID, bool]] = ()) -> None:
        """``save_all`` for a use case on the event loop: loaded contacts' events, sealed with ``keys`` (their
        load's), each chunk joining the loop's next group commit (``UnitOfWork.commit_async``)."""
        for chunk, kwargs in _chunks(objs, claims, releases, None):
            with self.keys.batch([]):  # nothing awaits in here: the batch is the loop thread's until it ends
                self.keys.seed_cache(keys)
                write = self.unit_of_work.prepare(chunk, account_id=account_id, **kwargs)
            await self.unit_of_work.commit_async(write)

    def _get(self, cls: type[T], aggregate_id: UUID) -> T | None:
        if cls is Contact:  # an imported contact's creation lives in its import batch
            return next(iter(self._load_contacts([aggregate_id])), None)  # type: ignore[return-value]
        try:
            agg = self.repository.get(aggregate_id, projector_func=_mutate_all)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, cls) else None

    def aggregate_events(self, aggregate_id: UUID) -> list[Any]:
        """An aggregate's events in order; an imported contact's creation comes from its batch."""
        origin = self.recorder.origin(aggregate_id)
        created = []
        if origin is not None:
            batch = next(iter(self.events.get(origin[0], gt=origin[1] - 1, lte=origin[1])))
            created = [batch.created_event(aggregate_id)]
        return [*created, *self.events.get(aggregate_id)]

    def reservation(self, rid: UUID) -> tuple[UUID | None, bool] | None:
        """(holder contact id or None, suppressed) of a phone reservation, if it exists."""
        found = self.recorder.reservations([rid]).get(rid)
        return (found[0], found[2]) if found else None

    def get_list(self, actor: Actor, list_id: UUID) -> ContactList:
        contact_list = self._get(ContactList, list_id)
        if contact_list is None:
            raise NotFoundError(f"contact list {list_id} not found", field="id")
        contact_list.check_visible_to(actor)
        return contact_list

    async def _load(self, ids: list[UUID], read_only: tuple[UUID, ...] = ()) -> tuple[dict[UUID, Any],
                                                                                      dict[UUID, bytes]]:
        """The aggregates that exist among ``ids`` by id, and the contacts' keys, for a use case on the
        event loop: the loads that arrive together go in one statement, decoded in one thread
        (``_load_group``), rather than a thread and a statement each. The use case promises not to
        change those of ``read_only`` (a list it adds contacts to), which it may then share."""
        load = _Load(ids, read_only)
        await self.loads.submit(load)
        return load.found, load.keys

    def _load_group(self, group: list[_Load], loaded: Callable[[], None]) -> None:
        """One ``_loaded`` for every load of ``group``. The loads that only read an aggregate share it;
        each one that may change it gets its own (a copy but for the first, when none only reads
        it), so that no use case sees another's change (every list-add into one list reads that
        list: copying it for each was 4 % of a list-add's samples in the API, py-spy)."""
        found, keys = self._loaded(list(dict.fromkeys(i for load in group for i in load.ids)))
        loaded()
        by_id = {a.id: a for a in found}
        read = {i for load in group for i in load.read_only}
        given: set[UUID] = set()
        for load in group:
            for i in load.ids:
                if i in by_id:
                    if i in load.read_only:
                        load.found[i] = by_id[i]
                    else:
                        load.found[i] = copy.deepcopy(by_id[i]) if i in given or i in read else by_id[i]
                        given.add(i)
                if i in keys:
                    load.keys[i] = keys[i]

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

    def create_list(self, actor: Actor, name: str, description: str | None) -> UUID:
        contact_list = ContactList.create(actor, name, description)
        self.save_all(contact_list)
        return contact_list.id

    @one_at_a_time("list_id")
    @retry_on_conflict
    def update_list(self, actor: Actor, list_id: UUID, changes: dict[str, Any],
                    expected_version: int | None = None) -> UUID:
        contact_list = self.get_list(actor, list_id)
        check_version(contact_list, expected_version)
        contact_list.update(actor, changes)
        self.save_all(contact_list)
        return list_id

    @one_at_a_time("list_id")
    @retry_on_conflict
    def delete_list(self, actor: Actor, list_id: UUID, expected_version: int | None = None) -> None:
        contact_list = self.get_list(actor, list_id)
        check_version(contact_list, expected_version)
        contact_list.delete(actor)
        self.save_all(contact_list)

    # -- contacts ------------------------------------------------------------------------

    @retry_on_conflict  # two groups' claims crossed (a deadlock): nothing stored, built and stored again
    async def create_contact(self, actor: Actor, *, phone: str, region: str | None = None,
                             pii: dict[str, Any], tags: list[str], list_ids: list[UUID],
                             is_opted_out: bool = False) -> Contact:
        """A new contact (its state as stored: the caller can answer with it, no read needed).

        Runs on the event loop: building and sealing the contact is this process's own
        work, and the store waits for a group commit (``UnitOfWork.create``), which takes
        one thread for the whole group rather than one per create. Built for a free number
        and stored in one statement with its number's claim, so no look-up precedes the
        write. Should the number carry an opt-out the new contact does not already have,
        nothing is stored and the contact is built again, opted out, and stored the same way.
        """
        parsed = self.parse(phone, region)
        if list_ids:  # the lists' aggregates are loaded from the event store: a thread's work
            list_ids = await asyncio.to_thread(self.check_lists, actor, list_ids)
        contact_id = uuid4()
        rid = reservation_id(self.hash_key, actor.account_id, parsed.e164)
        key = self.keys.generate([contact_id])[contact_id]

        def build(opted_out: bool) -> tuple[Contact, NewContact]:
            with self.keys.batch([]):  # the key seals its events (and nothing awaits in here: the batch is
                self.keys.seed_cache({contact_id: key})  # this thread's, the loop's, until it ends)
                contact = Contact.create(
                    actor, contact_id=contact_id, pii={**pii, "phone": parsed.e164}, tags=tags, list_ids=list_ids,
                    is_opted_out=opted_out, directory_match=self.directory.classify(parsed), reservation_id=rid)
                return contact, self.unit_of_work.new_contact((rid, contact_id), contact.collect_events(),
                                                              account_id=actor.account_id, key=key,
                                                              opted_out=opted_out)

        contact, new = build(is_opted_out)
        holder = await self.unit_of_work.create(new)
        if holder is None:  # the number's opt-out: built again with it
            contact, new = build(True)
            holder = await self.unit_of_work.create(new)
        if holder != contact_id:
            raise PhoneTakenError(f"phone {parsed.e164} already belongs to contact {holder}",
                                  field="phone", extra={"contactId": str(holder)})
        return contact

    @one_at_a_time("contact_id")
    @retry_on_conflict
    async def update_contact(self, actor: Actor, contact_id: UUID, *, pii: dict[str, Any],
                             changes: dict[str, Any], region: str | None = None,
                             list_ids: list[UUID] | None = None, is_opted_out: bool | None = None,
                             expected_version: int | None = None) -> Contact:
        """Change a contact; return its state as stored (the caller can answer with it, no read needed,
        as a create's; unchanged if the request changed nothing).

        Runs on the event loop, as a create does: the load joins the loop's next group of
        loads, the change is made and sealed here, and the write joins a group commit, so a
        PATCH takes no thread of its own. A new number's check and the lists' come from a thread.
        """
        found, keys = await self._load([contact_id])
        contact = _visible_contact(actor, contact_id, found.get(contact_id))
        check_version(contact, expected_version)
        claims, releases = [], []
        if "phone" in pii:
            parsed = self.parse(pii["phone"], region)
            pii["phone"] = parsed.e164
            if parsed.e164 != contact.phone:
                rid, suppressed = await asyncio.to_thread(self.check_phone_free, actor, parsed, contact.id)
                claims.append((rid, contact.id))
                releases.append((contact.reservation_id, contact.id, contact.is_opted_out))
                if suppressed and is_opted_out is None:
                    is_opted_out = True  # the new number opted out before: keep honouring it
                changes = {**changes, **self.directory.classify(parsed), "reservation_id": rid}
        if list_ids is not None:
            list_ids = await asyncio.to_thread(self.check_lists, actor, list_ids)
        contact.update(actor, pii, changes)
        if list_ids is not None:
            contact.sync_lists(actor, list_ids)
        if is_opted_out is not None:
            contact.set_opted_out(actor, is_opted_out)
        await self._save(keys, contact, account_id=actor.account_id, claims=claims, releases=releases)
        return contact

    @retry_on_conflict
    async def add_to_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> int:
        """Add the account's active contacts among ``contact_ids`` to the list; count those newly added.
        On the event loop, as ``update_contact``."""
        loaded, keys = await self._load([list_id, *contact_ids], read_only=(list_id,))
        changed = [c for c in self._list_members(actor, list_id, contact_ids, loaded) if c.add_to_lists(actor, [list_id])]
        await self._save(keys, *changed)
        return len(changed)

    @retry_on_conflict
    async def remove_from_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> int:
        """Take the account's active contacts among ``contact_ids`` out of the list; count those removed."""
        loaded, keys = await self._load([list_id, *contact_ids], read_only=(list_id,))
        changed = [c for c in self._list_members(actor, list_id, contact_ids, loaded)
                   if c.remove_from_lists(actor, [list_id])]
        await self._save(keys, *changed)
        return len(changed)

    def _list_members(self, actor: Actor, list_id: UUID, contact_ids: list[UUID],
                      loaded: dict[UUID, Any] | None = None) -> list[Contact]:
        """The account's active contacts among ``contact_ids``, once the list is found visible (404 if
        not): the list's events come in the contacts' query, one statement for both (``loaded``, when
        the caller has loaded them)."""
        if loaded is None:
            loaded = {a.id: a for a in self._load_aggregates([list_id, *contact_ids])}
        contact_list = loaded.get(list_id)
        if not isinstance(contact_list, ContactList):
            raise NotFoundError(f"contact list {list_id} not found", field="id")
        contact_list.check_visible_to(actor)
        return [c for cid in dict.fromkeys(contact_ids) if isinstance(c := loaded.get(cid), Contact)
                and c.account_id == actor.account_id and c.is_active]

    # -- bulk actions (select-all) -----------------------------------------------------------

    @retry_on_conflict
    def bulk(self, actor: Actor, action: str, params: dict[str, Any], contact_ids: list[UUID]) -> int:
        """Do ``action`` to the account's active contacts among ``contact_ids``; count those it changed."""
        changed = self._act(actor, action, params, contact_ids)
        self.save_all(*changed)
        return len(changed)

    def start_bulk(self, actor: Actor, job_id: UUID, action: str, params: dict[str, Any], matched: int) -> UUID:
        """A bulk action queued as a job (its matches are already stored under ``job_id``)."""
        if action in ("add_to_list", "remove_from_list"):
            self.get_list(actor, UUID(params["list_id"]))
        job = BulkAction.start(actor, action=action, params=params, matched=matched, job_id=job_id)
        self.save_all(job)
        return job.id

    @retry_on_conflict
    def bulk_step(self, actor: Actor, job_id: UUID, contact_ids: list[UUID]) -> int:
        """One step of a bulk job: the contacts' changes and the job's progress, saved together."""
        job = self.repository.get(job_id)
        changed = self._act(actor, job.action, job.params, contact_ids)
        job.progress(actor, len(contact_ids), len(changed))
        self.save_all(*changed, job)
        return len(changed)

    def end_bulk(self, actor: Actor, job_id: UUID, failure: str | None = None) -> None:
        """Mark a bulk job completed, or failed with ``failure``."""
        job = self.repository.get(job_id)
        if failure is None:
            job.complete(actor)
        else:
            job.fail(actor, failure)
        self.save_all(job)

    def _act(self, actor: Actor, action: str, params: dict[str, Any], contact_ids: list[UUID]) -> list[Contact]:
        """The contacts ``action`` changed (their events pending), of the account's active ones."""
        if action in ("add_to_list", "remove_from_list"):  # the list (404 unless visible) loads with them
            contacts = self._list_members(actor, UUID(str(params["list_id"])), contact_ids)
        else:
            contacts = self._active_contacts(actor, contact_ids)
        list_ids = [UUID(str(params["list_id"]))] if "list_id" in params else []
        tags = list(params.get("tags", []))
        do = {"delete": lambda c: c.trash(actor), "add_to_list": lambda c: c.add_to_lists(actor, list_ids),
              "remove_from_list": lambda c: c.remove_from_lists(actor, list_ids),
              "tag": lambda c: c.tag(actor, tags), "untag": lambda c: c.untag(actor, tags),
              "opt_out": lambda c: c.opt_out(actor), "opt_in": lambda c: c.opt_in(actor)}[action]
        return [c for c in contacts if do(c)]

    def _active_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> list[Contact]:
        return [c for c in self._load_contacts(contact_ids) if c.account_id == actor.account_id and c.is_active]

    def _trashed_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> list[Contact]:
        return [c for c in self._load_contacts(contact_ids) if c.account_id == actor.account_id
                and c.deleted_at is not None and not c.is_purged]

    def _load_contacts(self, contact_ids: Iterable[UUID]) -> list[Contact]:
        """The contacts that exist among ``contact_ids``, loaded together (``_load_aggregates``)."""
        return [c for c in self._load_aggregates(contact_ids) if isinstance(c, Contact)]

    def _load_aggregates(self, contact_ids: Iterable[UUID]) -> list[Any]:
        """The aggregates that exist among ``contact_ids`` (contacts, and any other aggregate named),
        loaded together (``_loaded``)."""
        return self._loaded(list(dict.fromkeys(contact_ids)))[0]

    def _loaded(self, ids: list[UUID]) -> tuple[list[Any], dict[UUID, bytes]]:
        """The aggregates that exist among ``ids``, and the contacts' keys: each import batch holding
        contacts' creations is decoded once, not once per contact (a bulk action over 5,000 imported
        contacts ran at 16 contacts/s loading them one by one), and their own events, origins and keys
        come in one query."""
        stored_events, origins, keys = self.recorder.contacts_stored(ids)  # events, origins, keys: one query
        batches: dict[tuple[UUID, int], dict[UUID, Any]] = {}
        found: list[Any] = []
        with self.keys.batch([]):  # this thread's key cache (a use case's, if it opened one), given the keys
            self.keys.seed_cache(keys)
            own: dict[UUID, list[Any]] = {}
            for stored in stored_events:
                own.setdefault(stored.originator_id, []).append(self.mapper.to_domain_event(stored))
            for contact_id in ids:
                contact = None
                if contact_id in origins:
                    if origins[contact_id] not in batches:
                        import_id, version = origins[contact_id]
                        batch = next(iter(self.events.get(import_id, gt=version - 1, lte=version)))
                        batches[origins[contact_id]] = {e.originator_id: e for e in batch.created_events()}
                    contact = batches[origins[contact_id]][contact_id].mutate(None)
                    contact.imported = True
                contact = _mutate_all(contact, own.get(contact_id, []))
                if contact is not None:
                    found.append(contact)
        return found, keys

    # -- trash -------------------------------------------------------------------------------

    @retry_on_conflict
    def trash(self, actor: Actor, contact_ids: list[UUID]) -> int:
        """Trash: active contacts of the account move to the trash."""
        changed = [c for c in self._active_contacts(actor, contact_ids) if c.trash(actor)]
        self.save_all(*changed)
        return len(changed)

    @one_at_a_time("contact_id")
    @retry_on_conflict
    async def trash_contact(self, actor: Actor, contact_id: UUID, expected_version: int | None = None) -> bool:
        """Trash one contact, if it is still at ``expected_version`` (when given); False if it is not active.
        On the event loop, as ``update_contact``."""
        found, keys = await self._load([contact_id])
        contact = _visible_contact(actor, contact_id, found.get(contact_id))
        check_version(contact, expected_version)
        changed = contact.trash(actor)
        await self._save(keys, contact)
        return changed

    @retry_on_conflict
    def restore(self, actor: Actor, contact_ids: list[UUID]) -> int:
        """Restore: trashed contacts come back with their lists and tags."""
        changed = [c for c in self._trashed_contacts(actor, contact_ids) if c.restore(actor)]
        self.save_all(*changed)
        return len(changed)

    @retry_on_conflict
    def purge(self, actor: Actor, contact_ids: list[UUID]) -> int:
        """Purge: trashed contacts are erased; their numbers are freed (opt-outs kept)."""
        purged = [c for c in self._trashed_contacts(actor, contact_ids) if c.purge(actor)]
        releases = [(c.reservation_id, c.id, c.is_opted_out) for c in purged]
        self.save_all(*purged, account_id=actor.account_id, releases=releases)
        return len(purged)


class _Load:
    """Aggregates to load for a use case on the event loop (``ContactsApplication._load``), then what was found."""

    __slots__ = ("ids", "read_only", "found", "keys")

    def __init__(self, ids: list[UUID], read_only: tuple[UUID, ...] = ()):
        self.ids = list(dict.fromkeys(ids))
        self.read_only = read_only
        self.found: dict[UUID, Any] = {}
        self.keys: dict[UUID, bytes] = {}


def _visible_contact(actor: Actor, contact_id: UUID, contact: Contact | None) -> Contact:
    """``contact``, if it is an active contact of the actor's account; 404 if not."""
    if not isinstance(contact, Contact):
        raise NotFoundError(f"contact {contact_id} not found", field="id")
    contact.check_visible_to(actor)
    return contact


def _chunks(objs: Sequence[Any], claims: Iterable[tuple[UUID, UUID]], releases: Iterable[tuple[UUID, UUID, bool]],
            idempotency: tuple[str, UUID, bytes | None] | None) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """The aggregates' pending events in chunks of ``SAVE_CHUNK``, each with what commits with it: the
    claims and releases of its contacts, and ``idempotency`` with the first."""
    events = [e for obj in objs for e in obj.collect_events()]
    claims_by_contact = {c[1]: c for c in claims}
    releases_by_contact = {r[1]: r for r in releases}
    for start in range(0, len(events), SAVE_CHUNK):
        chunk = events[start:start + SAVE_CHUNK]
        ids = {e.originator_id for e in chunk}
        yield chunk, {"claims": [c for cid, c in claims_by_contact.items() if cid in ids],
                      "releases": [r for cid, r in releases_by_contact.items() if cid in ids],
                      "idempotency": idempotency if start == 0 else None}


def _mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its per-event ``isinstance`` check
    against a runtime-checkable Protocol, which costs about 29 µs an event on Python 3.11
    (timeit, 20,000 checks): a single write loads its contact's events first."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate

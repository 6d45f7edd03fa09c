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
from eventsourcing.persistence import IntegrityError

from command.context import Actor
from command.crypto import KeyStore, PiiMapper
from command.domain import Contact, ContactList, PhoneReservation
from command.errors import ConcurrencyError, NotFoundError, PhoneTakenError, UnknownListsError
from command.phones import OperatorDirectory, Phone, parse_phone, reservation_id

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
        super().__init__(env)
        self.directory = directory
        self.hash_key = hash_key
        self.default_region = default_region

    def construct_mapper(self) -> PiiMapper:
        mapper = self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=PiiMapper)
        mapper.keys = self.keys
        return mapper

    def decode(self, notifications: list[Any]) -> list[Any]:
        """Domain events of stored notifications, fetching the contacts' keys in one query."""
        sealed = [n.originator_id for n in notifications if ".domain:Contact." in n.topic]
        with self.keys.batch(sealed):
            return [self.mapper.to_domain_event(n) for n in notifications]

    # -- helpers ---------------------------------------------------------------------

    def save_all(self, *objs: Any) -> int:
        """Save aggregates' pending events (chunked) and return the last position.

        Keys of the contacts whose personal data is sealed are fetched (or created)
        in one round trip per chunk rather than one per event.
        """
        events = [e for obj in objs for e in obj.collect_events()]
        position = 0
        for start in range(0, len(events), SAVE_CHUNK):
            chunk = events[start:start + SAVE_CHUNK]
            sealed_ids = [e.originator_id for e in chunk if isinstance(getattr(e, "pii", None), dict)]
            with self.keys.batch(sealed_ids):
                missing = [cid for cid in dict.fromkeys(sealed_ids) if self.keys.get(cid) is None]
                if missing:
                    self.keys.seed_cache(self.keys.create_many(missing))
                recordings = self.save(*chunk)
            position = max([position, *(r.notification.id for r in recordings)])
        return position

    def _get(self, cls: type[T], aggregate_id: UUID) -> T | None:
        try:
            agg = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return agg if isinstance(agg, cls) else None

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

    def check_lists(self, actor: Actor, list_ids: Iterable[UUID]) -> list[UUID]:
        """Return the ids de-duplicated, or raise naming every unknown or foreign one."""
        wanted = list(dict.fromkeys(list_ids))
        unknown = []
        for list_id in wanted:
            found = self._get(ContactList, list_id)
            if found is None or found.account_id != actor.account_id or found.is_deleted:
                unknown.append(str(list_id))
        if unknown:
            raise UnknownListsError(f"unknown contact lists: {', '.join(unknown)}", field="listIds",
                                    extra={"unknownListIds": unknown})
        return wanted

    def parse(self, raw_phone: object, region: str | None = None) -> Phone:
        return parse_phone(raw_phone, region or self.default_region)

    def reserve(self, actor: Actor, phone: Phone, contact_id: UUID) -> PhoneReservation:
        """Claim the number for ``contact_id`` or raise PhoneTakenError.

        A released reservation may carry an opt-out (``suppressed``) that outlived a
        purged contact; the caller copies it onto the new contact.
        """
        rid = reservation_id(self.hash_key, actor.account_id, phone.e164)
        reservation = self._get(PhoneReservation, rid)
        if reservation is None:
            return PhoneReservation.claim_new(actor, rid, contact_id)
        if reservation.contact_id not in (None, contact_id):
            raise PhoneTakenError(f"phone {phone.e164} already belongs to contact {reservation.contact_id}",
                                  field="phone", extra={"contactId": str(reservation.contact_id)})
        reservation.claim(actor, contact_id)
        return reservation

    # -- contact lists -----------------------------------------------------------------

    def create_list(self, actor: Actor, name: str, description: str | None) -> tuple[UUID, int]:
        contact_list = ContactList.create(actor, name, description)
        return contact_list.id, self.save_all(contact_list)

    @retry_on_conflict
    def update_list(self, actor: Actor, list_id: UUID, changes: dict[str, Any]) -> tuple[UUID, int]:
        contact_list = self.get_list(actor, list_id)
        contact_list.update(actor, changes)
        return list_id, self.save_all(contact_list)

    @retry_on_conflict
    def delete_list(self, actor: Actor, list_id: UUID) -> tuple[None, int]:
        contact_list = self.get_list(actor, list_id)
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
            reservation = self.reserve(actor, parsed, contact_id)
            contact = Contact.create(
                actor, contact_id=contact_id, pii={**pii, "phone": parsed.e164}, tags=tags, list_ids=list_ids,
                is_opted_out=is_opted_out or reservation.suppressed,
                directory_match=self.directory.classify(parsed), reservation_id=reservation.id,
            )
            try:
                return contact.id, self.save_all(contact, reservation)
            except IntegrityError:
                continue  # a concurrent claim won: reload the reservation and report it
        raise ConcurrencyError("the phone number changed hands concurrently; retry the request")

    @retry_on_conflict
    def update_contact(self, actor: Actor, contact_id: UUID, *, pii: dict[str, Any],
                       changes: dict[str, Any], region: str | None = None,
                       list_ids: list[UUID] | None = None, is_opted_out: bool | None = None) -> tuple[UUID, int]:
        contact = self.get_contact(actor, contact_id)
        touched: list[Any] = [contact]
        if "phone" in pii:
            parsed = self.parse(pii["phone"], region)
            pii["phone"] = parsed.e164
            if parsed.e164 != contact.phone:
                reservation = self.reserve(actor, parsed, contact.id)
                touched.append(reservation)
                if reservation.suppressed and is_opted_out is None:
                    is_opted_out = True  # the new number opted out before: keep honouring it
                old = self._get(PhoneReservation, contact.reservation_id)
                if old is not None:
                    old.release(actor, contact.id, suppressed=contact.is_opted_out)
                    touched.append(old)
                changes = {**changes, **self.directory.classify(parsed),
                           "reservation_id": reservation_id(self.hash_key, actor.account_id, parsed.e164)}
        if list_ids is not None:
            list_ids = self.check_lists(actor, list_ids)
        contact.update(actor, pii, changes)
        if list_ids is not None:
            contact.sync_lists(actor, list_ids)
        if is_opted_out is not None:
            contact.set_opted_out(actor, is_opted_out)
        return contact_id, self.save_all(*touched)

    @retry_on_conflict
    def add_to_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> tuple[int, int]:
        self.get_list(actor, list_id)
        changed = []
        for contact in self._active_contacts(actor, contact_ids):
            if contact.add_to_lists(actor, [list_id]):
                changed.append(contact)
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def remove_from_list(self, actor: Actor, list_id: UUID, contact_ids: list[UUID]) -> tuple[int, int]:
        self.get_list(actor, list_id)
        changed = []
        for contact in self._active_contacts(actor, contact_ids):
            if contact.remove_from_lists(actor, [list_id]):
                changed.append(contact)
        return len(changed), self.save_all(*changed)

    def _active_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> Iterable[Contact]:
        for contact_id in dict.fromkeys(contact_ids):
            contact = self._get(Contact, contact_id)
            if contact is not None and contact.account_id == actor.account_id and contact.is_active:
                yield contact

    # -- trash -------------------------------------------------------------------------------

    @retry_on_conflict
    def trash(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """SoftDelete: active contacts of the account move to the trash."""
        changed = [c for c in self._active_contacts(actor, contact_ids) if c.trash(actor)]
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def restore(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """Restore: trashed contacts come back with their lists and tags."""
        changed = [c for c in self._trashed_contacts(actor, contact_ids) if c.restore(actor)]
        return len(changed), self.save_all(*changed)

    @retry_on_conflict
    def purge(self, actor: Actor, contact_ids: list[UUID]) -> tuple[int, int]:
        """Purge: trashed contacts are erased; their numbers are freed (opt-outs kept)."""
        touched: list[Any] = []
        purged = 0
        for contact in self._trashed_contacts(actor, contact_ids):
            if contact.purge(actor):
                purged += 1
                touched.append(contact)
                reservation = self._get(PhoneReservation, contact.reservation_id)
                if reservation is not None:
                    reservation.release(actor, contact.id, suppressed=contact.is_opted_out)
                    touched.append(reservation)
        return purged, self.save_all(*touched)

    def _trashed_contacts(self, actor: Actor, contact_ids: Iterable[UUID]) -> Iterable[Contact]:
        for contact_id in dict.fromkeys(contact_ids):
            contact = self._get(Contact, contact_id)
            if (contact is not None and contact.account_id == actor.account_id
                    and contact.deleted_at is not None and not contact.is_purged):
                yield contact

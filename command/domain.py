"""Aggregates of the write side: ContactList, Contact and ContactImport.

Every event carries ``account_id``, ``actor`` and ``request_id`` (the base ``Event``
of each aggregate), and eventsourcing adds the time. Personal data of a contact
(phone, names, email, notes) travels only in the ``pii`` field of its events, so the
mapper can encrypt it with the contact's own key (crypto-shredding).
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, register_topic

from command.context import Actor
from command.errors import NotFoundError, PreconditionFailedError

PII_FIELDS = ("first_name", "last_name", "phone", "email", "notes")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_email(value: str) -> bool:
    """The address shape every way in accepts (API, imports): one @, a dotted domain, no spaces."""
    return bool(_EMAIL.match(value))


def check_version(aggregate: Aggregate, expected_version: int | None) -> None:
    """Refuse an edit made against a version of ``aggregate`` that is no longer current (If-Match)."""
    if expected_version is not None and aggregate.version != expected_version:
        raise PreconditionFailedError(
            f"{type(aggregate).__name__} {aggregate.id} is at version {aggregate.version}, not {expected_version}:"
            " it changed since you read it", current_version=aggregate.version)


def _meta(actor: Actor) -> dict[str, Any]:
    return {"account_id": actor.account_id, "actor": actor.sub, "request_id": actor.request_id}


class ContactList(Aggregate):
    """A named group of contacts; membership lives on the contacts."""

    class Event(Aggregate.Event):
        account_id: UUID
        actor: str
        request_id: str

    class Created(Event, Aggregate.Created):
        # v2 added ``description``; v1 events (lists created before descriptions
        # existed) load through upcast_v1_v2 with no description.
        class_version = 2
        name: str
        description: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("description", None)

        def apply(self, agg: "ContactList") -> None:
            agg.account_id = self.account_id
            agg.name = self.name
            agg.description = self.description
            agg.is_deleted = False

    class Updated(Event):
        changes: dict[str, Any]

        def apply(self, agg: "ContactList") -> None:
            for key, value in self.changes.items():
                setattr(agg, key, value)

    class Deleted(Event):
        def apply(self, agg: "ContactList") -> None:
            agg.is_deleted = True

    def __init__(self) -> None:
        pass

    @classmethod
    def create(cls, actor: Actor, name: str, description: str | None) -> "ContactList":
        return cls._create(cls.Created, id=uuid4(), name=name, description=description, **_meta(actor))

    def check_visible_to(self, actor: Actor) -> None:
        if self.account_id != actor.account_id or self.is_deleted:
            raise NotFoundError(f"contact list {self.id} not found", field="id")

    def update(self, actor: Actor, changes: dict[str, Any]) -> None:
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self.trigger_event(self.Updated, changes=changes, **_meta(actor))

    def delete(self, actor: Actor) -> None:
        self.trigger_event(self.Deleted, **_meta(actor))


class Contact(Aggregate):
    """A phone number the account may text, with optional metadata and list memberships."""

    #: Whether its creation is stored in an import batch's event (set when it is loaded): its
    #: ``createdAt`` is then the import's, which the read tables hold (projections/read_model.py).
    imported = False

    class Event(Aggregate.Event):
        account_id: UUID
        actor: str
        request_id: str

    class Created(Event, Aggregate.Created):
        pii: dict[str, Any]
        tags: list[str]
        list_ids: list[UUID]
        is_opted_out: bool
        status: str
        invalid_reason: str | None
        operator: str | None
        country: str | None
        reservation_id: UUID

        def apply(self, agg: "Contact") -> None:
            agg.account_id = self.account_id
            agg.pii = dict(self.pii)
            agg.tags = list(self.tags)
            agg.list_ids = list(self.list_ids)
            agg.is_opted_out = self.is_opted_out
            agg.status = self.status
            agg.invalid_reason = self.invalid_reason
            agg.operator = self.operator
            agg.country = self.country
            agg.reservation_id = self.reservation_id
            agg.deleted_at = None
            agg.is_purged = False

    class Updated(Event):
        """Changed fields only: personal ones in ``pii``, the rest in ``changes``."""

        pii: dict[str, Any]
        changes: dict[str, Any]

        def apply(self, agg: "Contact") -> None:
            agg.pii.update(self.pii)
            for key, value in self.changes.items():
                setattr(agg, key, value)

    class AddedToLists(Event):
        list_ids: list[UUID]

        def apply(self, agg: "Contact") -> None:
            agg.list_ids.extend(i for i in self.list_ids if i not in agg.list_ids)

    class RemovedFromLists(Event):
        list_ids: list[UUID]

        def apply(self, agg: "Contact") -> None:
            agg.list_ids = [i for i in agg.list_ids if i not in self.list_ids]

    class OptedOut(Event):
        reason: str

        def apply(self, agg: "Contact") -> None:
            agg.is_opted_out = True

    class OptedIn(Event):
        def apply(self, agg: "Contact") -> None:
            agg.is_opted_out = False

    class Trashed(Event):
        def apply(self, agg: "Contact") -> None:
            agg.deleted_at = self.timestamp

    class Restored(Event):
        def apply(self, agg: "Contact") -> None:
            agg.deleted_at = None

    class Purged(Event):
        def apply(self, agg: "Contact") -> None:
            agg.is_purged = True
            agg.pii = {}

    def __init__(self) -> None:
        pass

    @classmethod
    def create(cls, actor: Actor, *, pii: dict[str, Any], tags: list[str], list_ids: list[UUID],
               is_opted_out: bool, directory_match: dict[str, Any], reservation_id: UUID,
               contact_id: UUID | None = None) -> "Contact":
        return cls._create(
            cls.Created, id=contact_id or uuid4(), pii=pii, tags=tags, list_ids=list_ids,
            is_opted_out=is_opted_out, reservation_id=reservation_id, **directory_match, **_meta(actor),
        )

    @property
    def phone(self) -> str:
        return self.pii.get("phone", "")

    @property
    def is_active(self) -> bool:
        return self.deleted_at is None and not self.is_purged

    def check_visible_to(self, actor: Actor) -> None:
        if self.account_id != actor.account_id or not self.is_active:
            raise NotFoundError(f"contact {self.id} not found", field="id")

    def update(self, actor: Actor, pii: dict[str, Any], changes: dict[str, Any]) -> None:
        pii = {k: v for k, v in pii.items() if self.pii.get(k) != v}
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if pii or changes:
            self.trigger_event(self.Updated, pii=pii, changes=changes, **_meta(actor))

    def add_to_lists(self, actor: Actor, list_ids: list[UUID]) -> list[UUID]:
        new = [i for i in dict.fromkeys(list_ids) if i not in self.list_ids]
        if new:
            self.trigger_event(self.AddedToLists, list_ids=new, **_meta(actor))
        return new

    def remove_from_lists(self, actor: Actor, list_ids: list[UUID]) -> list[UUID]:
        gone = [i for i in dict.fromkeys(list_ids) if i in self.list_ids]
        if gone:
            self.trigger_event(self.RemovedFromLists, list_ids=gone, **_meta(actor))
        return gone

    def sync_lists(self, actor: Actor, list_ids: list[UUID]) -> None:
        wanted = list(dict.fromkeys(list_ids))
        self.remove_from_lists(actor, [i for i in self.list_ids if i not in wanted])
        self.add_to_lists(actor, wanted)

    def set_opted_out(self, actor: Actor, opted_out: bool, reason: str = "api") -> None:
        if opted_out and not self.is_opted_out:
            self.trigger_event(self.OptedOut, reason=reason, **_meta(actor))
        elif not opted_out and self.is_opted_out:
            self.trigger_event(self.OptedIn, **_meta(actor))

    def tag(self, actor: Actor, tags: list[str]) -> bool:
        """Add ``tags`` the contact lacks (an ``Updated`` of its tags); False if it has them all."""
        new = [*self.tags, *(t for t in dict.fromkeys(tags) if t not in self.tags)]
        if new == self.tags:
            return False
        self.update(actor, {}, {"tags": new})
        return True

    def untag(self, actor: Actor, tags: list[str]) -> bool:
        """Remove ``tags`` (an ``Updated`` of its tags); False if it has none of them."""
        new = [t for t in self.tags if t not in tags]
        if new == self.tags:
            return False
        self.update(actor, {}, {"tags": new})
        return True

    def opt_out(self, actor: Actor, reason: str = "api") -> bool:
        """OptOut if not opted out already; whether it changed."""
        changed = not self.is_opted_out
        self.set_opted_out(actor, True, reason)
        return changed

    def opt_in(self, actor: Actor) -> bool:
        changed = self.is_opted_out
        self.set_opted_out(actor, False)
        return changed

    def trash(self, actor: Actor) -> bool:
        if not self.is_active:
            return False
        self.trigger_event(self.Trashed, **_meta(actor))
        return True

    def restore(self, actor: Actor) -> bool:
        if self.deleted_at is None or self.is_purged:
            return False
        self.trigger_event(self.Restored, **_meta(actor))
        return True

    def purge(self, actor: Actor) -> bool:
        if self.deleted_at is None or self.is_purged:
            return False
        self.trigger_event(self.Purged, **_meta(actor))
        return True


class ContactImport(Aggregate):
    """One import job. Its ``Progressed`` events each create up to a batch of contacts.

    A contact created this way has no ``Created`` event of its own: its creation is
    its entry in the batch (``created_event`` rebuilds it), and its own stream starts
    at version 2. Skipped rows are recorded with their reason, never their values.
    """

    class Event(Aggregate.Event):
        account_id: UUID
        actor: str
        request_id: str

    class Started(Event, Aggregate.Created):
        source: str
        filename: str | None
        list_id: UUID | None
        idempotency_key: str | None

        def apply(self, agg: "ContactImport") -> None:
            agg.account_id = self.account_id
            agg.list_id = self.list_id
            agg.counts = dict.fromkeys(IMPORT_COUNTS, 0)
            agg.last_row = 0
            agg.status = "running"

    class Progressed(Event):
        """``contacts``: entries with id, row, pii, tags, list_ids, is_opted_out, status,
        invalid_reason, operator, country, reservation_id. ``skipped``: row, reason, contact_id."""

        contacts: list[dict[str, Any]]
        skipped: list[dict[str, Any]]
        last_row: int
        counts: dict[str, int]

        def apply(self, agg: "ContactImport") -> None:
            agg.counts = dict(self.counts)
            agg.last_row = self.last_row

        def created_event(self, contact_id: UUID) -> Contact.Created:
            return self.created_event_of(next(c for c in self.contacts if c["id"] == contact_id))

        def created_events(self) -> list[Contact.Created]:
            """The ``Created`` event of every contact of the batch, in row order."""
            return [self.created_event_of(entry) for entry in self.contacts]

        def created_event_of(self, entry: dict[str, Any]) -> Contact.Created:
            contact_id = entry["id"]
            return Contact.Created(
                originator_topic=get_topic(Contact), originator_id=contact_id, originator_version=1,
                timestamp=self.timestamp, account_id=self.account_id, actor=self.actor,
                request_id=self.request_id, **{k: v for k, v in entry.items() if k not in ("id", "row", "line")})

    class Completed(Event):
        counts: dict[str, int]

        def apply(self, agg: "ContactImport") -> None:
            agg.counts = dict(self.counts)
            agg.status = "completed"

    class Failed(Event):
        reason: str
        counts: dict[str, int]

        def apply(self, agg: "ContactImport") -> None:
            agg.counts = dict(self.counts)
            agg.status = "failed"

    def __init__(self) -> None:
        pass

    @classmethod
    def start(cls, actor: Actor, *, source: str, filename: str | None, list_id: UUID | None,
              idempotency_key: str | None, import_id: UUID | None = None) -> "ContactImport":
        return cls._create(cls.Started, id=import_id or uuid4(), source=source, filename=filename,
                           list_id=list_id, idempotency_key=idempotency_key, **_meta(actor))

    def record_rows(self, actor: Actor, contacts: list[dict[str, Any]], skipped: list[dict[str, Any]],
                    last_row: int, counts: dict[str, int]) -> None:
        self.trigger_event(self.Progressed, contacts=contacts, skipped=skipped, last_row=last_row,
                           counts=counts, **_meta(actor))

    def complete(self, actor: Actor) -> None:
        self.trigger_event(self.Completed, counts=dict(self.counts), **_meta(actor))

    def fail(self, actor: Actor, reason: str) -> None:
        self.trigger_event(self.Failed, reason=reason, counts=dict(self.counts), **_meta(actor))


# The batch event was called RowsImported until 2026-12; it is published as import.progress,
# so it is named Progressed, as BulkAction's is. Events stored under the old topic load as
# the renamed class (the topic is a stored string, the class a name in code).
ROWS_IMPORTED_TOPIC = "command.domain:ContactImport.RowsImported"
register_topic(ROWS_IMPORTED_TOPIC, ContactImport.Progressed)
#: The stored topics of an import batch event, old and new (the relay publishes each batch alone).
IMPORT_BATCH_TOPICS = frozenset({get_topic(ContactImport.Progressed), ROWS_IMPORTED_TOPIC})


class BulkAction(Aggregate):
    """A select-all bulk action run as a job: what it does, how many contacts it matched, how far it got.

    The matched contacts' ids are fixed when it starts (a snapshot kept beside the job
    queue, not in an event); each ``Progressed`` is saved with the contacts' own events
    of its step, so ``changed`` is exact and a resumed job carries on after it.
    """

    class Event(Aggregate.Event):
        account_id: UUID
        actor: str
        request_id: str

    class Started(Event, Aggregate.Created):
        action: str                # one of BULK_ACTIONS
        params: dict[str, Any]     # list_id (text) for list actions, tags for tag / untag
        matched: int

        def apply(self, agg: "BulkAction") -> None:
            agg.account_id = self.account_id
            agg.action = self.action
            agg.params = dict(self.params)
            agg.matched = self.matched
            agg.processed = agg.changed = 0
            agg.status = "queued"

    class Progressed(Event):
        processed: int
        changed: int

        def apply(self, agg: "BulkAction") -> None:
            agg.processed, agg.changed, agg.status = self.processed, self.changed, "running"

    class Completed(Event):
        processed: int
        changed: int

        def apply(self, agg: "BulkAction") -> None:
            agg.status = "completed"

    class Failed(Event):
        reason: str
        processed: int
        changed: int

        def apply(self, agg: "BulkAction") -> None:
            agg.status = "failed"

    def __init__(self) -> None:
        pass

    @classmethod
    def start(cls, actor: Actor, *, action: str, params: dict[str, Any], matched: int,
              job_id: UUID | None = None) -> "BulkAction":
        return cls._create(cls.Started, id=job_id or uuid4(), action=action, params=params, matched=matched,
                           **_meta(actor))

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def progress(self, actor: Actor, processed: int, changed: int) -> None:
        self.trigger_event(self.Progressed, processed=self.processed + processed, changed=self.changed + changed,
                           **_meta(actor))

    def complete(self, actor: Actor) -> None:
        self.trigger_event(self.Completed, processed=self.processed, changed=self.changed, **_meta(actor))

    def fail(self, actor: Actor, reason: str) -> None:
        self.trigger_event(self.Failed, reason=reason, processed=self.processed, changed=self.changed,
                           **_meta(actor))


#: What a bulk action can do to each matched contact.
BULK_ACTIONS = ("delete", "add_to_list", "remove_from_list", "tag", "untag", "opt_out", "opt_in")

#: The seed's import result fields, plus rows read.
IMPORT_COUNTS = ("read", "imported", "valid", "invalid", "skipped")

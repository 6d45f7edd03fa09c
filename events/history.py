"""History for auditors: an aggregate's events in order, and its state at a time or version.

Read from the event store itself (not the read tables), so trashed, purged and deleted
aggregates have a history too. Personal fields of a purged contact read as erased.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import msgspec

from command.application import ContactsApplication
from command.context import Actor
from command.domain import PII_FIELDS, Contact, ContactImport, ContactList
from command.errors import NotFoundError
from events.contract import EVENT_TYPES, camel
from query.models import CONTACT_FIELDS, Out

_SKIP = {"originator_id", "originator_version", "timestamp", "originator_topic", "account_id", "actor",
         "request_id", "reservation_id"}


class HistoryEntry(msgspec.Struct, rename="camel"):
    version: int
    type: str
    time: datetime
    actor: str
    request_id: str
    data: dict[str, Any]


#: A contact as it was at a time or version: the fields of ``ContactOut``, in its order (the
#: phone may be null: a purged contact's is erased), then the audit's own three.
ContactAsOf = msgspec.defstruct(
    "ContactAsOf",
    [(f.name, str | None if f.name == "phone" else f.type) if f.required else (f.name, f.type, f.default)
     for f in CONTACT_FIELDS] + [("version", int), ("erased", bool), ("purged", bool)],
    bases=(Out,), kw_only=True, module=__name__)


def _data(event: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in vars(event).items():
        if key in _SKIP:
            continue
        if key == "pii":
            fields.update({camel(k): v for k, v in value.items()})
        elif isinstance(value, dict):
            fields[camel(key)] = {camel(k): v for k, v in value.items() if k != "reservation_id"}
        else:
            fields[camel(key)] = value
    return fields


def _events(app: ContactsApplication, actor: Actor, kind: type, aggregate_id: UUID) -> list[Any]:
    """The aggregate's events (an imported contact's creation comes from its batch)."""
    events = app.aggregate_events(aggregate_id)
    if not events or not isinstance(events[0], kind.Created) or events[0].account_id != actor.account_id:
        raise NotFoundError(f"{'contact' if kind is Contact else 'contact list'} {aggregate_id} not found",
                            field="id")
    return events


def history(app: ContactsApplication, actor: Actor, kind: type, aggregate_id: UUID) -> list[HistoryEntry]:
    """Every event of one contact or list of the account, oldest first."""
    entries = []
    for event in _events(app, actor, kind, aggregate_id):
        spec = EVENT_TYPES.get(type(event))
        entries.append(HistoryEntry(version=event.originator_version,
                                    type=spec.type if spec else type(event).__qualname__,
                                    time=event.timestamp, actor=event.actor, request_id=event.request_id,
                                    data=_data(event)))
    return entries


def contact_as_of(app: ContactsApplication, actor: Actor, contact_id: UUID, *, at: datetime | None = None,
                  version: int | None = None) -> msgspec.Struct:
    """The contact as it was at a time (or after a version), rebuilt from its events."""
    events = _events(app, actor, Contact, contact_id)
    if version is not None and events and version > events[-1].originator_version:
        # Answering with the latest state would pass it off as version N.
        raise NotFoundError(f"contact {contact_id} has no version {version}; its latest is "
                            f"{events[-1].originator_version}", field="version")
    chosen = [e for e in events if (at is None or e.timestamp <= at) and (version is None
                                                                          or e.originator_version <= version)]
    if not chosen:
        raise NotFoundError(f"contact {contact_id} did not exist then", field="asOf")
    contact = None
    for event in chosen:
        contact = event.mutate(contact)
    # Deleting a list stores no event on its members (the read side drops its id from their
    # listIds), so lists deleted by then are left out here the same way. A version's state
    # lasts until the contact's next change: for the latest version, until now.
    later = events[len(chosen):]
    then = at or (later[0].timestamp if later else datetime.now(timezone.utc))
    list_ids = [list_id for list_id in contact.list_ids if not _deleted_by(app, list_id, then)]
    return ContactAsOf(
        **_fields(contact, list_ids=list_ids, created_at=chosen[0].timestamp, updated_at=chosen[-1].timestamp),
        # erased: personal fields gone for good, both in versions sealed with the deleted key
        # and in the purge's own version (which holds none).
        version=contact.version, erased=bool(contact.pii.get("erased")) or contact.is_purged,
        purged=contact.is_purged)


def _fields(contact: Contact, **given: Any) -> dict[str, Any]:
    """``ContactOut``'s fields from the aggregate: the ``given`` ones, personal ones from its ``pii``, the rest its own."""
    values: dict[str, Any] = {}
    for name in (f.name for f in CONTACT_FIELDS):
        if name in given:
            values[name] = given[name]
        elif name in PII_FIELDS:
            values[name] = contact.pii.get(name)
        else:
            values[name] = getattr(contact, name)
    return values


def _deleted_by(app: ContactsApplication, list_id: UUID, then: datetime) -> bool:
    """Whether the list had been deleted at that time (a list a contact belongs to is its account's)."""
    # The list's own events: aggregate_events would also look for an import origin, which only contacts have.
    return any(isinstance(e, ContactList.Deleted) and e.timestamp <= then for e in app.events.get(list_id))


__all__ = ["ContactAsOf", "ContactImport", "ContactList", "HistoryEntry", "contact_as_of", "history"]

"""The event contract downstream services rely on (see docs/events.md).

Each stored domain event becomes one CloudEvents 1.0 JSON message on subject
``<prefix>.<account_id>.<list|contact>.<aggregate_id>.<event>`` with message id
(``Nats-Msg-Id`` and CloudEvents ``id``) = uuid5 of aggregate id and version, so a
republished event is recognised as the same one. ``type`` carries the schema version
(``contacts.contact.created.v1``); a breaking change adds ``.v2`` beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import msgspec
from msgspec import UNSET

from command.domain import BulkAction, Contact, ContactImport, ContactList
from events import payloads
from events.payloads import ContactCreated

EVENT_ID_NAMESPACE = uuid.UUID("6f1c4f56-3c2e-4d8e-9a53-2f6f3f5b7c11")
SOURCE = "urn:contacts-service"

_CAMEL = {"first_name": "firstName", "last_name": "lastName", "list_ids": "listIds", "list_id": "listId",
          "is_opted_out": "isOptedOut", "invalid_reason": "invalidReason"}
# Personal fields a campaign service needs to address and personalise an SMS.
PUBLISHED_PII = ("phone", "first_name", "last_name")
# Contact events whose messages may carry those fields: erased from the stream on purge.
PII_EVENT_NAMES = ("created", "updated")


def camel(name: str) -> str:
    """A snake_case name as the API and the events spell it (camelCase)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    return {_CAMEL.get(k, k): v for k, v in values.items() if k != "reservation_id"}


def _pii(values: dict[str, Any]) -> dict[str, Any]:
    return _camel({k: v for k, v in values.items() if k in PUBLISHED_PII})


def changed_fields(event: Any) -> list[str]:
    """The names of the fields a ``Contact.Updated`` changed, even once its values were erased (purge)."""
    names = [k for k in event.pii if k not in ("erased", "erased_fields")]
    names += event.pii.get("erased_fields", [])  # sealed fields (personal ones, tags) of a purged contact
    return sorted({camel(k) for k in [*names, *event.changes] if k != "reservation_id"})


def counts(stored: dict[str, int]) -> payloads.Counts:
    """An import's counts as published: ``rows`` (rows read), as the HTTP API says it.

    The events store the count of rows read as ``read``; v1 messages carried that name, so
    they keep ``read`` beside ``rows`` (same value) until a ``.v2`` type drops it (docs/events.md).
    """
    rows = stored.get("read", 0)
    return payloads.Counts(rows=rows, imported=stored.get("imported", 0), valid=stored.get("valid", 0),
                           invalid=stored.get("invalid", 0), skipped=stored.get("skipped", 0), read=rows)


@dataclass(frozen=True)
class EventType:
    aggregate: str  # subject token: "list" or "contact"
    name: str       # subject token and type suffix
    version: int
    data: Callable[[Any], payloads.Data]  # the event's ``data``, as documented (events/payloads.py)

    @property
    def type(self) -> str:
        kind = {"list": "contact_list", "import": "contact_import", "bulk": "bulk_action"}.get(self.aggregate,
                                                                                             self.aggregate)
        return f"contacts.{kind}.{self.name}.v{self.version}"


EVENT_TYPES: dict[type, EventType] = {
    ContactList.Created: EventType("list", "created", 1,
                                   lambda e: payloads.ListCreated(name=e.name, description=e.description)),
    ContactList.Updated: EventType("list", "updated", 1, lambda e: payloads.Changes(changes=dict(e.changes))),
    ContactList.Deleted: EventType("list", "deleted", 1, lambda e: payloads.Empty()),
    Contact.Created: EventType("contact", "created", 1, lambda e: contact_created(
        e.pii, e.tags, e.list_ids, e.is_opted_out, e.status, e.invalid_reason, e.operator, e.country)),
    Contact.Updated: EventType("contact", "updated", 1, lambda e: payloads.ContactUpdated(
        changes={**_pii(e.pii), **_camel(e.changes)}, changed_fields=changed_fields(e), erased=_erased(e.pii))),
    Contact.AddedToLists: EventType("contact", "added_to_lists", 1, lambda e: payloads.ListIds(list_ids=e.list_ids)),
    Contact.RemovedFromLists: EventType("contact", "removed_from_lists", 1,
                                        lambda e: payloads.ListIds(list_ids=e.list_ids)),
    Contact.OptedOut: EventType("contact", "opted_out", 1, lambda e: payloads.OptedOut(reason=e.reason)),
    Contact.OptedIn: EventType("contact", "opted_in", 1, lambda e: payloads.Empty()),
    Contact.Trashed: EventType("contact", "trashed", 1, lambda e: payloads.Empty()),
    Contact.Restored: EventType("contact", "restored", 1, lambda e: payloads.Empty()),
    Contact.Purged: EventType("contact", "purged", 1, lambda e: payloads.ContactPurged()),
    ContactImport.Started: EventType("import", "started", 1, lambda e: payloads.ImportStarted(
        source=e.source, filename=e.filename, list_id=e.list_id)),
    ContactImport.Progressed: EventType("import", "progress", 1, lambda e: payloads.ImportProgress(
        counts=counts(e.counts), last_row=e.last_row, contact_ids=[c["id"] for c in e.contacts])),
    ContactImport.Completed: EventType("import", "completed", 1,
                                       lambda e: payloads.ImportCompleted(counts=counts(e.counts))),
    ContactImport.Failed: EventType("import", "failed", 1, lambda e: payloads.ImportFailed(
        counts=counts(e.counts), reason=e.reason)),
    BulkAction.Started: EventType("bulk", "started", 1, lambda e: payloads.BulkStarted(
        action=e.action, params=_camel(dict(e.params)), matched=e.matched)),
    BulkAction.Progressed: EventType("bulk", "progress", 1, lambda e: payloads.BulkProgress(
        processed=e.processed, changed=e.changed)),
    BulkAction.Completed: EventType("bulk", "completed", 1, lambda e: payloads.BulkProgress(
        processed=e.processed, changed=e.changed)),
    BulkAction.Failed: EventType("bulk", "failed", 1, lambda e: payloads.BulkFailed(
        processed=e.processed, changed=e.changed, reason=e.reason)),
}


def contact_created(pii: dict[str, Any], tags: list[str], list_ids: list[Any], is_opted_out: bool, status: str,
                    invalid_reason: str | None, operator: str | None, country: str | None) -> payloads.ContactCreated:
    """A new contact's ``data`` (a single create's and each contact of an import batch alike)."""
    return payloads.ContactCreated(
        tags=tags, list_ids=list_ids, is_opted_out=is_opted_out, status=status, invalid_reason=invalid_reason,
        operator=operator, country=country, phone=pii.get("phone", UNSET), first_name=pii.get("first_name", UNSET),
        last_name=pii.get("last_name", UNSET), erased=_erased(pii))


def _erased(pii: dict[str, Any]) -> Any:
    """``erased`` is sent only as true, when the contact was purged before this message went out.

    A field set to ``UNSET`` is left out of the JSON (msgspec), as a personal field the
    event does not hold is: absent, not null, as every message before the Structs were the
    encoders.
    """
    return True if pii.get("erased") else UNSET


def event_id(originator_id: uuid.UUID, version: int) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{originator_id}:{version}"))``: the relay computes one per message."""
    return _name_uuid(f"{originator_id}:{version}")


class Message(msgspec.Struct):
    subject: str
    msg_id: str
    payload: bytes
    erases: str | None = None  # for contact.purged: the contact's subject stem to erase first


class Part(NamedTuple):
    """One message of an event before its notification id (the CloudEvents ``sequence``) is known.

    What the unit of work encodes beside the event (events/outbox.py) and ``to_messages``
    completes: the relay adds the prefix and the sequence, nothing else.
    """

    subject: str                  # after the prefix: <account>.<aggregate>.<id>.<event>
    msg_id: str
    attributes: dict[str, Any]    # the CloudEvents attributes but ``sequence``
    data: payloads.Data
    sealed_by: uuid.UUID | None   # the contact whose personal fields (and tags) ``data`` carries
    erases: bool = False          # contact.purged: the contact's messages are erased before it goes out


def to_messages(event: Any, position: int, prefix: str = "contacts") -> list[Message]:
    """The NATS messages for a stored event.

    An import batch becomes one ``contact.created`` message per contact it created
    (identical to a single create's, so subscribers need no special case) followed by
    one ``import.progress`` message.
    """
    if isinstance(event, ContactImport.Progressed):
        return [*_created_messages(event, position, prefix), _message(event, position, prefix)]
    return [_completed(part, position, prefix) for part in parts(event)]


def parts(event: Any) -> list[Part]:
    """``to_messages`` without the prefix and the sequence: everything known before the event is stored."""
    found = []
    if isinstance(event, ContactImport.Progressed):
        found.extend(_created_parts(event))
    if type(event) in EVENT_TYPES:
        found.append(_part(event))
    return found


def head(attributes: dict[str, Any]) -> bytes:
    """The JSON envelope up to the sequence's value: ``{"specversion":…,"aggregateversion":N,"sequence":``."""
    return msgspec.json.encode(attributes)[:-1] + b',"sequence":'


def payload(head_bytes: bytes, position: int, data: bytes) -> bytes:
    """The message body: byte for byte ``msgspec.json.encode({**attributes, "sequence": position, "data": data})``."""
    return b"".join((head_bytes, str(position).encode(), b',"data":', data, b"}"))


def attributes(event: Any, position: int) -> dict[str, Any]:
    """The CloudEvents attributes of an event's message (everything but ``data``)."""
    return {**_attributes(event), "sequence": position}


def _attributes(event: Any) -> dict[str, Any]:
    spec = EVENT_TYPES[type(event)]
    aggregate_id = str(event.originator_id)
    return {
        "specversion": "1.0",
        "id": event_id(event.originator_id, event.originator_version),
        "source": SOURCE,
        "type": spec.type,
        "subject": f"{spec.aggregate}/{aggregate_id}",
        "time": event.timestamp,
        "datacontenttype": "application/json",
        "accountid": str(event.account_id),
        "actor": event.actor,
        "requestid": event.request_id,
        "aggregateid": aggregate_id,
        "aggregateversion": event.originator_version,
    }


def _completed(part: Part, position: int, prefix: str) -> Message:
    subject = f"{prefix}.{part.subject}"
    # One encode of the whole envelope: the same bytes as ``payload(head(…), …)`` in less time
    # (an import batch's thousand messages are built this way when the relay decodes it).
    return Message(subject=subject, msg_id=part.msg_id,
                   payload=msgspec.json.encode({**part.attributes, "sequence": position, "data": part.data}),
                   erases=subject.rsplit(".", 1)[0] if part.erases else None)


def _message(event: Any, position: int, prefix: str) -> Message:
    return _completed(_part(event), position, prefix)


def _part(event: Any) -> Part:
    spec = EVENT_TYPES[type(event)]
    attrs = _attributes(event)
    personal = spec.aggregate == "contact" and spec.name in PII_EVENT_NAMES
    return Part(subject=f"{event.account_id}.{spec.aggregate}.{attrs['aggregateid']}.{spec.name}",
                msg_id=attrs["id"], attributes=attrs, data=spec.data(event),
                sealed_by=event.originator_id if personal else None, erases=type(event) is Contact.Purged)


def _created_parts(batch: Any) -> list[Part]:
    """``_part`` of each contact's ``Created`` event in an import batch, without building the events.

    The same as ``_part(created)`` for ``batch.created_events()`` (a test compares their
    messages); about a quarter of its cost per contact, which matters when one batch fans
    out into a thousand messages.
    """
    spec = EVENT_TYPES[Contact.Created]
    account = str(batch.account_id)
    found = []
    for entry in batch.contacts:
        contact_id = str(entry["id"])
        eid = _name_uuid(f"{contact_id}:1")
        attrs = {
            "specversion": "1.0", "id": eid, "source": SOURCE, "type": spec.type,
            "subject": f"contact/{contact_id}", "time": batch.timestamp, "datacontenttype": "application/json",
            "accountid": account, "actor": batch.actor, "requestid": batch.request_id,
            "aggregateid": contact_id, "aggregateversion": 1,
        }
        data = contact_created(entry["pii"], entry["tags"], entry["list_ids"], entry["is_opted_out"], entry["status"],
                               entry["invalid_reason"], entry["operator"], entry["country"])
        found.append(Part(subject=f"{account}.contact.{contact_id}.created", msg_id=eid, attributes=attrs,
                          data=data, sealed_by=entry["id"]))
    return found


def _created_messages(batch: Any, position: int, prefix: str) -> list[Message]:
    """``_completed`` of each of ``_created_parts(batch)``, its envelope spliced from bytes encoded once per batch.

    The envelopes of a batch's contacts differ only in the event id and the contact id:
    the rest is encoded once and joined around them, in ``_attributes``' key order, the
    bytes ``msgspec.json.encode`` gives the whole dict (``tests/unit/test_fast_paths.py``
    holds them equal). Building and encoding a dict of twelve attributes per contact was
    about a third of the relay's cost of building a batch's messages, measured in-process.
    """
    return _spliced(batch, ((msgspec.json.encode(entry["id"])[1:-1], contact_created(  # a UUID in C: str() is 3x
        entry["pii"], entry["tags"], entry["list_ids"], entry["is_opted_out"], entry["status"], entry["invalid_reason"],
        entry["operator"], entry["country"])) for entry in batch.contacts), position, prefix)


def import_messages(batch: Any, entries: list[Any], position: int, prefix: str) -> list[Message]:
    """``to_messages`` of an import batch whose contacts are opened only for their messages (the relay's path).

    ``batch`` is the batch event with its ``contacts`` as stored, ``entries`` what
    ``PiiMapper.open_import_batch`` made of them; the bytes are those ``to_messages`` gives the
    fully decoded event (tests/integration/test_event_contract.py holds them equal).
    """
    made = ContactCreated
    created = _spliced(batch, ((e.id.encode(), made(
        tags=e.tags, list_ids=e.list_ids, is_opted_out=e.is_opted_out, status=e.status, invalid_reason=e.invalid_reason,
        operator=e.operator, country=e.country, phone=e.opened.phone, first_name=e.opened.first_name,
        last_name=e.opened.last_name, erased=UNSET) if e.opened is not None else made(
        tags=e.tags, list_ids=e.list_ids, is_opted_out=e.is_opted_out, status=e.status, invalid_reason=e.invalid_reason,
        operator=e.operator, country=e.country, phone=UNSET, first_name=UNSET, last_name=UNSET, erased=True))
        for e in entries), position, prefix)
    ids_only = dataclasses.replace(batch, contacts=[{"id": e.id} for e in entries])  # all the progress data reads
    return [*created, _message(ids_only, position, prefix)]


def _spliced(batch: Any, contacts: Iterable[tuple[bytes, payloads.Data]], position: int,
             prefix: str) -> list[Message]:
    """The ``contact.created`` messages of a batch's contacts, each given as (its id's text as bytes, its data)."""
    encode = msgspec.json.encode
    spec = EVENT_TYPES[Contact.Created]
    account = str(batch.account_id)
    to_id = b'{"specversion":"1.0","id":'
    to_subject = b',"source":' + encode(SOURCE) + b',"type":' + encode(spec.type) + b',"subject":"contact/'
    to_aggregate = (b'","time":' + encode(batch.timestamp) + b',"datacontenttype":"application/json","accountid":'
                    + encode(account) + b',"actor":' + encode(batch.actor) + b',"requestid":'
                    + encode(batch.request_id) + b',"aggregateid":"')
    to_data = b'","aggregateversion":1,"sequence":' + str(position).encode() + b',"data":'
    subject_head = f"{prefix}.{account}.contact."
    found = []
    for cid, data in contacts:
        contact_id = cid.decode()
        eid = _name_uuid(f"{contact_id}:1")
        found.append(Message(subject=f"{subject_head}{contact_id}.created", msg_id=eid, payload=b"".join(
            (to_id, encode(eid), to_subject, cid, to_aggregate, cid, to_data, encode(data), b"}"))))
    return found


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


# uuid5's variant bits (10xx) over the first hex digit of the clock sequence, as a look-up.
_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


def _name_uuid(name: str) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, name))``, without building a UUID object.

    The version (5) and variant are set on the SHA-1's hex digits, not its bytes: one
    import batch computes a thousand of these (timeit, alternated on a loaded machine:
    about 4 µs a call with a bytearray, 1.6-2 µs this way).
    """
    x = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"

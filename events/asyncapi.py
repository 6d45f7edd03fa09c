"""The published event contract as data: one msgspec Struct per event type's ``data``,
and the AsyncAPI 3.0 document generated from them (served at ``/asyncapi.json``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from events.contract import EVENT_TYPES, SOURCE, EventType, event_id


class Data(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every event's ``data``."""


class Empty(Data):
    """No data: the event's type says it all."""


class ContactPurged(Data):
    """No data; published only once the contact's personal messages are erased from the stream: erase your copies."""


class ListCreated(Data):
    name: str
    description: str | None


class Changes(Data):
    changes: dict[str, Any]


class ContactCreated(Data, rename="camel"):
    tags: list[str]
    list_ids: list[UUID]
    is_opted_out: bool
    status: str
    invalid_reason: str | None
    operator: str | None
    country: str | None
    phone: str | None = None          # absent once the contact was purged (erased)
    first_name: str | None = None
    last_name: str | None = None
    erased: bool = False              # present (true) when the contact was purged before this was published


class ContactUpdated(Data, rename="camel"):
    changes: dict[str, Any]
    changed_fields: list[str]
    erased: bool = False              # as in ContactCreated: the values are gone, changedFields still names them


class ListIds(Data, rename="camel"):
    list_ids: list[UUID]


class OptedOut(Data):
    reason: str


class Counts(Data):
    read: int
    imported: int
    valid: int
    invalid: int
    skipped: int


class ImportStarted(Data, rename="camel"):
    source: str
    filename: str | None
    list_id: UUID | None


class ImportProgress(Data, rename="camel"):
    counts: Counts
    last_row: int
    contact_ids: list[UUID]


class ImportCompleted(Data):
    counts: Counts


class ImportFailed(Data):
    counts: Counts
    reason: str


_SCHEMAS: dict[str, type[Data]] = {
    "contacts.contact_list.created.v1": ListCreated, "contacts.contact_list.updated.v1": Changes,
    "contacts.contact_list.deleted.v1": Empty, "contacts.contact.created.v1": ContactCreated,
    "contacts.contact.updated.v1": ContactUpdated, "contacts.contact.added_to_lists.v1": ListIds,
    "contacts.contact.removed_from_lists.v1": ListIds, "contacts.contact.opted_out.v1": OptedOut,
    "contacts.contact.opted_in.v1": Empty, "contacts.contact.trashed.v1": Empty,
    "contacts.contact.restored.v1": Empty, "contacts.contact.purged.v1": ContactPurged,
    "contacts.contact_import.started.v1": ImportStarted, "contacts.contact_import.progress.v1": ImportProgress,
    "contacts.contact_import.completed.v1": ImportCompleted, "contacts.contact_import.failed.v1": ImportFailed,
}

_ACCOUNT, _LIST, _CONTACT = "7f0c2a5e-1b1d-4c8e-9a57-2b2f6f0d9a11", "0b6f2c1e-5a4d-4e3f-8c2b-1a9d8e7f6c5b", \
    "3c2b1a0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9"
_IMPORT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
_EXAMPLES: dict[str, dict[str, Any]] = {
    "contacts.contact_list.created.v1": {"name": "VIP Customers", "description": "Spend over KES 10,000/month"},
    "contacts.contact_list.updated.v1": {"changes": {"name": "VIP"}},
    "contacts.contact.created.v1": {"phone": "+254712345678", "firstName": "John", "lastName": "Doe",
                                    "tags": ["vip"], "listIds": [_LIST], "isOptedOut": False, "status": "valid",
                                    "invalidReason": None, "operator": "Safaricom", "country": "KE"},
    "contacts.contact.updated.v1": {"changes": {"firstName": "Jon", "tags": ["vip", "nairobi"]},
                                    "changedFields": ["firstName", "tags"]},
    "contacts.contact.added_to_lists.v1": {"listIds": [_LIST]},
    "contacts.contact.removed_from_lists.v1": {"listIds": [_LIST]},
    "contacts.contact.opted_out.v1": {"reason": "inbound SMS: STOP"},
    "contacts.contact_import.started.v1": {"source": "csv", "filename": "contacts.csv", "listId": None},
    "contacts.contact_import.progress.v1": {"counts": {"read": 1000, "imported": 978, "valid": 960,
                                                       "invalid": 18, "skipped": 22},
                                            "lastRow": 1000, "contactIds": [_CONTACT]},
    "contacts.contact_import.completed.v1": {"counts": {"read": 1200, "imported": 1170, "valid": 1150,
                                                        "invalid": 20, "skipped": 30}},
    "contacts.contact_import.failed.v1": {"counts": {"read": 1000, "imported": 1000, "valid": 1000, "invalid": 0,
                                                     "skipped": 0}, "reason": "FileFormatError: line too long"},
}


def data_schema(event_type: str) -> type[Data]:
    return _SCHEMAS[event_type]


def example(spec: EventType) -> dict[str, Any]:
    """A complete example message (envelope and data) for one event type."""
    aggregate_id = {"list": _LIST, "import": _IMPORT}.get(spec.aggregate, _CONTACT)
    version = 1 if spec.name in ("created", "started") else 3  # a later event: version 3, say
    return {"specversion": "1.0", "id": event_id(UUID(aggregate_id), version), "source": SOURCE,
            "type": spec.type, "subject": f"{spec.aggregate}/{aggregate_id}", "time": "2026-11-26T10:00:00Z",
            "datacontenttype": "application/json", "accountid": _ACCOUNT, "actor": "user-42",
            "requestid": "a1b2c3", "aggregateid": aggregate_id, "aggregateversion": version, "sequence": 1042,
            "data": _EXAMPLES.get(spec.type, {})}


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The CloudEvents 1.0 attributes every message carries, plus the service's extensions."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: str
    accountid: UUID
    actor: str
    requestid: str
    aggregateid: UUID
    aggregateversion: int
    sequence: int
    data: dict[str, Any]


def document(prefix: str = "contacts") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every published event type."""
    specs = sorted({spec.type: spec for spec in EVENT_TYPES.values()}.values(), key=lambda s: s.type)
    _, components = msgspec.json.schema_components([Envelope, *(_SCHEMAS[s.type] for s in specs)],
                                                   ref_template="#/components/schemas/{name}")
    for schema in components.values():
        # The Structs forbid unknown fields so the tests catch any drift; subscribers must not:
        # adding a field to a v1 message is not a breaking change (docs/events.md).
        schema.pop("additionalProperties", None)
    components["Envelope"]["properties"]["time"]["format"] = "date-time"
    for name in ("ContactCreated", "ContactUpdated"):
        components[name]["properties"]["erased"]["description"] = (
            "true (and no personal fields) when the contact was purged before the relay published this message")
    channels, operations, messages = {}, {}, {}
    for spec in specs:
        key = spec.type.replace(".", "_")
        data_name = _SCHEMAS[spec.type].__name__
        messages[key] = {
            "name": spec.type, "title": spec.type, "contentType": "application/json",
            "summary": (_SCHEMAS[spec.type].__doc__ or "").strip() or spec.type,
            "payload": {"allOf": [{"$ref": "#/components/schemas/Envelope"},
                                  {"type": "object", "properties": {
                                      "type": {"const": spec.type},
                                      "data": {"$ref": f"#/components/schemas/{data_name}"}}}]},
            "examples": [{"name": "example", "payload": example(spec)}],
        }
        channels[key] = {
            "address": f"{prefix}.{{accountId}}.{spec.aggregate}.{{aggregateId}}.{spec.name}",
            "parameters": {"accountId": {"description": "the account (UUID)"},
                           "aggregateId": {"description": "the list, contact or import (UUID)"}},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"receive_{key}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Contacts service events", "version": "1.0.0",
                 "description": "Every stored event, published to the JetStream stream once (Nats-Msg-Id = id), "
                                "in order per aggregate. See docs/events.md."},
        "defaultContentType": "application/json",
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }

"""The published event contract as data: one msgspec Struct per event type's ``data``,
and the AsyncAPI 3.0 document generated from them (served at ``/asyncapi.json``, shipped as
docs/asyncapi.json; ``python -m events.asyncapi`` writes that file).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import msgspec

from events.contract import EVENT_TYPES, EventType
from events.payloads import (
    Data,
    Empty,
    ContactPurged,
    ListCreated,
    Changes,
    ContactCreated,
    ContactUpdated,
    ListIds,
    OptedOut,
    Counts,
    ImportStarted,
    ImportProgress,
    ImportCompleted,
    ImportFailed,
    BulkStarted,
    BulkProgress,
    BulkFailed,
)



_SCHEMAS: dict[str, type[Data]] = {
    "contacts.contact_list.created.v1": ListCreated, "contacts.contact_list.updated.v1": Changes,
    "contacts.contact_list.deleted.v1": Empty, "contacts.contact.created.v1": ContactCreated,
    "contacts.contact.updated.v1": ContactUpdated, "contacts.contact.added_to_lists.v1": ListIds,
    "contacts.contact.removed_from_lists.v1": ListIds, "contacts.contact.opted_out.v1": OptedOut,
    "contacts.contact.opted_in.v1": Empty, "contacts.contact.trashed.v1": Empty,
    "contacts.contact.restored.v1": Empty, "contacts.contact.purged.v1": ContactPurged,
    "contacts.contact_import.started.v1": ImportStarted, "contacts.contact_import.progress.v1": ImportProgress,
    "contacts.contact_import.completed.v1": ImportCompleted, "contacts.contact_import.failed.v1": ImportFailed,
    "contacts.bulk_action.started.v1": BulkStarted, "contacts.bulk_action.progress.v1": BulkProgress,
    "contacts.bulk_action.completed.v1": BulkProgress, "contacts.bulk_action.failed.v1": BulkFailed,
}

# One real message per type, recorded by scripts/capture_event_examples.py (subject, Nats-Msg-Id, body).
EXAMPLES: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "asyncapi_examples.json").read_text())

# What each event means for a subscriber: (summary, description).
WORDS: dict[str, tuple[str, str]] = {
    "contacts.contact_list.created.v1": (
        "A contact list was created", "`data` holds its `name` and `description`; it starts empty."),
    "contacts.contact_list.updated.v1": (
        "A contact list was renamed or described", "`data.changes` holds only the fields that changed (`name`,"
        " `description`); a `null` description was cleared."),
    "contacts.contact_list.deleted.v1": (
        "A contact list was deleted", "Its contacts stay in the account. No event is published per member: a"
        " subscriber that keeps memberships removes the list from its contacts itself. `data` is empty."),
    "contacts.contact.created.v1": (
        "A contact was created", "Through the API or by an import (then `requestid` and `sequence` are the"
        " import batch's). `data` holds the E.164 `phone`, `firstName`, `lastName` (the only personal fields"
        " ever published), tags, lists, opt-out, and the operator lookup; `erased: true` and no personal fields"
        " if the contact was purged before this message went out."),
    "contacts.contact.updated.v1": (
        "A contact's fields changed", "`changes` holds the new values subscribers may see (phone, names, tags,"
        " operator lookup); `changedFields` names every changed field, email and notes included, whose values"
        " are not published. List membership and opt-out have events of their own."),
    "contacts.contact.added_to_lists.v1": (
        "A contact joined lists", "`listIds` names only the lists it newly joined."),
    "contacts.contact.removed_from_lists.v1": (
        "A contact left lists", "`listIds` names only the lists it left; a PATCH with `listIds` (a full sync)"
        " publishes this before `added_to_lists`."),
    "contacts.contact.opted_out.v1": (
        "A contact opted out of messages", "Do not message this contact. `reason` is `api` when set through the"
        " API, or `inbound SMS: <word>` when the person replied STOP (then `actor` is `inbound-sms` and"
        " `requestid` the SMS's `messageId`)."),
    "contacts.contact.opted_in.v1": (
        "A contact may be messaged again", "The opt-out was lifted through the API. `data` is empty."),
    "contacts.contact.trashed.v1": (
        "A contact was moved to the trash", "It leaves active views and list counts but keeps its number and"
        " lists until restored or purged. `data` is empty."),
    "contacts.contact.restored.v1": (
        "A contact came back from the trash", "With its lists and tags, as before it was trashed. `data` is"
        " empty."),
    "contacts.contact.purged.v1": (
        "A contact was erased for good", "Its personal data is gone from the service and its `created`/`updated`"
        " messages from the stream: a subscriber that stored personal data must delete it now. `data` is"
        " empty."),
    "contacts.contact_import.started.v1": (
        "An import started", "`source` is `csv`, `xlsx` or `json`; `listId` is the list every imported contact"
        " joins."),
    "contacts.contact_import.progress.v1": (
        "An import stored a batch", "One per batch of up to 1,000 rows, after the batch's `contact.created`"
        " messages. `counts` are running totals (`imported` = `valid` + `invalid`; `rows` read; `read` is its v1"
        " name, same value); `contactIds` are the contacts this batch created."),
    "contacts.contact_import.completed.v1": (
        "An import finished", "`counts` are the import's totals, as the HTTP answer gives them."),
    "contacts.contact_import.failed.v1": (
        "An import stopped part-way", "`reason` says why; contacts stored before the failure stay stored, and"
        " `counts` say how many."),
    "contacts.bulk_action.started.v1": (
        "A select-all bulk action was queued as a job", "More than 1,000 contacts matched a bulk action's"
        " `filter`: `action` (delete, add_to_list, remove_from_list, tag, untag, opt_out, opt_in), its `params`"
        " and how many contacts `matched` when it was asked. Each changed contact also has its own event."),
    "contacts.bulk_action.progress.v1": (
        "A bulk job processed a step", "Running totals: `processed` of the matched contacts, `changed` of"
        " those (a contact already in the wanted state is processed, not changed)."),
    "contacts.bulk_action.completed.v1": (
        "A bulk job finished", "`processed` and `changed` are the job's totals, as its resource gives them."),
    "contacts.bulk_action.failed.v1": (
        "A bulk job stopped part-way", "`reason` says why (the list was deleted, say); contacts changed before"
        " stay changed, and the totals say how many."),
}


def data_schema(event_type: str) -> type[Data]:
    return _SCHEMAS[event_type]


def example(spec: EventType) -> dict[str, Any]:
    """A complete message (envelope and data) of one event type, as a real run published it."""
    return EXAMPLES[spec.type]["payload"]


class InboundSms(msgspec.Struct):
    """An inbound SMS, as the SMS gateway publishes it to the service."""

    from_: Annotated[str, msgspec.Meta(description="The sender's number (E.164 or as the gateway writes it)")] = \
        msgspec.field(name="from")
    body: Annotated[str, msgspec.Meta(description="The text: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT"
                                                  " (any case) opts the sender out")]
    messageId: Annotated[str, msgspec.Meta(description="The gateway's id, recorded as the opt-out's request id")] \
        = ""


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


NATS_HEADERS = {
    "type": "object", "required": ["Nats-Msg-Id"],
    "properties": {"Nats-Msg-Id": {
        "type": "string", "format": "uuid",
        "description": "The event id, equal to the body's `id`: uuid5 of the aggregate id and version. JetStream"
                       " drops a republished copy inside the duplicate window; consumers de-duplicate on it."}},
}


def document(prefix: str = "contacts", stream: str = "CONTACTS", inbound_subject: str = "sms.inbound",
             host: str = "127.0.0.1:4222") -> dict[str, Any]:
    """The AsyncAPI 3.0 document: what the service sends (every event type) and the inbound SMS it receives."""
    specs = sorted({spec.type: spec for spec in EVENT_TYPES.values()}.values(), key=lambda s: s.type)
    _, components = msgspec.json.schema_components([Envelope, InboundSms, *(_SCHEMAS[s.type] for s in specs)],
                                                   ref_template="#/components/schemas/{name}")
    for schema in components.values():
        # The Structs forbid unknown fields so the tests catch any drift; subscribers must not:
        # adding a field to a v1 message is not a breaking change (docs/events.md).
        schema.pop("additionalProperties", None)
    components["Envelope"]["properties"]["time"]["format"] = "date-time"
    components["NatsHeaders"] = NATS_HEADERS
    for name in ("ContactCreated", "ContactUpdated"):
        components[name]["properties"]["erased"]["description"] = (
            "true (and no personal fields) when the contact was purged before the relay published this message")
    components["Counts"]["properties"]["read"]["description"] = "The v1 name of `rows` (same value)"
    components["Counts"]["properties"]["rows"]["description"] = "Data rows read so far"
    servers = {"nats": {
        "host": host, "protocol": "nats",
        "description": f"NATS with JetStream. The service publishes to the stream `{stream}`"
                       f" (CONTACTS_NATS_STREAM), which captures `{prefix}.>`, once per event (de-duplicated"
                       f" by `Nats-Msg-Id`), in store order. The host is NATS's default port on this machine:"
                       f" the service connects to CONTACTS_NATS_URL, and `make run` prints the URL of the"
                       f" embedded server it starts."}}
    server = [{"$ref": "#/servers/nats"}]
    channels, operations, messages = {}, {}, {}
    for spec in specs:
        key = spec.type.replace(".", "_")
        summary, description = WORDS[spec.type]
        recorded = EXAMPLES[spec.type]
        messages[key] = {
            "name": spec.type, "title": spec.type, "summary": summary, "description": description,
            "contentType": "application/json", "headers": {"$ref": "#/components/schemas/NatsHeaders"},
            "payload": {"allOf": [{"$ref": "#/components/schemas/Envelope"},
                                  {"type": "object", "properties": {
                                      "type": {"const": spec.type},
                                      "data": {"$ref": f"#/components/schemas/{_SCHEMAS[spec.type].__name__}"}}}]},
            "examples": [{"name": "recorded", "summary": f"Published on {recorded['subject']}",
                          "headers": recorded["headers"], "payload": recorded["payload"]}],
        }
        channels[key] = {
            "address": f"{prefix}.{{accountId}}.{spec.aggregate}.{{aggregateId}}.{spec.name}",
            "title": spec.type, "servers": server,
            "parameters": {"accountId": {"description": "The account (UUID)"},
                           "aggregateId": {"description": f"The {spec.aggregate} (UUID)"}},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"send_{key}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{key}"}, "summary": f"Publish: {summary[0].lower()}"
            f"{summary[1:]}", "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}]}
    inbound = EXAMPLES["inbound"]
    messages["inboundSms"] = {
        "name": "inbound_sms", "title": "Inbound SMS", "summary": "An SMS a person sent to the platform",
        "description": "Consumed by the worker through the durable JetStream consumer `contacts-optout`: a STOP"
                       " word from a number that a contact of the account holds opts the contact out (a"
                       " `contact.opted_out` event follows). Anything else changes nothing. Handled messages are"
                       " erased from the stream the service created, as they hold a phone number.",
        "contentType": "application/json", "payload": {"$ref": "#/components/schemas/InboundSms"},
        "examples": [{"name": "stop", "summary": "A STOP reply", "payload": inbound["payload"]}],
    }
    channels["smsInbound"] = {
        "address": f"{inbound_subject}.{{accountId}}", "title": "Inbound SMS", "servers": server,
        "description": f"CONTACTS_INBOUND_SUBJECT. If no stream captures `{inbound_subject}.>`, the service creates"
                       f" `{stream}_INBOUND`, a work queue.",
        "parameters": {"accountId": {"description": "The account the SMS was sent to (UUID)"}},
        "messages": {"inboundSms": {"$ref": "#/components/messages/inboundSms"}},
    }
    operations["receive_inboundSms"] = {
        "action": "receive", "channel": {"$ref": "#/channels/smsInbound"},
        "summary": "Opt out the senders of STOP replies",
        "messages": [{"$ref": "#/channels/smsInbound/messages/inboundSms"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Contacts service events", "version": "1.1.0",
                 "description": "Every change stored by the contacts service, published once to a JetStream"
                                " stream as a CloudEvents 1.0 JSON message (`Nats-Msg-Id` = `id`), in order per"
                                " aggregate; and the inbound SMS it consumes for opt-outs. docs/events.md is the"
                                " contract in words."},
        "defaultContentType": "application/json",
        "servers": servers, "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


if __name__ == "__main__":
    # docs/asyncapi.json: the document with the default settings (tests/integration/test_event_contract.py keeps it equal).
    Path("docs/asyncapi.json").write_text(json.dumps(document(), indent=2, ensure_ascii=False) + "\n")

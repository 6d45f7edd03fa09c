"""Domain events encoded as NATS messages (events/contract.py) match the documented AsyncAPI schema. No NATS."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import msgspec

from command.context import Actor
from command.domain import BulkAction, Contact, ContactImport, ContactList
from events.asyncapi import Envelope, data_schema
from events.contract import EVENT_TYPES, event_id, to_messages

ACCOUNT = UUID("00000000-0000-4000-8000-00000000b001")
ACTOR = Actor(ACCOUNT, "alice", "req-9")
SAFARICOM = {"status": "valid", "invalid_reason": None, "operator": "Safaricom", "country": "KE"}
PII = {"phone": "+254712345678", "first_name": "Jane", "last_name": "Doe", "email": "jane@example.com",
       "notes": "met at the fair"}


def every_event() -> list[Any]:
    """One stored event of each type the service publishes, made by the aggregates' own commands."""
    contact_list = ContactList.create(ACTOR, "Customers", None)
    contact_list.update(ACTOR, {"description": "Paying ones"})
    contact_list.delete(ACTOR)
    contact = Contact.create(ACTOR, pii=dict(PII), tags=["vip"], list_ids=[], is_opted_out=False,
                             directory_match=SAFARICOM, reservation_id=uuid4())
    contact.update(ACTOR, {"last_name": "Smith"}, {"tags": ["vip", "new"]})
    contact.add_to_lists(ACTOR, [contact_list.id])
    contact.remove_from_lists(ACTOR, [contact_list.id])
    contact.opt_out(ACTOR, reason="inbound_sms")
    contact.opt_in(ACTOR)
    contact.trash(ACTOR)
    contact.restore(ACTOR)
    contact.trash(ACTOR)
    contact.purge(ACTOR)
    job = ContactImport.start(ACTOR, source="csv", filename="c.csv", list_id=None, idempotency_key=None)
    counts = {"read": 1, "imported": 1, "valid": 1, "invalid": 0, "skipped": 0}
    job.record_rows(ACTOR, [{"id": uuid4(), "row": 1, "pii": {"phone": "+254712000001"}, "tags": [], "list_ids": [],
                             "is_opted_out": False, "reservation_id": uuid4(), **SAFARICOM}], [], 1, counts)
    job.complete(ACTOR)
    failed = ContactImport.start(ACTOR, source="csv", filename=None, list_id=None, idempotency_key=None)
    failed.fail(ACTOR, "not a CSV file")
    bulk = BulkAction.start(ACTOR, action="add_to_list", params={"list_id": str(contact_list.id)}, matched=2)
    bulk.progress(ACTOR, 2, 1)
    bulk.complete(ACTOR)
    broken = BulkAction.start(ACTOR, action="tag", params={"tags": ["x"]}, matched=1)
    broken.fail(ACTOR, "the database went away")
    return [e for agg in (contact_list, contact, job, failed, bulk, broken) for e in agg.collect_events()]


def envelope_of(payload: bytes) -> Envelope:
    """The message body read as the AsyncAPI document describes it, its data against its type's schema."""
    envelope = msgspec.json.decode(payload, type=Envelope)
    msgspec.convert(envelope.data, data_schema(envelope.type))
    return envelope


def test_every_published_event_type_is_made_by_some_command_here() -> None:
    # A new event type fails here until every_event() makes one, so the tests below cover it.
    assert set(EVENT_TYPES) <= {type(e) for e in every_event()}


def test_every_event_encodes_into_a_message_its_schema_accepts_with_subject_and_id_from_the_event() -> None:
    for event in every_event():
        spec = EVENT_TYPES[type(event)]
        message = to_messages(event, 42, "acme")[-1]  # an import batch's own message comes after its contacts'
        envelope = envelope_of(message.payload)
        assert envelope.type == spec.type
        assert message.subject == f"acme.{ACCOUNT}.{spec.aggregate}.{event.originator_id}.{spec.name}"
        assert message.msg_id == envelope.id == event_id(event.originator_id, event.originator_version)
        assert (envelope.accountid, envelope.actor, envelope.requestid) == (ACCOUNT, "alice", "req-9")
        assert (envelope.aggregateid, envelope.aggregateversion, envelope.sequence) == (
            event.originator_id, event.originator_version, 42)


def test_a_republished_event_has_the_same_message_id_so_jetstream_drops_the_copy() -> None:
    for event in every_event():
        first, again = to_messages(event, 1, "acme"), to_messages(event, 99, "acme")
        assert [m.msg_id for m in first] == [m.msg_id for m in again]


def test_no_two_events_share_a_message_id() -> None:
    ids = [m.msg_id for event in every_event() for m in to_messages(event, 1, "acme")]
    assert len(ids) == len(set(ids)) == 24  # 23 events, one of them an import batch of one contact


def test_a_contact_message_carries_the_phone_and_names_but_never_email_or_notes() -> None:
    created = next(e for e in every_event() if isinstance(e, Contact.Created))
    [message] = to_messages(created, 1, "acme")
    data = envelope_of(message.payload).data
    assert (data["phone"], data["firstName"], data["lastName"]) == ("+254712345678", "Jane", "Doe")
    assert b"jane@example.com" not in message.payload and b"met at the fair" not in message.payload


def test_an_import_batch_becomes_one_created_message_per_contact_then_its_progress() -> None:
    batch = next(e for e in every_event() if isinstance(e, ContactImport.Progressed))
    messages = to_messages(batch, 5, "acme")
    assert [m.subject.rsplit(".", 1)[1] for m in messages] == ["created", "progress"]
    created = envelope_of(messages[0].payload)
    assert (created.type, created.aggregateid, created.aggregateversion) == (
        "contacts.contact.created.v1", batch.contacts[0]["id"], 1)
    assert envelope_of(messages[1].payload).data["contactIds"] == [str(batch.contacts[0]["id"])]


def test_only_a_purge_message_asks_the_relay_to_erase_the_contacts_earlier_messages() -> None:
    for event in every_event():
        [*_, message] = to_messages(event, 1, "acme")
        if isinstance(event, Contact.Purged):
            assert message.erases == f"acme.{ACCOUNT}.contact.{event.originator_id}"
        else:
            assert message.erases is None


def test_each_message_data_is_built_as_the_documented_struct_of_its_type() -> None:
    """The AsyncAPI Structs are the encoders: what is sent cannot hold a field the document does not name."""
    for event in every_event():
        spec = EVENT_TYPES[type(event)]
        assert type(spec.data(event)) is data_schema(spec.type), spec.type


def test_a_personal_field_the_event_does_not_hold_is_absent_and_one_left_empty_is_null() -> None:
    """As before the Structs encoded: an import row without names sends no name keys; a create without one, null."""
    created = Contact.create(ACTOR, pii={"phone": "+254712345679", "first_name": None}, tags=[], list_ids=[],
                             is_opted_out=False, directory_match=SAFARICOM, reservation_id=uuid4())
    [message] = to_messages(created.collect_events()[0], 1, "acme")
    data = envelope_of(message.payload).data
    assert data["firstName"] is None and "lastName" not in data and "erased" not in data


def test_an_event_id_is_the_uuid5_of_the_aggregate_and_version() -> None:
    """The published id subscribers deduplicate on: uuid5(namespace, "<aggregate id>:<version>"), as documented."""
    from uuid import uuid5

    from events.contract import EVENT_ID_NAMESPACE

    for version in (*range(1, 2000), 123456):  # every variant digit comes up
        aggregate = uuid4()
        assert event_id(aggregate, version) == str(uuid5(EVENT_ID_NAMESPACE, f"{aggregate}:{version}"))

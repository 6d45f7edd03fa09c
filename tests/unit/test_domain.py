"""The aggregates of command/domain.py: their guards, the events each command emits, and replay. No I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, Mapper, StoredEvent, UUIDAsHex

from command.context import Actor
from command.domain import IMPORT_COUNTS, BulkAction, Contact, ContactImport, ContactList, check_version
from command.errors import NotFoundError, PreconditionFailedError
from command.transcoder import MsgspecJSONTranscoder

ACCOUNT = UUID("00000000-0000-4000-8000-00000000a001")
OTHER_ACCOUNT = UUID("00000000-0000-4000-8000-00000000a002")
ALICE = Actor(ACCOUNT, "alice", "req-1")
BOB = Actor(ACCOUNT, "bob", "req-2")
STRANGER = Actor(OTHER_ACCOUNT, "mallory", "req-3")
SAFARICOM = {"status": "valid", "invalid_reason": None, "operator": "Safaricom", "country": "KE"}


def pending(aggregate: Aggregate) -> list[Aggregate.Event]:
    """The events a command left to be saved, as the application's save() would take them."""
    return aggregate.collect_events()


def names(events: Iterable[Aggregate.Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def replayed(events: Iterable[Aggregate.Event]) -> Any:
    """The aggregate rebuilt from its events, as the repository rebuilds it from the event store."""
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def new_list(name: str = "Customers", description: str | None = "Paying ones") -> ContactList:
    contact_list = ContactList.create(ALICE, name, description)
    pending(contact_list)  # saved: tests look at what the next command adds
    return contact_list


def new_contact(*, tags: list[str] | None = None, list_ids: list[UUID] | None = None,
                is_opted_out: bool = False) -> Contact:
    contact = Contact.create(ALICE, pii={"phone": "+254712345678", "first_name": "Jane", "last_name": "Doe"},
                             tags=tags or [], list_ids=list_ids or [], is_opted_out=is_opted_out,
                             directory_match=SAFARICOM, reservation_id=uuid4())
    pending(contact)
    return contact


def trashed_contact() -> Contact:
    contact = new_contact()
    contact.trash(ALICE)
    pending(contact)
    return contact


# -- the If-Match guard ------------------------------------------------------------------------------


def test_an_edit_against_a_version_that_is_no_longer_current_is_refused_naming_the_current_one() -> None:
    contact_list = new_list()
    contact_list.update(ALICE, {"name": "Renamed"})
    with pytest.raises(PreconditionFailedError, match="at version 2, not 1") as refused:
        check_version(contact_list, 1)
    assert refused.value.current_version == 2


def test_an_edit_at_the_current_version_or_without_one_passes_the_guard() -> None:
    contact_list = new_list()
    check_version(contact_list, contact_list.version)
    check_version(contact_list, None)


# -- ContactList -------------------------------------------------------------------------------------


def test_creating_a_list_records_its_name_description_and_who_created_it() -> None:
    contact_list = ContactList.create(ALICE, "Customers", "Paying ones")
    [created] = pending(contact_list)
    assert isinstance(created, ContactList.Created)
    assert (created.name, created.description) == ("Customers", "Paying ones")
    assert (created.account_id, created.actor, created.request_id) == (ACCOUNT, "alice", "req-1")
    assert (contact_list.name, contact_list.description, contact_list.is_deleted) == ("Customers", "Paying ones",
                                                                                       False)


def test_a_list_update_records_only_the_fields_that_changed() -> None:
    contact_list = new_list()
    contact_list.update(BOB, {"name": "Customers", "description": "All of them"})
    [updated] = pending(contact_list)
    assert isinstance(updated, ContactList.Updated)
    assert updated.changes == {"description": "All of them"}
    assert updated.actor == "bob"
    assert contact_list.description == "All of them"


def test_a_list_update_that_changes_nothing_records_no_event() -> None:
    contact_list = new_list()
    contact_list.update(ALICE, {"name": "Customers", "description": "Paying ones"})
    assert pending(contact_list) == []
    assert contact_list.version == 1


def test_a_deleted_list_is_not_found_even_by_its_own_account() -> None:
    contact_list = new_list()
    contact_list.check_visible_to(ALICE)
    contact_list.delete(ALICE)
    assert names(pending(contact_list)) == ["Deleted"]
    with pytest.raises(NotFoundError, match=f"contact list {contact_list.id} not found") as refused:
        contact_list.check_visible_to(ALICE)
    assert refused.value.field == "id"


def test_a_list_is_not_found_by_another_account() -> None:
    with pytest.raises(NotFoundError):
        new_list().check_visible_to(STRANGER)


def test_a_list_replayed_from_its_events_equals_the_list_that_made_them() -> None:
    contact_list = ContactList.create(ALICE, "Customers", None)
    contact_list.update(ALICE, {"name": "Clients", "description": "From the fair"})
    contact_list.delete(BOB)
    again = replayed(pending(contact_list))
    assert (again.id, again.version, again.account_id) == (contact_list.id, 3, ACCOUNT)
    assert (again.name, again.description, again.is_deleted) == ("Clients", "From the fair", True)


def test_a_list_created_before_descriptions_existed_loads_with_no_description() -> None:
    transcoder = MsgspecJSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper = Mapper(transcoder=transcoder)
    stored = mapper.to_stored_event(ContactList.create(ALICE, "Old list", "d").collect_events()[0])
    state = json.loads(stored.state)
    del state["description"], state["class_version"]  # the v1 shape, as stored by an earlier version
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic, json.dumps(state).encode())
    loaded = mapper.to_domain_event(old).mutate(None)
    assert (loaded.name, loaded.description) == ("Old list", None)


# -- Contact -----------------------------------------------------------------------------------------


def test_a_new_contact_keeps_personal_fields_in_pii_and_the_network_from_the_directory() -> None:
    contact = Contact.create(ALICE, pii={"phone": "+254712345678", "first_name": "Jane"}, tags=["vip"],
                             list_ids=[], is_opted_out=False, directory_match=SAFARICOM, reservation_id=uuid4())
    [created] = pending(contact)
    assert created.pii == {"phone": "+254712345678", "first_name": "Jane"}
    assert (created.status, created.operator, created.country, created.invalid_reason) == (
        "valid", "Safaricom", "KE", None)
    assert (contact.phone, contact.tags, contact.is_active, contact.is_opted_out) == (
        "+254712345678", ["vip"], True, False)


def test_a_contact_update_records_only_the_personal_and_other_fields_that_changed() -> None:
    contact = new_contact(tags=["vip"])
    contact.update(BOB, {"phone": "+254712345678", "first_name": "Janet"}, {"tags": ["vip"], "status": "valid",
                                                                             "operator": "Airtel"})
    [updated] = pending(contact)
    assert isinstance(updated, Contact.Updated)
    assert (updated.pii, updated.changes, updated.actor) == ({"first_name": "Janet"}, {"operator": "Airtel"}, "bob")
    assert (contact.pii["first_name"], contact.pii["last_name"], contact.operator) == ("Janet", "Doe", "Airtel")


def test_a_contact_update_that_changes_nothing_records_no_event() -> None:
    contact = new_contact(tags=["vip"])
    contact.update(ALICE, {"first_name": "Jane"}, {"tags": ["vip"]})
    assert pending(contact) == []


def test_adding_to_lists_records_each_new_list_once_and_skips_lists_it_is_in() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    contact = new_contact(list_ids=[a])
    assert contact.add_to_lists(ALICE, [a, b, b, c]) == [b, c]
    [added] = pending(contact)
    assert isinstance(added, Contact.AddedToLists) and added.list_ids == [b, c]
    assert contact.list_ids == [a, b, c]


def test_adding_to_lists_it_is_already_in_records_nothing() -> None:
    a = uuid4()
    contact = new_contact(list_ids=[a])
    assert contact.add_to_lists(ALICE, [a]) == []
    assert pending(contact) == []


def test_removing_from_lists_records_only_the_lists_it_was_in() -> None:
    a, b, elsewhere = uuid4(), uuid4(), uuid4()
    contact = new_contact(list_ids=[a, b])
    assert contact.remove_from_lists(ALICE, [b, elsewhere, b]) == [b]
    [removed] = pending(contact)
    assert isinstance(removed, Contact.RemovedFromLists) and removed.list_ids == [b]
    assert contact.remove_from_lists(ALICE, [elsewhere]) == []
    assert pending(contact) == [] and contact.list_ids == [a]


def test_setting_the_lists_removes_the_unwanted_ones_then_adds_the_missing_ones() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    contact = new_contact(list_ids=[a, b])
    contact.sync_lists(ALICE, [b, c])
    events = pending(contact)
    assert names(events) == ["RemovedFromLists", "AddedToLists"]
    assert (events[0].list_ids, events[1].list_ids) == ([a], [c])
    assert contact.list_ids == [b, c]
    contact.sync_lists(ALICE, [c, b])
    assert pending(contact) == []  # the same lists in another order: nothing to record


def test_opting_out_records_the_reason_once() -> None:
    contact = new_contact()
    assert contact.opt_out(ALICE, reason="inbound_sms") is True
    [opted_out] = pending(contact)
    assert isinstance(opted_out, Contact.OptedOut) and opted_out.reason == "inbound_sms"
    assert contact.is_opted_out
    assert contact.opt_out(ALICE) is False
    assert pending(contact) == []


def test_opting_in_records_an_event_only_for_an_opted_out_contact() -> None:
    contact = new_contact(is_opted_out=True)
    assert contact.opt_in(BOB) is True
    assert names(pending(contact)) == ["OptedIn"] and not contact.is_opted_out
    assert contact.opt_in(BOB) is False
    assert pending(contact) == []


def test_tagging_appends_the_missing_tags_in_order_once_each() -> None:
    contact = new_contact(tags=["vip"])
    assert contact.tag(ALICE, ["nairobi", "vip", "nairobi", "new"]) is True
    [updated] = pending(contact)
    assert isinstance(updated, Contact.Updated) and updated.changes == {"tags": ["vip", "nairobi", "new"]}
    assert contact.tag(ALICE, ["new", "vip"]) is False
    assert pending(contact) == []


def test_untagging_removes_the_given_tags_and_records_nothing_when_none_is_there() -> None:
    contact = new_contact(tags=["vip", "nairobi", "new"])
    assert contact.untag(ALICE, ["nairobi", "absent"]) is True
    [updated] = pending(contact)
    assert updated.changes == {"tags": ["vip", "new"]}
    assert contact.untag(ALICE, ["absent"]) is False
    assert pending(contact) == []


def test_a_trashed_contact_is_not_found_and_trashing_it_again_records_nothing() -> None:
    contact = new_contact()
    assert contact.trash(ALICE) is True
    [trashed] = pending(contact)
    assert isinstance(trashed, Contact.Trashed)
    assert contact.deleted_at == trashed.timestamp and not contact.is_active
    with pytest.raises(NotFoundError, match=f"contact {contact.id} not found"):
        contact.check_visible_to(ALICE)
    assert contact.trash(ALICE) is False
    assert pending(contact) == []


def test_restoring_brings_a_trashed_contact_back_and_does_nothing_to_an_active_one() -> None:
    contact = trashed_contact()
    assert contact.restore(BOB) is True
    assert names(pending(contact)) == ["Restored"]
    assert contact.is_active and contact.deleted_at is None
    contact.check_visible_to(ALICE)
    assert contact.restore(BOB) is False
    assert pending(contact) == []


def test_only_a_trashed_contact_can_be_purged() -> None:
    contact = new_contact()
    assert contact.purge(ALICE) is False
    assert pending(contact) == [] and contact.pii["phone"] == "+254712345678"


def test_a_purge_erases_the_personal_fields_and_nothing_brings_the_contact_back() -> None:
    contact = trashed_contact()
    assert contact.purge(ALICE) is True
    [purged] = pending(contact)
    assert isinstance(purged, Contact.Purged)
    assert (contact.pii, contact.phone, contact.is_purged, contact.is_active) == ({}, "", True, False)
    assert (contact.restore(ALICE), contact.trash(ALICE), contact.purge(ALICE)) == (False, False, False)
    assert pending(contact) == []


def test_a_contact_is_not_found_by_another_account() -> None:
    with pytest.raises(NotFoundError):
        new_contact().check_visible_to(STRANGER)


def test_every_contact_event_carries_the_account_the_actor_and_the_request() -> None:
    contact = Contact.create(BOB, pii={"phone": "+254712345678"}, tags=[], list_ids=[], is_opted_out=False,
                             directory_match=SAFARICOM, reservation_id=uuid4())
    contact.update(BOB, {"email": "jane@example.com"}, {})
    contact.add_to_lists(BOB, [uuid4()])
    contact.tag(BOB, ["vip"])
    contact.opt_out(BOB)
    contact.trash(BOB)
    contact.purge(BOB)
    events = pending(contact)
    assert len(events) == 7
    assert {(e.account_id, e.actor, e.request_id) for e in events} == {(ACCOUNT, "bob", "req-2")}


def test_a_contact_replayed_from_its_events_equals_the_contact_that_made_them() -> None:
    a, b = uuid4(), uuid4()
    contact = Contact.create(ALICE, pii={"phone": "+254712345678", "first_name": "Jane"}, tags=["vip"],
                             list_ids=[a], is_opted_out=False, directory_match=SAFARICOM, reservation_id=uuid4())
    contact.update(ALICE, {"email": "jane@example.com"}, {})
    contact.sync_lists(ALICE, [b])
    contact.untag(ALICE, ["vip"])
    contact.opt_out(ALICE)
    contact.trash(ALICE)
    contact.restore(ALICE)
    again = replayed(pending(contact))
    assert again.version == contact.version == 8
    for name in ("pii", "tags", "list_ids", "is_opted_out", "status", "operator", "country", "reservation_id",
                 "deleted_at", "is_purged"):
        assert getattr(again, name) == getattr(contact, name), name


# -- ContactImport -----------------------------------------------------------------------------------


def _entry(row: int, phone: str) -> dict[str, Any]:
    """A contact of an import batch, as the import service records it."""
    return {"id": uuid4(), "row": row, "pii": {"phone": phone}, "tags": ["imported"], "list_ids": [],
            "is_opted_out": False, "reservation_id": uuid4(), **SAFARICOM}


def new_import(list_id: UUID | None = None) -> ContactImport:
    job = ContactImport.start(ALICE, source="upload", filename="contacts.csv", list_id=list_id,
                              idempotency_key="key-1")
    pending(job)
    return job


def test_an_import_starts_running_with_every_count_at_zero() -> None:
    list_id = uuid4()
    job = ContactImport.start(ALICE, source="upload", filename="contacts.csv", list_id=list_id,
                              idempotency_key=None)
    [started] = pending(job)
    assert isinstance(started, ContactImport.Started) and started.filename == "contacts.csv"
    assert (job.status, job.list_id, job.last_row) == ("running", list_id, 0)
    assert job.counts == dict.fromkeys(IMPORT_COUNTS, 0)


def test_each_batch_records_the_running_counts_and_the_last_row_read() -> None:
    job = new_import()
    counts = {"read": 3, "imported": 2, "valid": 2, "invalid": 0, "skipped": 1}
    job.record_rows(ALICE, [_entry(1, "+254712000001"), _entry(3, "+254712000003")],
                    [{"row": 2, "reason": "duplicate", "contact_id": None}], last_row=3, counts=counts)
    [batch] = pending(job)
    assert isinstance(batch, ContactImport.Progressed)
    assert batch.skipped == [{"row": 2, "reason": "duplicate", "contact_id": None}]
    assert (job.counts, job.last_row, job.status) == (counts, 3, "running")


def test_a_batch_gives_each_imported_contact_its_created_event_in_row_order() -> None:
    job = new_import()
    first, second = _entry(1, "+254712000001"), _entry(2, "+254712000002")
    job.record_rows(BOB, [first, second], [], last_row=2, counts=dict.fromkeys(IMPORT_COUNTS, 0))
    [batch] = pending(job)
    created = batch.created_events()
    assert [e.originator_id for e in created] == [first["id"], second["id"]]
    assert {(e.originator_version, e.timestamp, e.account_id, e.actor) for e in created} == {
        (1, batch.timestamp, ACCOUNT, "bob")}
    assert batch.created_event(second["id"]).pii == {"phone": "+254712000002"}
    # The contact a batch created loads like one created alone, and its own stream goes on at version 2.
    contact = created[1].mutate(None)
    assert (contact.id, contact.phone, contact.tags, contact.operator) == (
        second["id"], "+254712000002", ["imported"], "Safaricom")
    contact.opt_out(ALICE)
    assert pending(contact)[0].originator_version == 2


def test_a_completed_import_records_its_final_counts() -> None:
    job = new_import()
    counts = {"read": 1, "imported": 1, "valid": 1, "invalid": 0, "skipped": 0}
    job.record_rows(ALICE, [_entry(1, "+254712000001")], [], last_row=1, counts=counts)
    job.complete(ALICE)
    events = pending(job)
    assert names(events) == ["Progressed", "Completed"]
    assert events[1].counts == counts and job.status == "completed"


def test_a_failed_import_records_the_reason_and_the_counts_stored_before_it() -> None:
    job = new_import()
    counts = {"read": 5, "imported": 5, "valid": 5, "invalid": 0, "skipped": 0}
    job.record_rows(ALICE, [_entry(i, f"+25471200000{i}") for i in range(1, 6)], [], last_row=5, counts=counts)
    job.fail(ALICE, "the file ends inside a quoted field")
    failed = pending(job)[-1]
    assert isinstance(failed, ContactImport.Failed)
    assert (failed.reason, failed.counts, job.status) == ("the file ends inside a quoted field", counts, "failed")


# -- BulkAction --------------------------------------------------------------------------------------


def new_bulk_action(matched: int = 25) -> BulkAction:
    job = BulkAction.start(ALICE, action="tag", params={"tags": ["vip"]}, matched=matched)
    pending(job)
    return job


def test_a_bulk_action_starts_queued_with_what_it_matched_and_nothing_done() -> None:
    job = BulkAction.start(ALICE, action="add_to_list", params={"list_id": "l-1"}, matched=25)
    [started] = pending(job)
    assert (started.action, started.params, started.matched) == ("add_to_list", {"list_id": "l-1"}, 25)
    assert (job.status, job.processed, job.changed, job.finished) == ("queued", 0, 0, False)


def test_bulk_action_progress_adds_up_each_step_into_running_totals() -> None:
    job = new_bulk_action()
    job.progress(ALICE, processed=10, changed=7)
    job.progress(ALICE, processed=10, changed=0)
    steps = pending(job)
    assert [(e.processed, e.changed) for e in steps] == [(10, 7), (20, 7)]
    assert (job.status, job.processed, job.changed, job.finished) == ("running", 20, 7, False)


def test_a_completed_bulk_action_records_its_totals_and_is_finished() -> None:
    job = new_bulk_action()
    job.progress(ALICE, processed=25, changed=24)
    job.complete(ALICE)
    completed = pending(job)[-1]
    assert isinstance(completed, BulkAction.Completed)
    assert (completed.processed, completed.changed, job.status, job.finished) == (25, 24, "completed", True)


def test_a_failed_bulk_action_records_the_reason_and_how_far_it_got() -> None:
    job = new_bulk_action()
    job.progress(ALICE, processed=10, changed=10)
    job.fail(ALICE, "the list was deleted")
    failed = pending(job)[-1]
    assert isinstance(failed, BulkAction.Failed)
    assert (failed.reason, failed.processed, failed.changed) == ("the list was deleted", 10, 10)
    assert (job.status, job.finished) == ("failed", True)


def test_a_bulk_action_replayed_from_its_events_equals_the_job_that_made_them() -> None:
    job = BulkAction.start(ALICE, action="opt_out", params={}, matched=3)
    job.progress(ALICE, processed=3, changed=2)
    job.complete(ALICE)
    again = replayed(pending(job))
    assert (again.action, again.matched, again.processed, again.changed, again.status) == (
        "opt_out", 3, 3, 2, "completed")

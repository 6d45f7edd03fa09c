"""Keyset cursors of GET /contacts (service/cursors.py, query/keyset.py): round trips and refusals. No I/O."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from uuid import UUID

import pytest

from command.errors import ValidationError
from query.contacts import ContactFilter
from query.keyset import SORT_KEYS, Position, Sort
from service.cursors import decode, encode

SECRET = b"unit-test-hash-key-0123456789abcdef"
LAST_ID = UUID("00000000-0000-4000-8000-00000000c001")
FILTERS = ContactFilter(search="Jane", tags=["vip", "lead"], is_opted_out=False)


def _position(sort: Sort) -> Position:
    if sort.is_time:
        return Position(datetime(2026, 12, 6, 5, 30, 1, 123456, tzinfo=UTC), LAST_ID)
    return Position("jane" if sort.field != "phone" else "+254712345678", LAST_ID)


@pytest.mark.parametrize("text", [prefix + field for field in SORT_KEYS for prefix in ("", "-")])
def test_a_cursor_gives_back_the_position_it_was_made_from_in_every_sort(text: str) -> None:
    sort = Sort.parse(text)
    cursor = encode(SECRET, FILTERS, sort, _position(sort))
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # URL-safe
    assert decode(SECRET, cursor, FILTERS, sort) == _position(sort)


def test_a_cursor_after_a_contact_without_a_name_keeps_the_missing_key() -> None:
    sort = Sort.parse("lastName")
    position = Position(None, LAST_ID)
    assert decode(SECRET, encode(SECRET, FILTERS, sort, position), FILTERS, sort) == position


def test_the_same_filters_written_differently_accept_the_cursor() -> None:
    sort = Sort.parse("-createdAt")
    cursor = encode(SECRET, FILTERS, sort, _position(sort))
    same = ContactFilter(search="  jane ", tags=["lead", "vip"], is_opted_out=False)  # case, spaces, tag order
    assert decode(SECRET, cursor, same, sort) == _position(sort)


@pytest.mark.parametrize("other", [ContactFilter(search="John", tags=["vip", "lead"], is_opted_out=False),
                                   ContactFilter(search="Jane", tags=["vip"], is_opted_out=False),
                                   ContactFilter(search="Jane", tags=["vip", "lead"], is_opted_out=True),
                                   ContactFilter(search="Jane", tags=["vip", "lead"], is_opted_out=False,
                                                 list_id=LAST_ID)])
def test_a_cursor_used_with_other_filters_is_refused_naming_the_cursor(other: ContactFilter) -> None:
    sort = Sort.parse("-createdAt")
    cursor = encode(SECRET, FILTERS, sort, _position(sort))
    with pytest.raises(ValidationError, match="made for other filters") as refused:
        decode(SECRET, cursor, other, sort)
    assert refused.value.field == "cursor"


def test_a_cursor_used_with_another_sort_is_refused_saying_which_sort_it_was_made_for() -> None:
    cursor = encode(SECRET, FILTERS, Sort.parse("firstName"), Position("jane", LAST_ID))
    with pytest.raises(ValidationError, match="made for sort=firstName, not sort=-firstName"):
        decode(SECRET, cursor, FILTERS, Sort.parse("-firstName"))


def _flip(cursor: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_a_forged_cut_or_foreign_cursor_is_refused_naming_the_cursor() -> None:
    sort = Sort.parse("phone")
    cursor = encode(SECRET, FILTERS, sort, _position(sort))
    forged = [_flip(cursor, 0), _flip(cursor, 10), _flip(cursor, -1), cursor[:-4], "", "not a cursor!",
              encode(b"another service's key", FILTERS, sort, _position(sort))]
    for bad in forged:
        with pytest.raises(ValidationError, match="not one this service gave out") as refused:
            decode(SECRET, bad, FILTERS, sort)
        assert refused.value.field == "cursor", bad


def test_a_sort_on_a_field_that_cannot_be_sorted_on_names_the_ones_that_can() -> None:
    with pytest.raises(ValueError, match="cannot sort on 'email': use one of createdAt, updatedAt, firstName"):
        Sort.parse("-email")
    assert (str(Sort.parse("-updatedAt")), Sort.parse("phone").descending) == ("-updatedAt", False)

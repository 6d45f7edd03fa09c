"""Request bodies clean their values as they are decoded (no I/O): what a handler hands to a command."""

from __future__ import annotations

import msgspec
import pytest

from command.errors import ValidationError
from service.schemas import (
    BulkSelection,
    BulkTagging,
    ContactCreate,
    ContactListCreate,
    ContactListUpdate,
    ContactUpdate,
)


def decode(body: bytes, type_: type) -> object:
    return msgspec.json.decode(body, type=type_)


def test_a_new_contact_is_trimmed_lower_cased_and_its_tags_deduplicated() -> None:
    body = decode(b'{"phone": "0712345678", "firstName": " Wanjiku ", "lastName": "  ", "email": " W@Example.COM ",'
                  b' "tags": [" VIP", "vip", " ", "Nairobi"], "notes": "", "region": "ke"}', ContactCreate)
    assert body.pii() == {"first_name": "Wanjiku", "last_name": None, "email": "w@example.com", "notes": None}
    assert (body.tags, body.region) == (["vip", "nairobi"], "KE")


def test_an_update_carries_only_the_fields_sent_and_null_clears() -> None:
    body = decode(b'{"lastName": " Doe ", "email": null, "tags": ["A", "a"]}', ContactUpdate)
    assert body.pii() == {"last_name": "Doe", "email": None}
    assert body.changes() == {"tags": ["a"]}
    assert (body.sent("region"), body.sent("list_ids"), body.sent("is_opted_out")) == (None, None, None)
    assert decode(b"{}", ContactUpdate).pii() == {} and decode(b"{}", ContactUpdate).changes() == {}


def test_an_update_passes_the_phone_on_for_the_command_to_parse() -> None:
    body = decode(b'{"phone": "0712 345 678", "region": "ng", "isOptedOut": false}', ContactUpdate)
    assert body.pii() == {"phone": "0712 345 678"}
    assert (body.sent("region"), body.sent("is_opted_out")) == ("NG", False)


@pytest.mark.parametrize(("body", "type_", "field"), [
    (b'{"phone": "1", "email": "not-an-email"}', ContactCreate, "email"),
    (b'{"phone": "1", "region": "QQ"}', ContactCreate, "region"),
    (b'{"email": "a b@c.de"}', ContactUpdate, "email"),
    (b'{"region": "qq"}', ContactUpdate, "region"),
    (b'{"name": "   "}', ContactListCreate, "name"),
    (b'{"name": " "}', ContactListUpdate, "name"),
])
def test_a_refused_value_is_the_validation_error_naming_its_field(body: bytes, type_: type, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        decode(body, type_)
    assert refused.value.field == field and refused.value.message.startswith(field)


def test_a_list_update_names_only_what_was_sent() -> None:
    assert decode(b'{"description": "  "}', ContactListUpdate).changes() == {"description": None}
    assert decode(b'{"name": " VIP "}', ContactListUpdate).changes() == {"name": "VIP"}
    assert decode(b'{"name": " VIP ", "description": " x "}', ContactListCreate).description == "x"


def test_bulk_bodies_clean_their_tags_and_filter() -> None:
    tagging = decode(b'{"tags": [" VIP", "vip"], "filter": {"tags": ["Nairobi "], "search": "  "}}', BulkTagging)
    assert tagging.tags == ["vip"]
    assert tagging.filter is not None and (tagging.filter.tags, tagging.filter.search) == (["nairobi"], None)
    assert decode(b'{"filter": {"all": true}}', BulkSelection).filter.tags is None

"""Request bodies (msgspec Structs): camelCase, unknown fields rejected, values cleaned as they are decoded.

``ContactUpdate`` and ``ContactListUpdate`` use ``UNSET`` so a field that is not sent
stays as it is, while an explicit ``null`` clears it. Each body cleans its values in
``__post_init__`` (service/cleaning.py: trimmed text, lower-cased emails and tags, region
codes), so a handler hands on what it decoded and a refused value is a 422 like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

import re

import msgspec
from msgspec import UNSET, Meta, UnsetType

from command.field_limits import (
    MAX_EMAIL_CHARS, MAX_NAME_CHARS, MAX_NOTES_CHARS, MAX_PHONE_CHARS, MAX_TAG_CHARS, MAX_TAGS,
)
from command.imports.cells import TAG_SEPARATOR_CHARS
from events.contract import camel
from service.cleaning import clean_email, clean_name, clean_region, clean_tags, clean_text

# PostgreSQL text cannot hold NUL: refuse it at the door (422), or the stored event could never
# be projected and every later write would wait on it.
NO_NUL = r"^[^\x00]*$"
# A UUID in a query string, in its canonical written form only: Python's UUID() also takes
# 32 bare hex digits, so "13678993411632979070974370512896" would pass for a list id.
UUID_TEXT = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# An If-Match header: one ETag as GET returns it (W/ tolerated) or "*" (service/etags.py).
IF_MATCH_PATTERN = r'^ *(\*|(W/)?"[0-9]{1,9}") *$'
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, Meta(max_length=2000, pattern=NO_NUL)]
ShortText = Annotated[str, Meta(max_length=MAX_NAME_CHARS, pattern=NO_NUL)]
Notes = Annotated[str, Meta(max_length=MAX_NOTES_CHARS, pattern=NO_NUL)]
Email = Annotated[str, Meta(max_length=MAX_EMAIL_CHARS, pattern=NO_NUL)]
PhoneText = Annotated[str, Meta(max_length=MAX_PHONE_CHARS, pattern=NO_NUL)]
# A tag holds no "," or ";": the tags filter separates tags with commas, and the CSV export
# joins them with ";" (which imports split again), so such a tag could never be found or round-trip.
TAG_TEXT = r"^[^\x00" + TAG_SEPARATOR_CHARS + "]*$"
Tag = Annotated[str, Meta(max_length=MAX_TAG_CHARS, pattern=TAG_TEXT)]
Region = Annotated[str, Meta(min_length=2, max_length=2, pattern=NO_NUL)]
Ids = Annotated[list[UUID], Meta(max_length=10_000)]


class In(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Base of every request body."""


def _cleaned(clean: Callable[[Any], Any], value: Any) -> Any:
    """``clean(value)``, or ``UNSET`` for a field that was not sent.

    A refusal is the cleaner's ``command.errors.ValidationError``: msgspec lets it through
    (it wraps only ValueError and TypeError), so the answer is the 422 naming the field that
    a command's refusal gets (service/error_handlers.py), not msgspec's own wording.
    """
    return UNSET if value is UNSET else clean(value)


class ContactListCreate(In):
    name: Name
    description: Description | None = None

    def __post_init__(self) -> None:
        self.name = clean_name(self.name)
        self.description = clean_text(self.description)


class ContactListUpdate(In):
    name: Name | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        self.name = _cleaned(clean_name, self.name)
        self.description = clean_text(self.description)

    def changes(self) -> dict[str, Any]:
        """The fields sent, by their names in the list's events."""
        return {field: getattr(self, field) for field in ("name", "description") if getattr(self, field) is not UNSET}


class IdList(In):
    ids: Ids


class BulkFilter(In):
    """The contacts a select-all action applies to: the filters of GET /contacts, or ``all``."""

    list_id: Annotated[UUID | None, Meta(description="Only contacts in this list",
                                         examples=["0b6f2c1e-5a4d-4e3f-8c2b-1a9d8e7f6c5b"])] = None
    tags: Annotated[Annotated[list[Tag], Meta(max_length=MAX_TAGS)] | None, Meta(
        description="Only contacts with all these tags", examples=[["vip"]])] = None
    is_opted_out: Annotated[bool | None, Meta(description="Only opted-out (true) or messageable (false) contacts",
                                              examples=[False])] = None
    search: Annotated[ShortText | None, Meta(description=(
        "As GET /contacts search: a substring of a name or of the phone's digits"), examples=["wanjiku"])] = None
    all: Annotated[bool, Meta(description=(
        "true: every active contact of the account. An empty filter is refused (422) rather than read as"
        " 'everything'; a filter with other fields needs no `all`"), examples=[True])] = False

    def __post_init__(self) -> None:
        self.search = clean_text(self.search)
        self.tags = clean_tags(self.tags) if self.tags is not None else None


_IDS_OR_FILTER = ("Exactly one of ids and filter: the contacts by id (up to 10,000), or every active contact"
                  " matching the filter when the request arrives")
FilterField = Annotated[BulkFilter | None, Meta(description=_IDS_OR_FILTER, examples=[{"tags": ["vip"]}])]


class BulkSelection(In):
    ids: Annotated[Ids | None, Meta(description=_IDS_OR_FILTER,
                                    examples=[["3c2b1a0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9"]])] = None
    filter: FilterField = None


class ContactIds(In):
    contact_ids: Annotated[Ids | None, Meta(description=_IDS_OR_FILTER,
                                            examples=[["3c2b1a0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9"]])] = None
    filter: FilterField = None


class BulkTagging(BulkSelection, kw_only=True):
    tags: Annotated[list[Tag], Meta(min_length=1, max_length=MAX_TAGS, description="Tags to add or remove",
                                    examples=[["vip", "nairobi"]])]

    def __post_init__(self) -> None:
        self.tags = clean_tags(self.tags)


class ContactCreate(In):
    phone: PhoneText
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    email: Email | None = None
    tags: Annotated[list[Tag], Meta(max_length=MAX_TAGS)] = []
    notes: Notes | None = None
    list_ids: Annotated[list[UUID], Meta(max_length=1000)] = []
    is_opted_out: bool = False
    region: Region | None = None

    def __post_init__(self) -> None:
        self.region = clean_region(self.region)
        self.first_name, self.last_name = clean_text(self.first_name), clean_text(self.last_name)
        self.email = clean_email(self.email)
        self.notes = clean_text(self.notes)
        self.tags = clean_tags(self.tags)

    def pii(self) -> dict[str, str | None]:
        """The personal fields, which the command seals per contact."""
        return {"first_name": self.first_name, "last_name": self.last_name, "email": self.email, "notes": self.notes}


class ContactUpdate(In):
    phone: PhoneText | UnsetType = UNSET
    first_name: ShortText | None | UnsetType = UNSET
    last_name: ShortText | None | UnsetType = UNSET
    email: Email | None | UnsetType = UNSET
    tags: Annotated[list[Tag], Meta(max_length=MAX_TAGS)] | UnsetType = UNSET
    notes: Notes | None | UnsetType = UNSET
    list_ids: Annotated[list[UUID], Meta(max_length=1000)] | UnsetType = UNSET
    is_opted_out: bool | UnsetType = UNSET
    region: Region | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        # clean_text passes non-strings through: None clears a field, UNSET leaves it as it is.
        self.first_name, self.last_name = clean_text(self.first_name), clean_text(self.last_name)
        self.notes = clean_text(self.notes)
        self.email = _cleaned(clean_email, self.email)
        self.tags = _cleaned(clean_tags, self.tags)
        self.region = _cleaned(clean_region, self.region)

    def pii(self) -> dict[str, Any]:
        """The personal fields sent (and the phone, which the command parses), by their names in the events."""
        return {field: getattr(self, field) for field in ("first_name", "last_name", "notes", "email", "phone")
                if getattr(self, field) is not UNSET}

    def changes(self) -> dict[str, Any]:
        """The other fields the contact's update event carries: the tags, if sent."""
        return {} if self.tags is UNSET else {"tags": self.tags}

    def sent(self, field: str) -> Any:
        """The value of ``field``, or None if it was not sent (the command's 'leave it as it is')."""
        value = getattr(self, field)
        return None if value is UNSET else value


class Added(msgspec.Struct):
    added: int


class Removed(msgspec.Struct):
    removed: int


class Deleted(msgspec.Struct):
    deleted: int


class Tagged(msgspec.Struct):
    tagged: Annotated[int, Meta(description="Contacts that gained at least one of the tags", examples=[42])]


class Untagged(msgspec.Struct):
    untagged: Annotated[int, Meta(description="Contacts that lost at least one of the tags", examples=[42])]


class OptedOutCount(msgspec.Struct, rename="camel"):
    opted_out: Annotated[int, Meta(description="Contacts opted out by this request (not those already)",
                                   examples=[42])]


class OptedInCount(msgspec.Struct, rename="camel"):
    opted_in: Annotated[int, Meta(description="Contacts opted back in by this request", examples=[42])]


class Restored(msgspec.Struct):
    restored: int


class Purged(msgspec.Struct):
    purged: int


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    field: str | None
    reason: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    status: int
    error: str
    message: str
    errors: list[ErrorDetail] = []


_FIELD = re.compile(r"(?:at `\$\.|field `)([A-Za-z0-9_]+)")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)


def explain(reason: str) -> str:
    """A validation message in the user's words where msgspec's names a pattern."""
    return (reason.replace(f"Expected `str` matching regex {NO_NUL!r}", "must not contain NUL (\\u0000) characters")
            .replace(f"Expected `str` matching regex {TAG_TEXT!r}",
                     "a tag must not contain ',' or ';' (they separate tags) or NUL (\\u0000) characters")
            .replace(f"Expected `str` matching regex {IF_MATCH_PATTERN!r}",
                     'must be one ETag as GET returned it, such as "3", or *'))


def field_of(message: str, fallback: str | None = None) -> str | None:
    """The field a msgspec/Litestar validation message names, camelCased as the client sent it."""
    unknown = _UNKNOWN_FIELD.fullmatch(message)
    if unknown and "` - at `$" not in unknown.group(1):
        return unknown.group(1)  # a top-level field the body should not have, named exactly as sent
    match = _FIELD.search(message)
    name = match.group(1) if match else fallback
    return camel(name) if name else name

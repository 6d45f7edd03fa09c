"""Response shapes (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec


class Out(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every response body: camelCase field names."""


class ContactListOut(Out):
    id: UUID
    name: str
    description: str | None
    contact_count: int
    created_at: datetime
    updated_at: datetime


class ContactOut(Out):
    id: UUID
    first_name: str | None
    last_name: str | None
    phone: str
    email: str | None
    tags: list[str]
    notes: str | None
    is_opted_out: bool
    status: str
    invalid_reason: str | None
    operator: str | None
    country: str | None
    list_ids: list[UUID]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


#: The contact's shape, written once (``ContactOut``): each field is the ``contacts`` read
#: table's column of the same name (``name``), sent as ``encode_name`` (camelCase), of type
#: ``type``, in the documented order. The list queries, the export SQL (JSON and CSV), the
#: projector's column lists and the audit's past states are built from it.
CONTACT_FIELDS: tuple[msgspec.structs.FieldInfo, ...] = msgspec.structs.fields(ContactOut)


class ContactPage(Out):
    contacts: list[ContactOut]
    total: int
    page: Annotated[int | None, msgspec.Meta(description=(
        "The page number asked for (1 when neither page nor cursor was sent); null on a page read by cursor,"
        " whose number is not known"), examples=[1])]
    page_size: int
    next_cursor: Annotated[str | None, msgspec.Meta(description=(
        "Opaque cursor of the next page, in the same sort and filters: send it as `cursor` (the `Link: rel=next`"
        " header carries the whole URL); null on the last page"),
        examples=["AZSrLWNyZWF0ZWRBdMQI3q2-7wAAAAC7MjAyNi0xMi0wNlQwMzoxMjozNC4xMjM0NTYrMDA6MDA"])] = None

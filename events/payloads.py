"""What each published event's ``data`` holds: one msgspec Struct per event type.

They are the documented contract (``events/asyncapi.py`` builds the AsyncAPI schemas from
them) and the encoders too: ``events/contract.py`` builds every message's ``data`` as one
of these, so a field the documents do not name cannot be published.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec


class Data(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every event's ``data``."""


class Empty(Data):
    """An empty object: the event's type is the whole news."""


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
    rows: int
    imported: int
    valid: int
    invalid: int
    skipped: int
    read: int  # the v1 name of rows, kept beside it until a v2 type (docs/events.md)


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


class BulkStarted(Data):
    """A select-all bulk action was queued as a job: its action, parameters and how many contacts matched."""

    action: str
    params: dict[str, Any]
    matched: int


class BulkProgress(Data):
    """How many of the matched contacts the bulk job has processed, and how many of those it changed."""

    processed: int
    changed: int


class BulkFailed(Data):
    """The bulk job stopped: what it had done, and why."""

    processed: int
    changed: int
    reason: str

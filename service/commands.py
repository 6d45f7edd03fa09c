"""How HTTP handlers run a command: on the write side, then wait for the projections."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

import phonenumbers
import psycopg
import psycopg_pool

from command.errors import DomainError, ValidationError
from command.domain import is_email
from command.import_files import TAG_SEPARATORS
from service.bootstrap import Container

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoredNotConfirmedError(DomainError):
    """The events are stored, but the read tables could not be brought up to them."""

    code = "stored_not_confirmed"


def execute(container: Container, use_case: Callable[..., tuple[T, int]], *args: Any, **kwargs: Any) -> T:
    """Run a use case and return once the read tables show its events (read-your-writes)."""
    result, position = use_case(*args, **kwargs)
    if position:
        try:
            container.runner.catch_up(until=position)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:  # the connection, not the SQL
            log.warning("stored at %s, but the read tables could not catch up: %s: %s", position,
                        type(exc).__name__, exc)
            # A plain 503 here told the client nothing was done, and a retry made a second list.
            extra: dict[str, Any] = {"stored": True}
            if isinstance(result, UUID):  # a create: the client can find what it made
                extra["id"] = str(result)
            raise StoredNotConfirmedError(
                "the change was stored, but the database went away before the read tables showed it: do not"
                " send it again; it will be visible once the database is back", extra=extra) from exc
    return result


def clean_text(value: Any) -> Any:
    """Trim strings; an empty string means 'no value'."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def clean_email(value: str | None) -> str | None:
    value = clean_text(value)
    if value is not None and not is_email(value):
        raise ValidationError(f"email {value!r} is not a valid address", field="email")
    return value.lower() if value else value


def clean_tags(tags: list[str]) -> list[str]:
    """Tags are trimmed, lower-cased and de-duplicated, keeping their first order."""
    return list(dict.fromkeys(t.strip().lower() for t in tags if t and t.strip()))


def clean_region(value: str | None, field: str = "region") -> str | None:
    """A region code phonenumbers knows (ISO 3166-1 alpha-2, any case), upper-cased; None if not sent.

    Checked up front: an unknown region would otherwise only surface as every
    national-format number failing to parse (skipped rows, or a misleading invalid_phone).
    """
    value = clean_text(value)
    if value is None:
        return None
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationError(f"region {value!r} is not a region code (ISO 3166-1 alpha-2, such as KE or NG)",
                              field=field)
    return value.upper()


def split_tags(tags: list[str]) -> list[str]:
    """Tags of an import: a value holding ``,`` or ``;`` is several tags, as in a file's tags cell."""
    return [part for tag in tags for part in TAG_SEPARATORS.split(tag)]

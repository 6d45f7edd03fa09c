"""Cleaning of request values before they reach a command: trimmed text, names, emails, tags, regions."""

from __future__ import annotations

from typing import Any

import phonenumbers

from command.domain import is_email
from command.errors import ValidationError
from command.imports.cells import TAG_SEPARATORS


def clean_text(value: Any) -> Any:
    """Trim strings; an empty string means 'no value'."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def clean_name(value: str) -> str:
    """A list's name, trimmed; an empty one is refused."""
    cleaned = clean_text(value)
    if not cleaned:
        raise ValidationError("name must not be empty", field="name")
    return cleaned


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

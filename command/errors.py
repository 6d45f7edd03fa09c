"""Domain errors, defined once; the HTTP layer maps each to a status code."""

from __future__ import annotations

from typing import Any

import eventsourcing.persistence
import psycopg
import psycopg_pool

# What the store raises when PostgreSQL is away, restarting, full or out of connections:
# nothing about the request is wrong, and the same request may succeed shortly (503).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError, psycopg_pool.PoolTimeout,
    eventsourcing.persistence.OperationalError, eventsourcing.persistence.InterfaceError)


class DomainError(Exception):
    """Base of every error a command can raise on purpose."""

    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}


class NotFoundError(DomainError):
    code = "not_found"


class ValidationError(DomainError):
    code = "validation_failed"


class InvalidPhoneError(ValidationError):
    code = "invalid_phone"


class UnknownListsError(ValidationError):
    code = "unknown_lists"


class PhoneTakenError(DomainError):
    """Another contact of the account already holds this number."""

    code = "phone_taken"


class PreconditionFailedError(DomainError):
    """The client edited a version of the aggregate that is no longer the current one (412)."""

    code = "precondition_failed"

    def __init__(self, message: str, *, current_version: int, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.current_version = current_version


class ConcurrencyError(DomainError):
    """The aggregate changed under us too many times in a row."""

    code = "concurrent_modification"

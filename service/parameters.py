"""The query parameters controllers share (filters, sort, paging), declared once with their documentation."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar.openapi.spec import Example
from litestar.params import Parameter

from query.keyset import SORT_KEYS
from service.schemas import NO_NUL, UUID_TEXT

# The filters of GET /contacts, declared once: the exports take the same ones, so users
# export exactly what they see. Plain parameters, not a dependency: resolving one cost
# GET /contacts 0.12 ms a request (interleaved A/B, 2,800 requests each).
SearchParam = Annotated[str | None, Parameter(max_length=200, pattern=NO_NUL, description=(
    "Case-insensitive substring of first name, last name or full name; a term that reads as a phone number"
    " (digits with spaces, +, -, ., parentheses; at least 3 digits) also matches the phone's digits"))]
ListIdParam = Annotated[str | None, Parameter(query="listId", pattern=UUID_TEXT, schema_extra={"format": "uuid"},
                                              description="Only contacts in this list")]
OptedOutParam = Annotated[bool | None, Parameter(query="isOptedOut")]
TagsParam = Annotated[str | None, Parameter(max_length=2000, pattern=NO_NUL, description=(
    "Comma-separated tags; a contact must have all of them"))]
SORTS = tuple(f"{sign}{field}" for field in SORT_KEYS for sign in ("", "-"))
SortParam = Annotated[Literal[SORTS], Parameter(description=(
    "Sort order: createdAt, updatedAt, firstName, lastName or phone, ascending; with a leading - descending."
    " Ties go by id; names sort case-insensitively, and contacts without one come last either way."
    " Default -createdAt (newest first)"), examples=[Example(summary="by last name, A to Z", value="lastName")])]
CursorParam = Annotated[str | None, Parameter(max_length=512, pattern=r"^[A-Za-z0-9_-]+$", description=(
    "The `nextCursor` of the previous page: the page after it, in the same sort and filters (another sort or"
    " other filters, or an altered cursor, are a 422 naming cursor). Stable while contacts are added or removed;"
    " a deep page costs what the first does. Not with `page`"),
    examples=[Example(summary="a nextCursor as returned (valid only for the account and page it came from)",
                      value="AZSrLWNyZWF0ZWRBdMQI3q2-7wAAAAC7MjAyNi0xMi0wNlQwMzoxMjozNC4xMjM0NTYrMDA6MDA")])]
PageParam = Annotated[int | None, Parameter(ge=1, le=1_000_000, description=(
    "Page number, from 1 (default 1): offset paging. Not with `cursor` (422)"))]
PageSizeParam = Annotated[int, Parameter(query="pageSize", ge=1, le=100,
                                         description="Items per page (max 100; more is a 422)")]

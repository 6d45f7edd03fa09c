"""ETags and If-Match: a contact's or list's aggregate version on the wire (safe concurrent edits).

The ETag is the aggregate's version as a strong entity tag, ``"7"``: the version of
the stored state, which every event of the contact or list increments. ``If-Match``
takes one such tag (``W/"7"`` is read as ``"7"``) or ``*``; the use case compares it with
the version it loads, so the check and the write cannot race (eventsourcing refuses
the save if another writer stored an event in between, and the retry then sees the
new version and answers 412).
"""

from __future__ import annotations

import re
from typing import Annotated

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example
from litestar.params import Parameter

from command.errors import ValidationError
from service.schemas import IF_MATCH_PATTERN

_TAG = re.compile(r'^(?:W/)?"([0-9]{1,9})"$')

# Typed ``str`` with the default ``*`` (what no If-Match means here: any version), not ``str | None``:
# the document would then allow a JSON null, which a header cannot carry (schemathesis sent "null").
IfMatchHeader = Annotated[str, Parameter(
    header="If-Match", required=False, max_length=100, pattern=IF_MATCH_PATTERN,
    description=('Apply the change only if the resource is still at this version: the `ETag` of your last GET'
                 ' (or of the last write\'s answer), e.g. `"3"`; `*` matches any version. A stale ETag answers'
                 " 412 `precondition_failed` naming the current one. Without If-Match (or with `*`) the change"
                 " is made whatever the version."),
    examples=[Example(summary="the ETag read before", value='"3"')])]
ETAG_HEADER = ResponseHeader(name="ETag", documentation_only=True, description=(
    'The version of the contact or list, e.g. `"3"`: send it back in `If-Match` to change or delete it only if'
    " nobody changed it since"), example='"3"',
    value='"3"')  # documentation only: the value gives the header its schema (a string), which OpenAPI 3.1 requires


def etag(version: int) -> str:
    """The strong entity tag of an aggregate version."""
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version an ``If-Match`` header asks for; None when absent or ``*`` (any version)."""
    if if_match is None or if_match.strip() == "*":
        return None
    found = _TAG.match(if_match.strip())
    if found is None:
        raise ValidationError(f"If-Match must be one ETag as GET returned it, such as \"3\", or *; got {if_match!r}",
                              field="If-Match")
    return int(found.group(1))

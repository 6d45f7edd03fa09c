"""What the OpenAPI document cannot infer from the handlers: their error answers and hand-read bodies.

Every error body has the one ``ErrorBody`` shape (``service.app`` maps each error to it),
so clients and the schemathesis fuzz test (``tests/test_fuzz.py``) can rely on each
documented status code and its body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.typing import FieldDefinition

from service.schemas import ErrorBody

REASONS = {
    400: "`malformed_body`: the body is not valid JSON",
    401: "`unauthorized`: the bearer token is missing, malformed, expired or wrongly signed",
    404: "`not_found`: no such resource in this account (also another account's ids)",
    409: "`phone_taken` (with `contactId`), `concurrent_modification` or `import_in_progress`",
    412: "`precondition_failed`: `If-Match` names a version that is no longer current; `currentEtag` (and the"
         " `ETag` header) name the current one",
    413: "`payload_too_large`: the body is larger than this endpoint accepts",
    415: "`unsupported_file`: the upload is not a CSV or XLSX file",
    422: "`validation_failed`, `invalid_phone`, `unknown_lists` (with `unknownListIds`) or"
         " `idempotency_key_reused` (imports: with `importId`); `errors` names each field at fault, or each"
         " unknown query parameter",
    429: "`too_many_requests`: the account's write rate limit; retry after `Retry-After` seconds",
    502: "`mail_delivery_failed`: the mail provider refused the message or could not be reached",
    503: "`database_unavailable` (retry after `Retry-After` seconds; nothing was written) or"
         " `mail_not_configured`",
}
# Every /api/v1 operation: a bad token, an unknown query parameter, or PostgreSQL unreachable.
AUTHENTICATED = (401, 422, 503)
WRITE = (413, 429)  # every write: the body limit and the per-account rate limit


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The documented error answers of an authenticated operation: ``codes`` plus 401, 422 and 503."""
    return {code: ResponseSpec(data_container=ErrorBody, description=REASONS[code], generate_examples=False)
            for code in sorted({*AUTHENTICATED, *codes})}


def struct_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema msgspec decodes ``struct`` by (a flat struct: no nested definitions)."""
    document = msgspec.json.schema(struct)
    return document["$defs"][struct.__name__]


def with_request_body(media_type: str, schema: Schema | dict[str, Any], description: str) -> type[Operation]:
    """An Operation class documenting a body the handler reads itself (streamed, not decoded by Litestar)."""

    @dataclass
    class OperationWithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(content={media_type: OpenAPIMediaType(schema=schema)},
                                            description=description, required=True)

    return OperationWithBody


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Request structs that refuse unknown fields say so: ``additionalProperties: false``.

    Litestar's own Struct plugin (a private module, hence this subclass) leaves it out, so the
    document promised that extra fields were accepted while the service answers them 422.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return super().is_plugin_supported_field(field_definition) and \
            msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema

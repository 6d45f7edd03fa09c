"""What the OpenAPI document cannot infer from the handlers: hand-read bodies and closed request structs.

The error answers, headers, words and examples are written by ``service.api_docs``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.typing import FieldDefinition


DOCS_ASSETS = "/schema/assets"


def swagger_ui() -> tuple[SwaggerRenderPlugin, Router]:
    """The Swagger UI page and its files, served from the pinned ``swagger-ui-py`` package: no CDN, no network.

    Litestar's default page loads its scripts from a CDN, so without internet the docs were a
    blank page. The package is found without importing it (its Python side is not used).
    """
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None and spec.origin is not None, "swagger-ui-py is a dependency (pyproject.toml)"
    static = Path(spec.origin).parent / "static"
    page = SwaggerRenderPlugin(
        path="/swagger", js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>")
    files = create_static_files_router(path=DOCS_ASSETS, directories=[static], include_in_schema=False,
                                       cache_control=CacheControlHeader(max_age=86400))
    return page, files


def located(path: str, attribute: str = "id") -> Callable[[Response], Awaitable[Response]]:
    """An ``after_request`` hook: a 201 answer names what it created in ``Location`` (``path`` with its id)."""

    async def locate(response: Response) -> Response:  # a coroutine: no thread hop (echo_request_id)
        if response.status_code == 201:
            response.headers["Location"] = path.format(getattr(response.content, attribute))
        return response

    return locate


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


def documented_body(struct: type[msgspec.Struct]) -> dict[str, Provide]:
    """Route dependencies documenting ``struct`` as the JSON body of a handler that reads the body itself.

    Litestar documents the ``data`` of a handler or of any of its route's dependencies (the request
    body, its schema, the components it names), but it decodes the body only for what the handler
    asks for. The handler never asks for this dependency, so it never runs: the document is exactly
    that of a body Litestar decodes, and nothing but the handler reads the body.
    """

    def body(data: Any) -> None:
        raise AssertionError("documented_body is documentation only: no handler may ask for it")

    body.__annotations__ = {"data": struct, "return": None}  # the struct itself, not a name to resolve
    return {"documented_body": Provide(body, sync_to_thread=False)}


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

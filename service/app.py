"""The app factory: the Litestar application built from its routes, middleware, error handlers and docs."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Router, get
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from events.asyncapi import document as asyncapi_document
from service import logs
from service.auth import JWTAuthMiddleware, TokenVerifier, echo_request_id
from service.bodies import StrictJSONRequest
from service.bootstrap import Container
from service.api_docs import finish as finish_openapi
from service.bulk import BulkController
from service.controllers import ContactController, ContactListController
from service.error_handlers import EXCEPTION_HANDLERS
from service.exports import ExportController
from service.health import health, ready_route
from service.imports import ImportController
from service.metrics import Metrics, metrics_route
from service.openapi import ClosedStructSchemaPlugin, swagger_ui
from service.query_params import KnownQueryParameters
from service.ratelimit import rate_limit_middleware

API_DESCRIPTION = (
    "Contacts and contact lists of an SMS campaign platform. Every `/api/v1` request needs"
    " `Authorization: Bearer <token>`; the token's `account_id` is the account, and another account's ids"
    " answer 404. Bodies are camelCase JSON and unknown fields are refused; phones are answered in E.164,"
    " times in RFC 3339 UTC. Every error has the `ErrorBody` shape, and each operation lists the `error`"
    " codes it can answer with when. A write answers once the read tables show it. Every change is also"
    " published to NATS as a CloudEvent: see `/asyncapi.json`.")
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema", "^/asyncapi.json$"]


def create_app(container: Container, nats_url: str = "") -> Litestar:
    """Build the HTTP app around a Container (the composition root's product)."""
    metrics = Metrics(container)
    settings = container.settings
    middleware: list[Any] = [logs.request_context_middleware, metrics.middleware,
                             DefineMiddleware(JWTAuthMiddleware, verifier=TokenVerifier(settings),
                                              exclude=PUBLIC_PATHS)]
    if settings.rate_limit_writes_per_minute > 0:
        middleware.append(rate_limit_middleware(settings.rate_limit_writes_per_minute, settings.rate_limit_burst))

    @get("/asyncapi.json", operation_id="getAsyncApi", tags=["operations"], sync_to_thread=False)
    def asyncapi() -> dict[str, Any]:
        """The AsyncAPI 3.0 document of the events published to NATS and the inbound SMS consumed."""
        return asyncapi_document(settings.nats_subject_prefix, settings.nats_stream, settings.inbound_subject)

    docs_page, docs_files = swagger_ui()
    openapi = OpenAPIConfig(
        title="Contacts service", version="1.0.0", path="/schema",
        description=API_DESCRIPTION,
        render_plugins=[docs_page], create_examples=False,
        components=Components(security_schemes={"bearer": SecurityScheme(
            type="http", scheme="bearer", bearer_format="JWT")}),
    )
    # The bearer requirement is documented on the API routes only: the operations routes are public.
    api = Router("/", security=[{"bearer": []}],
                 route_handlers=[ContactListController, ContactController, ExportController, ImportController,
                                 BulkController])
    return Litestar(
        route_handlers=[api, health, ready_route(container, nats_url), metrics_route(metrics), asyncapi,
                        docs_files],
        dependencies={"container": Provide(lambda: container, sync_to_thread=False, use_cache=True)},
        middleware=middleware,
        before_send=[echo_request_id],
        before_request=KnownQueryParameters().check,
        request_max_body_size=settings.request_max_bytes,
        request_class=StrictJSONRequest,  # JSON bodies decoded strictly into their types (service/bodies.py)
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        on_startup=[_finish_openapi],
        plugins=[ClosedStructSchemaPlugin()],
        logging_config=None,  # Litestar's default adds its own handlers and format: one format (service/logs.py)
        debug=False,
    )


def _finish_openapi(app: Litestar) -> None:
    """Complete the generated OpenAPI document once, in place: every docs page and /schema/openapi.json serve it."""
    finish_openapi(app.plugins.get(OpenAPIPlugin).provide_openapi_schema())

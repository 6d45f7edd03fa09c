"""The Litestar application: routes, auth, error mapping, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any

import eventsourcing.persistence
import msgspec
import psycopg
import psycopg_pool
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from python_multipart.exceptions import MultipartParseError

from command.errors import DomainError, PreconditionFailedError
from command.imports.service import ImportFailedError
from events.asyncapi import document as asyncapi_document
from service import logs
from service.auth import JWTAuthMiddleware, TokenVerifier, echo_request_id
from service.bootstrap import Container
from service.etags import etag
from service.api_docs import finish as finish_openapi
from service.bulk import BulkController
from service.controllers import ContactController, ContactListController
from service.dbpool import check_after_outage
from service.errors import status_of
from service.exports import ExportController
from service.imports import ImportController
from service.openapi import ClosedStructSchemaPlugin, swagger_ui
from service.query_params import KnownQueryParameters
from service.ratelimit import rate_limit_middleware
from service.schemas import ErrorBody, ErrorDetail, explain, field_of

log = logging.getLogger(__name__)
API_DESCRIPTION = (
    "Contacts and contact lists of an SMS campaign platform. Every `/api/v1` request needs"
    " `Authorization: Bearer <token>`; the token's `account_id` is the account, and another account's ids"
    " answer 404. Bodies are camelCase JSON and unknown fields are refused; phones are answered in E.164,"
    " times in RFC 3339 UTC. Every error has the `ErrorBody` shape, and each operation lists the `error`"
    " codes it can answer with when. A write answers once the read tables show it. Every change is also"
    " published to NATS as a CloudEvent: see `/asyncapi.json`.")
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema", "^/asyncapi.json$"]


def _error(status: int, code: str, message: str, errors: list[ErrorDetail] | None = None,
           headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    return Response(ErrorBody(status=status, error=code, message=message, errors=errors or []),
                    status_code=status, media_type=MediaType.JSON, headers=headers)


def domain_error(_: Request, exc: DomainError) -> Response[Any]:
    """A domain error as the ErrorBody, with the status ``service.errors`` gives its class."""
    status = status_of(exc)
    body = ErrorBody(status=status, error=exc.code, message=exc.message,
                     errors=[ErrorDetail(field=exc.field, reason=exc.message)] if exc.field is not None else [])
    payload = msgspec.to_builtins(body)
    payload.update(exc.extra)
    return Response(payload, status_code=status, media_type=MediaType.JSON)


def precondition_failed(_: Request, exc: PreconditionFailedError) -> Response[Any]:
    """A stale If-Match: 412 naming the current ETag (in the body and as the ``ETag`` header)."""
    current = etag(exc.current_version)
    message = f"{exc.message}; the current ETag is {current}: read it again and reapply your change"
    payload = msgspec.to_builtins(ErrorBody(status=412, error=exc.code, message=message,
                                            errors=[ErrorDetail(field="If-Match", reason=message)]))
    payload["currentEtag"] = current
    return Response(payload, status_code=412, media_type=MediaType.JSON, headers={"ETag": current})


def import_failed(request: Request, exc: ImportFailedError) -> Response[Any]:
    """An import that stopped part-way says why and exactly what it had stored."""
    cause = exc.cause
    status = status_of(cause) if isinstance(cause, DomainError) else 500
    if status >= 500:
        log.error("import %s failed: %s", exc.job.id, cause, exc_info=cause)
    counts = exc.job.counts
    message = cause.message if isinstance(cause, DomainError) else "the import failed part-way"
    return Response({"status": status, "error": "import_failed", "message": message,
                     "importId": str(exc.job.id), "imported": counts["imported"], "valid": counts["valid"],
                     "invalid": counts["invalid"], "skipped": counts["skipped"], "rows": counts["read"],
                     "reportUrl": f"/api/v1/contacts/imports/{exc.job.id}/report.csv"},
                    status_code=status, media_type=MediaType.JSON)


def validation_error(request: Request, exc: ValidationException) -> Response[ErrorBody]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = str(item.get("message", "")) if isinstance(item, dict) else str(item)
        key = item.get("key") if isinstance(item, dict) else None
        if key == "data" and message == "'data'":
            # Litestar's KeyError for a body that never arrived: say so, not "'data'".
            return _error(400, "malformed_body", "the request body is empty: send a JSON object")
        if key == "data" and item.get("source") == "body":
            key = None  # the whole body is at fault (not an object, say), not a field called "data"
        field = field_of(message, key)
        if isinstance(item, dict) and item.get("source") == "header" and key:
            field = "-".join(part.capitalize() for part in key.replace("_", "-").split("-"))  # as sent: If-Match
        errors.append(ErrorDetail(field=field, reason=explain(message)))
    if any("malformed" in e.reason.lower() or "json is malformed" in e.reason.lower() for e in errors):
        return _error(400, "malformed_body", "the request body is not valid JSON", errors)
    message = "; ".join(f"{e.field}: {e.reason}" if e.field else e.reason for e in errors) or exc.detail
    return _error(422, "validation_failed", message, [e for e in errors if e.field is not None])


def _body_limit(request: Request) -> int | None:
    try:
        return request.route_handler.resolve_request_max_body_size()
    except Exception:  # noqa: BLE001 - no route (e.g. 404) or an older Litestar: a generic message
        return None


def http_error(request: Request, exc: HTTPException) -> Response[ErrorBody]:
    codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
             429: "too_many_requests", 503: "unavailable"}
    headers = dict(exc.headers or {})
    if exc.status_code == 400 and "malformed" in str(exc.detail).lower():
        return _error(400, "malformed_body", f"the request body is not valid JSON: {exc.detail}")
    if exc.status_code == 400 and exc.detail == "Input data was truncated":
        # msgspec's words for JSON that stops mid-value, and also for a lone \uD800-style escape.
        return _error(400, "malformed_body", "the request body is not valid JSON: it ends mid-value or holds"
                      " an unpaired \\u surrogate escape")
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if exc.status_code == 413 and exc.detail == "Request Entity Too Large":
        limit = _body_limit(request)
        return _error(413, "payload_too_large", f"the request body is larger than the {limit} bytes this endpoint"
                      " accepts" if limit else "the request body is too large", headers=headers)
    return _error(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), headers=headers)


def malformed_form(_: Request, exc: MultipartParseError) -> Response[ErrorBody]:
    return _error(400, "malformed_body", f"the multipart/form-data body is malformed: {exc}")


def database_unavailable(_: Request, exc: Exception) -> Response[ErrorBody]:
    log.warning("database unavailable: %s", exc)
    check_after_outage.mark()  # the read pool's stale connections are replaced at checkout, not met by reads
    return _error(503, "database_unavailable", "the database is unavailable; retry shortly",
                  headers={"Retry-After": "2"})


def too_deep(request: Request, exc: RecursionError) -> Response[ErrorBody]:
    """JSON nested past the decoder's recursion limit is bad input; any other RecursionError is ours."""
    if any(frame.f_code.co_name == "decode_json" for frame, _ in traceback.walk_tb(exc.__traceback__)):
        return _error(400, "malformed_body", "the request body is not valid JSON: it is nested too deeply")
    return internal_error(request, exc)


def internal_error(_: Request, exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal_error", "internal error")


class Metrics:
    """Prometheus metrics; lags are read from the database at scrape time."""

    def __init__(self, container: Container):
        self.container = container
        self.registry = CollectorRegistry()
        self.latency = Histogram("contacts_http_request_seconds", "HTTP request latency",
                                 ["method", "route", "status"], registry=self.registry)
        self.projection_lag = Gauge("contacts_projection_lag_events",
                                    "Stored events not yet applied to the read tables", registry=self.registry)
        self.relay_lag = Gauge("contacts_relay_lag_events", "Stored events not yet published to NATS",
                               registry=self.registry)
        self.quarantined = Gauge("contacts_projection_quarantined_events",
                                 "Events the projector could not apply (see projection_quarantine)",
                                 registry=self.registry)
        self.head = Gauge("contacts_event_store_head", "Last notification id in the event store",
                          registry=self.registry)
        self.pending_erasures = Gauge("contacts_pending_erasures",
                                      "Purged contacts whose messages are not yet erased from NATS"
                                      " (their contact.purged is published when they are)", registry=self.registry)
        self.database_up = Gauge("contacts_database_up", "1 if the last scrape could read the database, else 0",
                                 registry=self.registry)

    def scrape(self) -> bytes:
        """The metrics; while the database is away, the request metrics still, and the lags as NaN."""
        try:
            self._read_lags()
            self.database_up.set(1)
        except (psycopg.Error, psycopg_pool.PoolTimeout, eventsourcing.persistence.PersistenceError) as exc:
            # An outage is when the request metrics matter most: a failed scrape would lose them.
            log.warning("metrics: the database is unavailable (%s); lags reported as NaN", type(exc).__name__)
            self.database_up.set(0)
            for gauge in (self.head, self.projection_lag, self.quarantined, self.relay_lag, self.pending_erasures):
                gauge.set(float("nan"))
        return generate_latest(self.registry)

    def _read_lags(self) -> None:
        head = self.container.head()
        with self.container.pool.connection(timeout=1) as conn:
            projected = conn.execute("SELECT coalesce(min(position), 0) FROM projection_tracking").fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM projection_quarantine").fetchone()[0]
            relayed = conn.execute("SELECT position FROM relay_tracking WHERE name = 'nats_relay'").fetchone() \
                if conn.execute("SELECT to_regclass('relay_tracking')").fetchone()[0] else None
            erasing = conn.execute("SELECT count(*) FROM pending_erasures").fetchone()[0] \
                if conn.execute("SELECT to_regclass('pending_erasures')").fetchone()[0] else 0
        self.head.set(head)
        self.projection_lag.set(max(head - projected, 0))
        self.quarantined.set(quarantined)
        self.relay_lag.set(max(head - (relayed[0] if relayed else 0), 0))
        self.pending_erasures.set(erasing)

    def middleware(self, app: Any) -> Any:
        async def timed(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 500}

            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.latency.labels(scope["method"], route, str(status["code"])).observe(
                    time.perf_counter() - started)
        return timed


def create_app(container: Container, nats_url: str = "") -> Litestar:
    """Build the HTTP app around a Container (the composition root's product)."""
    metrics = Metrics(container)
    settings = container.settings
    middleware: list[Any] = [logs.request_context_middleware, metrics.middleware,
                             DefineMiddleware(JWTAuthMiddleware, verifier=TokenVerifier(settings),
                                              exclude=PUBLIC_PATHS)]
    if settings.rate_limit_writes_per_minute > 0:
        middleware.append(rate_limit_middleware(settings.rate_limit_writes_per_minute, settings.rate_limit_burst))

    @get("/health", operation_id="getHealth", tags=["operations"], sync_to_thread=False)
    def health() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @get("/ready", operation_id="getReadiness", tags=["operations"], responses={503: ResponseSpec(
        dict[str, Any], generate_examples=False, description="PostgreSQL or NATS is unreachable: `checks` says which")})
    async def ready() -> Response[dict[str, Any]]:
        """PostgreSQL and NATS are reachable."""
        checks: dict[str, str] = {}
        try:
            await asyncio.to_thread(_check_database, container)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"unavailable: {exc}"
        checks["nats"] = await _check_nats(nats_url)
        ok = all(v == "ok" for v in checks.values())
        return Response({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)

    @get("/asyncapi.json", operation_id="getAsyncApi", tags=["operations"], sync_to_thread=False)
    def asyncapi() -> dict[str, Any]:
        """The AsyncAPI 3.0 document of the events published to NATS and the inbound SMS consumed."""
        settings = container.settings
        return asyncapi_document(settings.nats_subject_prefix, settings.nats_stream, settings.inbound_subject)

    # Litestar appends "; charset=utf-8" to text/* types itself: without this the header said it twice.
    @get("/metrics", operation_id="getMetrics", tags=["operations"],
         media_type=CONTENT_TYPE_LATEST.replace("; charset=utf-8", ""), sync_to_thread=True)
    def metrics_endpoint() -> bytes:
        """Prometheus metrics: request latency, projection lag, relay lag."""
        return metrics.scrape()

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
        route_handlers=[api, health, ready, metrics_endpoint, asyncapi, docs_files],
        dependencies={"container": Provide(lambda: container, sync_to_thread=False, use_cache=True)},
        middleware=middleware,
        before_send=[echo_request_id],
        before_request=KnownQueryParameters().check,
        request_max_body_size=settings.request_max_bytes,
        exception_handlers={
            DomainError: domain_error,
            PreconditionFailedError: precondition_failed,
            ImportFailedError: import_failed,
            ValidationException: validation_error,
            MultipartParseError: malformed_form,
            NotAuthorizedException: http_error,
            HTTPException: http_error,
            RecursionError: too_deep,
            psycopg.OperationalError: database_unavailable,
            psycopg_pool.PoolTimeout: database_unavailable,
            eventsourcing.persistence.OperationalError: database_unavailable,  # the event store's own
            eventsourcing.persistence.InterfaceError: database_unavailable,
            Exception: internal_error,
        },
        openapi_config=openapi,
        on_startup=[_finish_openapi],
        plugins=[ClosedStructSchemaPlugin()],
        logging_config=None,  # Litestar's default adds its own handlers and format: one format (service/logs.py)
        debug=False,
    )


def _finish_openapi(app: Litestar) -> None:
    """Complete the generated OpenAPI document once, in place: every docs page and /schema/openapi.json serve it."""
    finish_openapi(app.plugins.get(OpenAPIPlugin).provide_openapi_schema())


def _check_database(container: Container) -> None:
    """Both pools: the read pool and the event store's, which every write goes through."""
    with container.pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")
    with container.app.recorder.datastore.get_connection() as conn:  # waits up to CONTACTS_DB_TIMEOUT_S
        conn.execute("SELECT 1")


async def _check_nats(url: str) -> str:
    if not url:
        return "not configured"
    import nats
    from urllib.parse import urlsplit

    from events.nats_log import server_list

    address = urlsplit(url.split(",")[0])
    try:
        # A plain TCP connect first: nats-py's connect to a closed port retries until the
        # timeout (2 s per probe, reported as a timeout) and logs a traceback each time.
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.hostname, address.port or 4222), 1)
        writer.close()
    except ConnectionRefusedError:
        return "unavailable: connection refused"
    except (OSError, asyncio.TimeoutError) as exc:
        return f"unavailable: {type(exc).__name__}"
    try:
        nc = await asyncio.wait_for(nats.connect(server_list(url), connect_timeout=1, allow_reconnect=False,
                                                 max_reconnect_attempts=0, error_cb=_quiet), timeout=2)
        await nc.close()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"unavailable: {type(exc).__name__}"


async def _quiet(_: Exception) -> None:
    """nats-py's error callback: the readiness answer says what failed, the log need not."""

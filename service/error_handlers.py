"""The exception handlers: every error the app raises answered as the ``ErrorBody`` (statuses: service/errors.py)."""

from __future__ import annotations

import logging
import traceback
from typing import Any
from uuid import UUID

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.types import ExceptionHandlersMap
from python_multipart.exceptions import MultipartParseError

from command.errors import STORE_UNAVAILABLE, DomainError, PreconditionFailedError
from command.imports.service import ImportFailedError, ImportInterruptedError
from service.dbpool import check_after_outage
from service.errors import status_of
from service.etags import etag
from service.schemas import ErrorBody, ErrorDetail, explain, field_of
from service.signing_keys import RETRY_S, SigningKeysUnavailableError

log = logging.getLogger(__name__)


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
    message = cause.message if isinstance(cause, DomainError) else "the import failed part-way"
    return _import_stopped(status, "import_failed", message, exc.job.id, exc.job.counts)


def _import_stopped(status: int, code: str, message: str, import_id: UUID, counts: dict[str, int],
                    headers: dict[str, str] | None = None, **keys: Any) -> Response[Any]:
    """The answer of an import that stopped part-way: why, and exactly what it had stored."""
    return Response({"status": status, "error": code, "message": message, **keys, "importId": str(import_id),
                     "imported": counts["imported"], "valid": counts["valid"], "invalid": counts["invalid"],
                     "skipped": counts["skipped"], "rows": counts["read"],
                     "reportUrl": f"/api/v1/contacts/imports/{import_id}/report.csv"},
                    status_code=status, media_type=MediaType.JSON, headers=headers)


def import_interrupted(_: Request, exc: ImportInterruptedError) -> Response[Any]:
    """An import the database stopped part-way: 503 as any request the database fails, with what it stored."""
    log.warning("import %s interrupted: %s", exc.job_id, exc.cause)
    check_after_outage.mark()
    then = ("retry with the same Idempotency-Key to resume it after its last stored row" if exc.resumable else
            "no retry resumes an import sent without an Idempotency-Key (it ends as failed): send the file again"
            " to import the rest (numbers already imported are skipped as already_exists)")
    return _import_stopped(503, "database_unavailable", f"the database became unavailable part-way through"
                           f" import {exc.job_id}; what it stored stays: {then}", exc.job_id, exc.counts,
                           headers={"Retry-After": "2"}, errors=[])  # as every other 503 has


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


def auth_unavailable(_: Request, exc: SigningKeysUnavailableError) -> Response[ErrorBody]:
    return _error(503, "auth_unavailable", str(exc), headers={"Retry-After": str(max(1, round(RETRY_S)))})


def too_deep(request: Request, exc: RecursionError) -> Response[ErrorBody]:
    """JSON nested past the decoder's recursion limit is bad input; any other RecursionError is ours."""
    if any(frame.f_code.co_name == "decode_json" for frame, _ in traceback.walk_tb(exc.__traceback__)):
        return _error(400, "malformed_body", "the request body is not valid JSON: it is nested too deeply")
    return internal_error(request, exc)


def internal_error(_: Request, exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal_error", "internal error")


# Registered once on the app (service/app.py): the most specific class wins, Exception is the 500.
EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error,
    PreconditionFailedError: precondition_failed,
    ImportFailedError: import_failed,
    ImportInterruptedError: import_interrupted,
    ValidationException: validation_error,
    MultipartParseError: malformed_form,
    NotAuthorizedException: http_error,
    HTTPException: http_error,
    SigningKeysUnavailableError: auth_unavailable,
    RecursionError: too_deep,
    **{kind: database_unavailable for kind in STORE_UNAVAILABLE},  # psycopg's, the pool's, the event store's own
    Exception: internal_error,
}

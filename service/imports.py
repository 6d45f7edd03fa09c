"""Import endpoints: file and JSON imports, the import job resource and its row-by-row report."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.response import Stream
from msgspec import Meta

from command.context import Actor
from command.errors import ValidationError
from command.field_limits import MAX_PHONE_CHARS, MAX_TAGS
from command.imports.cells import unneutralise
from command.imports.rows import ImportRow
from command.imports.service import ImportOutcome
from query.imports import REPORT_URL, ImportJob
from service.bootstrap import Container
from service.cleaning import clean_region, clean_tags, clean_text, split_tags
from service import bodies, import_jobs, threads
from service.openapi import documented_body, located, with_request_body
from service.schemas import NO_NUL, Region
from service.spool import spooled
from service.uploads import read_body, receive_upload

ActorRequest = Request[Actor, str, Any]
JOB_PATH = "/api/v1/contacts/imports/{}"
BULK_MAX_BYTES = 50 * 1024 * 1024  # a JSON body is decoded whole: 100,000 contacts fit easily
Text = Annotated[str, Meta(pattern=NO_NUL)]  # lengths are checked per row: a too-long field skips the row


class ImportResult(msgspec.Struct, rename="camel"):
    """The seed's counts (imported = valid + invalid), plus the job id and its report."""

    imported: int
    valid: int
    invalid: int
    skipped: int
    rows: int
    import_id: UUID
    status: str
    report_url: str


REPLAYED = ResponseSpec(ImportResult, description="A retry with the same `Idempotency-Key`: the first result",
                        generate_examples=False)
JSON_IMPORT_RESPONSES = {200: REPLAYED}
FILE_IMPORT_RESPONSES = {200: REPLAYED, 202: ResponseSpec(
    ImportJob, description="With `Prefer: respond-async`: the queued job, named by `Location`",
    generate_examples=False)}
IMPORT_FORM = Schema(type=OpenAPIType.OBJECT, required=["file"], properties={
    "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description="A .csv or .xlsx file"),
    "listId": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID,
                     description="Add every imported contact to this list"),
    "mapping": Schema(type=OpenAPIType.STRING, description=(
        "A JSON object: file header → field (first_name, last_name, full_name, phone, email, tags, notes,"
        " opted_out), or null to ignore the column"), examples=['{"Numéro": "phone", "Name": "first_name",'
                                                               ' "Internal id": null}']),
    "region": Schema(type=OpenAPIType.STRING, min_length=2, max_length=2,
                     description="Region of numbers written without a country code, e.g. NG"),
})


class BulkContact(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    # A number too: a browser's spreadsheet parser gives numeric cells as numbers (254712345678).
    phone: Annotated[str, Meta(max_length=MAX_PHONE_CHARS, pattern=NO_NUL)] | Annotated[int, Meta(ge=0)] | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    tags: Annotated[list[Text], Meta(max_length=MAX_TAGS)] = []
    notes: Text | None = None
    is_opted_out: bool = False  # moving contacts between accounts keeps their opt-outs (the JSON export has it)


class BulkImport(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    contacts: Annotated[list[BulkContact], Meta(max_length=100_000)]
    list_id: UUID | None = None
    region: Region | None = None


def _result(outcome: ImportOutcome) -> ImportResult:
    c = outcome.counts
    return ImportResult(imported=c["imported"], valid=c["valid"], invalid=c["invalid"], skipped=c["skipped"],
                        rows=c["read"], import_id=outcome.import_id, status=outcome.status,
                        report_url=REPORT_URL.format(outcome.import_id))


def _text(value: str | None) -> str | None:
    value = clean_text(value)
    return unneutralise(value) if value else value


def _bulk_rows(contacts: list[BulkContact]) -> Iterator[ImportRow]:
    for number, c in enumerate(contacts, start=1):
        phone = str(c.phone) if isinstance(c.phone, int) else clean_text(c.phone)
        yield ImportRow(row=number, phone=phone, first_name=_text(c.first_name),
                        last_name=_text(c.last_name), email=clean_text(c.email),
                        tags=clean_tags(split_tags(c.tags)), is_opted_out=c.is_opted_out,
                        notes=_text(c.notes))


def _parse_uuid(value: str | None, field: str) -> UUID | None:
    if not value or not value.strip():
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        raise ValidationError(f"{field} must be a UUID", field=field) from None


def _parse_mapping(value: str | None) -> dict[str, str | None] | None:
    """The client's column mapping: header → field, or ``null`` to ignore the column."""
    if not value:
        return None
    try:
        mapping = msgspec.json.decode(value, type=dict[str, str | None])
    except msgspec.DecodeError as exc:
        raise ValidationError(f"mapping must be a JSON object of header → field (or null to ignore the column):"
                              f" {exc}", field="mapping") from None
    return mapping


async def _decode(body: bytearray) -> BulkImport:
    """The body as a ``BulkImport``, decoded strictly off the event loop (50 MB take a good part of a
    second), refused as every JSON body is (service/bodies.py)."""
    return await asyncio.to_thread(bodies.decode, body, BulkImport)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key", "").strip()
    if len(key) > 200:
        raise ValidationError("Idempotency-Key must be at most 200 characters", field="Idempotency-Key")
    return key or None


class ImportController(Controller):
    """Bulk imports from files or JSON, and the reports users fix their files with."""

    path = "/api/v1/contacts"
    tags = ["import"]

    @post("/import", operation_id="importContactsFile", after_request=located(JOB_PATH, "import_id"),
          responses=FILE_IMPORT_RESPONSES, status_code=201, request_max_body_size=None,
          operation_class=with_request_body("multipart/form-data", IMPORT_FORM, "The file and its options"))
    async def import_file(self, request: ActorRequest, container: Container) -> Response[Any]:
        """Import a .csv or .xlsx file (multipart field ``file``; optional ``listId``, ``mapping``, ``region``).

        With ``Prefer: respond-async`` it answers 202 at once with the job (``Location``)
        and the worker runs the import; poll the job for progress.
        """
        idempotency_key = _idempotency_key(request)
        upload = await receive_upload(request, container.settings.import_max_bytes, digest=bool(idempotency_key))
        try:
            fmt = import_jobs.upload_format(upload)
            chosen = (_parse_uuid(upload.fields.get("listId"), "listId"), _parse_mapping(upload.fields.get("mapping")),
                      clean_region(upload.fields.get("region")), idempotency_key)
            if "respond-async" in request.headers.get("prefer", "").lower():
                job = await asyncio.to_thread(import_jobs.queue_import, container, request.user, upload, fmt, *chosen)
                return Response(job, status_code=202, headers={"Location": job.report_url.rsplit("/", 1)[0],
                                                               "Preference-Applied": "respond-async"})
            outcome = await threads.run_in(threads.IMPORTS, import_jobs.import_file, container, request.user, upload,
                                           fmt, *chosen)
        finally:
            upload.discard()
        return Response(_result(outcome), status_code=200 if outcome.replayed else 201)

    @post("/bulk", operation_id="importContactsJson", after_request=located(JOB_PATH, "import_id"),
          responses=JSON_IMPORT_RESPONSES, status_code=201, request_max_body_size=BULK_MAX_BYTES,
          dependencies=documented_body(BulkImport))
    async def import_json(self, request: ActorRequest, container: Container) -> Response[ImportResult]:
        """Import contacts sent as JSON (the web wizard's path after client-side mapping).

        The handler reads the body itself: Litestar's ``data`` joins the chunks (the body twice
        for a moment) and keeps the joined bytes on the request all through the import.
        """
        body = await read_body(request)  # the route's limit (BULK_MAX_BYTES) bounds it
        data = await _decode(body)
        del body  # up to 50 MB that the import, seconds long, has no use for
        outcome = await threads.run_in(threads.IMPORTS, import_jobs.import_json, container, request.user,
                                       _bulk_rows(data.contacts), data, list_id=data.list_id,
                                       region=clean_region(data.region), idempotency_key=_idempotency_key(request))
        return Response(_result(outcome), status_code=200 if outcome.replayed else 201)

    @get("/imports/{import_id:uuid}", operation_id="getImport", sync_to_thread=True)
    def show(self, request: ActorRequest, container: Container, import_id: UUID) -> ImportJob:
        """An import job: status, progress counts, and where its report is."""
        return import_jobs.get_job(container, request.user, import_id)


    @get("/imports/{import_id:uuid}/report.csv", operation_id="getImportReport",
         media_type="text/csv", sync_to_thread=True)
    def report(self, request: ActorRequest, container: Container, import_id: UUID) -> Stream:
        """Row-by-row report of skipped and flagged rows: line, row, outcome, reason, detail, contact_id.

        ``line`` is the row number a spreadsheet shows (the header is line 1); ``row`` counts
        the file's data rows (for a JSON import, the item's place in the array).
        """
        return Stream(spooled(import_jobs.import_report(container, request.user, import_id)), media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="import-{import_id}-report.csv"'})

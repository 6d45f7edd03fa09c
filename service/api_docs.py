"""What the OpenAPI document says beyond what Litestar infers, keyed by operationId and applied in one place.

``finish`` runs once on the generated document (``service.app`` calls it at start-up). It
writes each operation's error answers from ``service.errors.CODES`` (only the codes that
operation can answer, each with when), the request and response headers, and the words
and examples of ``service.api_words``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from service.errors import CODES

ERROR_BODY_REF = "#/components/schemas/ErrorBody"

# Every /api/v1 operation: a bad token, PostgreSQL unreachable.
READ = ("unauthorized", "database_unavailable")
# Every write: the per-account write rate limit too.
WRITE = (*READ, "too_many_requests")
# A JSON body: not JSON, too large, or breaking the schema.
BODY = ("malformed_body", "payload_too_large", "validation_failed")
# A command on the write side (service.commands.execute): lost races, a database gone after the store.
COMMAND = ("concurrent_modification", "stored_not_confirmed")
IMPORT = ("import_in_progress", "idempotency_key_reused", "unknown_lists", "import_failed")

# The error codes each operation can answer (tests/test_fuzz.py holds the service to them:
# each status's schema allows these codes only).
ERRORS: dict[str, tuple[str, ...]] = {
    "listContactLists": READ,
    "createContactList": (*WRITE, *BODY, "stored_not_confirmed"),
    "updateContactList": (*WRITE, *BODY, *COMMAND, "not_found"),
    "getContactListHistory": (*READ, "not_found"),
    "deleteContactList": (*WRITE, *COMMAND, "not_found"),
    "addContactsToList": (*WRITE, *BODY, *COMMAND, "not_found"),
    "removeContactsFromList": (*WRITE, *BODY, *COMMAND, "not_found"),
    "listContacts": (*READ, "validation_failed"),
    "listContactTags": READ,
    "listTrash": READ,
    "restoreContacts": (*WRITE, *BODY, *COMMAND),
    "purgeContacts": (*WRITE, *BODY, *COMMAND),
    "bulkDeleteContacts": (*WRITE, *BODY, *COMMAND),
    "deleteContact": (*WRITE, *COMMAND, "not_found"),
    "getContact": (*READ, "not_found", "validation_failed"),
    "getContactHistory": (*READ, "not_found"),
    "createContact": (*WRITE, *BODY, *COMMAND, "invalid_phone", "unknown_lists", "phone_taken"),
    "updateContact": (*WRITE, *BODY, *COMMAND, "not_found", "invalid_phone", "unknown_lists", "phone_taken"),
    "exportContactsCsv": (*READ, "validation_failed"),
    "exportContactsJson": (*READ, "validation_failed"),
    "emailContactsExport": (*WRITE, *BODY, "mail_delivery_failed", "mail_not_configured"),
    "importContactsFile": (*WRITE, *BODY, *IMPORT, "unsupported_file", "invalid_file"),
    "importContactsJson": (*WRITE, *BODY, *IMPORT),
    "getImport": (*READ, "not_found"),
    "getImportReport": (*READ, "not_found"),
}

# A realistic body per code, as the service sends it (the examples of each error answer).
ERROR_EXAMPLES: dict[str, dict[str, Any]] = {
    "malformed_body": {"message": "the request body is not valid JSON: it ends mid-value or holds an unpaired"
                                  " \\u surrogate escape"},
    "unauthorized": {"message": "token has expired"},
    "not_found": {"message": "contact 6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11 not found",
                  "errors": [{"field": "id", "reason": "contact 6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11 not found"}]},
    "phone_taken": {"message": "phone +254712345678 already belongs to contact 6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11",
                    "errors": [{"field": "phone", "reason": "phone +254712345678 already belongs to contact"
                                                            " 6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11"}],
                    "contactId": "6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11"},
    "concurrent_modification": {"message": "the resource changed concurrently too many times; retry the request"},
    "import_in_progress": {"message": "import 0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30 with this Idempotency-Key is"
                                      " still running", "importId": "0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30"},
    "import_failed": {"message": "the .xlsx file is corrupt: xl/worksheets/sheet1.xml is not well-formed XML"
                                 " (mismatched tag, line 2)",
                      "importId": "0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30", "imported": 2000, "valid": 1994,
                      "invalid": 6, "skipped": 11, "rows": 2011,
                      "reportUrl": "/api/v1/contacts/imports/0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30/report.csv"},
    "payload_too_large": {"message": "the request body is larger than the 1048576 bytes this endpoint accepts"},
    "unsupported_file": {"message": "the upload is a PDF document; send a .csv or .xlsx file",
                         "errors": [{"field": "file", "reason": "the upload is a PDF document; send a .csv or"
                                                               " .xlsx file"}]},
    "validation_failed": {"message": "pageSize: Expected `int` <= 100",
                          "errors": [{"field": "pageSize", "reason": "Expected `int` <= 100"}]},
    "invalid_phone": {"message": "phone '0712 345' is invalid: too short",
                      "errors": [{"field": "phone", "reason": "phone '0712 345' is invalid: too short"}]},
    "unknown_lists": {"message": "unknown contact lists: 3f9a8c2d-1b7e-4e6a-8d5c-7a2b9e0f4c18",
                      "errors": [{"field": "listIds", "reason": "unknown contact lists:"
                                                                " 3f9a8c2d-1b7e-4e6a-8d5c-7a2b9e0f4c18"}],
                      "unknownListIds": ["3f9a8c2d-1b7e-4e6a-8d5c-7a2b9e0f4c18"]},
    "invalid_file": {"message": "the file has no phone column: name one phone, mobile, msisdn or number, or"
                                " send a mapping",
                     "errors": [{"field": "file", "reason": "the file has no phone column: name one phone, mobile,"
                                                           " msisdn or number, or send a mapping"}]},
    "idempotency_key_reused": {"message": "this Idempotency-Key was used for a different request (import"
                                          " 0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30): send a new key",
                               "errors": [{"field": "Idempotency-Key",
                                           "reason": "this Idempotency-Key was used for a different request"
                                                     " (import 0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30): send a new"
                                                     " key"}],
                               "importId": "0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30"},
    "too_many_requests": {"message": "more than 1200 writes a minute (bursts of 200) for this account; retry in"
                                     " 1 s"},
    "mail_delivery_failed": {"message": "the mail provider refused the recipient: 550 mailbox unavailable"},
    "database_unavailable": {"message": "the database is unavailable; retry shortly"},
    "stored_not_confirmed": {"message": "the change was stored, but the database went away before the read tables"
                                        " showed it: do not send it again; it will be visible once the database"
                                        " is back", "stored": True, "id": "b006036d-5f2a-4c8e-9d1b-6a7c3e2f8a90"},
    "mail_not_configured": {"message": "no mail provider is configured (CONTACTS_SMTP_URL)"},
}

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorBody",
    "description": "Every error answer. Some codes add keys: `contactId` (phone_taken), `unknownListIds`"
                   " (unknown_lists), `importId` (import_in_progress, idempotency_key_reused, import_failed),"
                   " the counts and `reportUrl` (import_failed), `stored` and `id` (stored_not_confirmed).",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "integer", "description": "The HTTP status, repeated"},
        "error": {"type": "string", "description": "A stable machine-readable code (the list per status is in"
                                                   " each operation's responses)"},
        "message": {"type": "string", "description": "What went wrong, in words, for people"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"},
                   "description": "Each field at fault; left out when no single field is"},
    },
}
ERROR_DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorDetail",
    "required": ["field", "reason"],
    "properties": {
        "field": {"oneOf": [{"type": "string"}, {"type": "null"}],
                  "description": "The field, query parameter or header, named as the client sent it"},
        "reason": {"type": "string", "description": "What is wrong with it"},
    },
}

# -- headers ------------------------------------------------------------------------------

REQUEST_ID = {"description": "The request's id: the client's `X-Request-Id` (its first 100 characters) or one"
                             " the service made. Every event the request stores records it (`requestId` in the"
                             " histories, `requestid` on NATS).",
              "required": True, "schema": {"type": "string", "example": "checkout-7f3a9c"}}
RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}
RESPONSE_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {"WWW-Authenticate": {"description": "Always `Bearer`", "required": True,
                               "schema": {"type": "string", "const": "Bearer"}}},
    429: {"Retry-After": {**RETRY_AFTER, "required": True}},
    503: {"Retry-After": {**RETRY_AFTER, "description": "Seconds to wait before retrying; sent with"
                                                        " `database_unavailable` (2)"}},
}
LOCATION = {"description": "Where the new resource is (a path on this service)", "required": True,
            "schema": {"type": "string", "format": "uri-reference"}}
CONTENT_DISPOSITION = {"description": "`attachment` with a file name", "required": True,
                       "schema": {"type": "string"}}
# Success headers an operation sends, by operationId and status.
SUCCESS_HEADERS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("createContactList", 201): {"Location": {**LOCATION, "schema": {
        "type": "string", "format": "uri-reference", "example": "/api/v1/contact-lists/b006036d-5f2a-4c8e-9d1b-6a7c3e2f8a90"}}},
    ("createContact", 201): {"Location": {**LOCATION, "schema": {
        "type": "string", "format": "uri-reference", "example": "/api/v1/contacts/6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11"}}},
    ("importContactsFile", 201): {"Location": {**LOCATION, "description": "The import job"}},
    ("importContactsJson", 201): {"Location": {**LOCATION, "description": "The import job"}},
    ("importContactsFile", 202): {
        "Location": {**LOCATION, "description": "The queued import job: poll it"},
        "Preference-Applied": {"description": "`respond-async`", "required": True, "schema": {"type": "string"}}},
    ("exportContactsCsv", 200): {"Content-Disposition": {**CONTENT_DISPOSITION, "schema": {
        "type": "string", "example": 'attachment; filename="contacts-20261127-071333.csv"'}}},
    ("getImportReport", 200): {"Content-Disposition": {**CONTENT_DISPOSITION, "schema": {
        "type": "string", "example": 'attachment; filename="import-0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30-report.csv"'}}},
}
REQUEST_ID_PARAMETER = {"name": "X-Request-Id", "in": "header", "required": False,
                        "description": "Your id for this request (at most 100 characters are kept): echoed in"
                                       " the answer and recorded on every event the request stores.",
                        "schema": {"type": "string"}}
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry safe: the same key with the same request answers 200 with the first import's"
                   " result (409 `import_in_progress` while it runs); with a different request, 422"
                   " `idempotency_key_reused`. Keys are per account; at most 200 characters.",
    "schema": {"type": "string", "maxLength": 200, "example": "import-2026-11-27-customers"}}
PREFER_PARAMETER = {
    "name": "Prefer", "in": "header", "required": False,
    "description": "`respond-async`: answer 202 at once with the queued job (and `Location`); a worker runs the"
                   " import. Without it the import runs inside the request and answers 201 when done.",
    "schema": {"type": "string", "example": "respond-async"}}
REQUEST_HEADERS: dict[str, list[dict[str, Any]]] = {
    "importContactsFile": [IDEMPOTENCY_KEY_PARAMETER, PREFER_PARAMETER],
    "importContactsJson": [IDEMPOTENCY_KEY_PARAMETER],
}


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    """The documented answer for one error status: each code with when, a schema allowing those codes only."""
    reason = HTTPStatus(status).phrase
    return {
        "description": f"{reason}.\n\n" + "\n".join(f"- `{code}`: {CODES[code].when}" for code in codes),
        "headers": {"X-Request-Id": REQUEST_ID, **RESPONSE_HEADERS.get(status, {})},
        "content": {"application/json": {
            "schema": {"allOf": [{"$ref": ERROR_BODY_REF}, {
                "type": "object", "properties": {"status": {"const": status}, "error": {"enum": codes}}}]},
            "examples": {code: {"summary": code, "value": {"status": status, "error": code,
                                                           **ERROR_EXAMPLES[code]}} for code in codes},
        }},
    }


def _errors(operation: dict[str, Any], codes: tuple[str, ...]) -> None:
    responses = operation["responses"]
    for status in [s for s in responses if int(s) >= 400]:
        del responses[status]  # Litestar's own guesses (its default 400 body the service never sends)
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(CODES[code].status, []).append(code)
    for status in sorted(by_status):
        responses[str(status)] = error_response(status, by_status[status])


def _headers(operation: dict[str, Any]) -> None:
    op_id = operation["operationId"]
    parameters = [p for p in operation.get("parameters", []) if p["in"] != "header"]
    operation["parameters"] = [*parameters, *REQUEST_HEADERS.get(op_id, []), REQUEST_ID_PARAMETER]
    for status, response in operation["responses"].items():
        response["headers"] = {**response.get("headers", {}), "X-Request-Id": REQUEST_ID,
                               **SUCCESS_HEADERS.get((op_id, int(status)), {})}


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Complete the generated document in place (and return it); running it twice changes nothing more."""
    schemas = document["components"]["schemas"]
    schemas["ErrorBody"], schemas["ErrorDetail"] = ERROR_BODY_SCHEMA, ERROR_DETAIL_SCHEMA
    for item in document["paths"].values():
        for operation in item.values():
            codes = ERRORS.get(operation["operationId"])
            if codes is not None:
                _errors(operation, codes)
            _headers(operation)
    return document

"""What the OpenAPI document says beyond what Litestar infers, keyed by operationId and applied in one place.

``finish`` runs once on the generated document (``service.app`` calls it at start-up). It
writes each operation's error answers from ``service.errors.CODES`` (only the codes that
operation can answer, each with when), the request and response headers, the tags'
descriptions, and each operation's summary, description, examples and parameter and
field descriptions (``OPERATIONS``, ``FIELDS``). Handlers keep one-line docstrings for
readers of the code; what clients read is written here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from service.errors import CODES

ERROR_BODY_REF = "#/components/schemas/ErrorBody"

# Every /api/v1 operation: a bad token, an unknown query parameter, PostgreSQL or the token's keys unreachable.
READ = ("unauthorized", "validation_failed", "database_unavailable", "auth_unavailable")
# Every write: the per-account write rate limit too.
WRITE = (*READ, "too_many_requests")
# A JSON body: not JSON, too large, or breaking the schema.
BODY = ("malformed_body", "payload_too_large", "validation_failed")
# A command on the write side: concurrent writers won the race several times.
COMMAND = ("concurrent_modification",)
IMPORT = ("import_in_progress", "idempotency_key_reused", "unknown_lists", "import_failed")

# The error codes each operation can answer (tests/integration/test_fuzz.py holds the service to them:
# each status's schema allows these codes only).
ERRORS: dict[str, tuple[str, ...]] = {
    "listContactLists": READ,
    "createContactList": (*WRITE, *BODY),
    "updateContactList": (*WRITE, *BODY, *COMMAND, "not_found", "precondition_failed"),
    "getContactList": (*READ, "not_found"),
    "getContactListHistory": (*READ, "not_found"),
    "deleteContactList": (*WRITE, *COMMAND, "not_found", "precondition_failed"),
    "addContactsToList": (*WRITE, *BODY, *COMMAND, "not_found"),
    "removeContactsFromList": (*WRITE, *BODY, *COMMAND, "not_found"),
    "listContacts": (*READ, "validation_failed"),
    "listContactTags": READ,
    "listTrash": READ,
    "restoreContacts": (*WRITE, *BODY, *COMMAND),
    "purgeContacts": (*WRITE, *BODY, *COMMAND),
    "bulkDeleteContacts": (*WRITE, *BODY, *COMMAND),
    "deleteContact": (*WRITE, *COMMAND, "not_found", "precondition_failed"),
    "getContact": (*READ, "not_found", "validation_failed"),
    "getContactHistory": (*READ, "not_found"),
    "createContact": (*WRITE, *BODY, *COMMAND, "invalid_phone", "unknown_lists", "phone_taken"),
    "updateContact": (*WRITE, *BODY, *COMMAND, "not_found", "invalid_phone", "unknown_lists", "phone_taken",
                      "precondition_failed"),
    "exportContactsCsv": (*READ, "validation_failed", "export_unavailable"),
    "exportContactsJson": (*READ, "validation_failed", "export_unavailable"),
    "emailContactsExport": (*WRITE, *BODY, "mail_delivery_failed", "mail_not_configured"),
    "importContactsFile": (*WRITE, *BODY, *IMPORT, "unsupported_file", "invalid_file"),
    "importContactsJson": (*WRITE, *BODY, *IMPORT),
    "getImport": (*READ, "not_found"),
    "bulkTagContacts": (*WRITE, *BODY, *COMMAND),
    "bulkUntagContacts": (*WRITE, *BODY, *COMMAND),
    "bulkOptOutContacts": (*WRITE, *BODY, *COMMAND),
    "bulkOptInContacts": (*WRITE, *BODY, *COMMAND),
    "getBulkAction": (*READ, "not_found"),
    "getImportReport": (*READ, "not_found", "export_unavailable"),
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
    "precondition_failed": {"message": "Contact 6e940735-2b1c-4f8a-9d3e-5a7b9c1d2e4f is at version 4, not 3: it"
                                       " changed since you read it", "currentEtag": "\"4\""},
    "mail_not_configured": {"message": "no mail provider is configured (CONTACTS_SMTP_URL)"},
    "export_unavailable": {"message": "the service has no room to prepare the download (No space left on device"
                                      " in its temporary directory /tmp); retry later"},
    "auth_unavailable": {"message": "the signing keys at CONTACTS_JWKS_URL could not be fetched"
                                    " (https://id.example.com/.well-known/jwks.json); retry shortly"},
}

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorBody",
    "description": "Every error answer. Some codes add keys: `contactId` (phone_taken), `unknownListIds`"
                   " (unknown_lists), `importId` (import_in_progress, idempotency_key_reused, import_failed,"
                   " and database_unavailable from an import stopped part-way), the counts and `reportUrl`"
                   " (import_failed, and such a database_unavailable), `currentEtag` (precondition_failed).",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "integer", "description": "The HTTP status, repeated"},
        "error": {"type": "string", "description": "A stable machine-readable code (the list per status is in"
                                                   " each operation's responses)"},
        "message": {"type": "string", "description": "What went wrong, in words, for people"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"},
                   "description": "Each field at fault; left out when no single field is"},
        # The keys some codes add (the description above says which), typed for generated clients.
        "contactId": {"type": "string", "format": "uuid", "description": "The contact holding the number"},
        "unknownListIds": {"type": "array", "items": {"type": "string"},
                           "description": "The list ids that name no list of the account"},
        "importId": {"type": "string", "format": "uuid", "description": "The import job concerned"},
        **{count: {"type": "integer", "minimum": 0, "description": f"The import's `{count}` count, as stored"}
           for count in ("imported", "valid", "invalid", "skipped", "rows")},
        "reportUrl": {"type": "string", "format": "uri-reference", "description": "The import's row-by-row report"},
        "currentEtag": {"type": "string", "description": "The current version's ETag"},
    },
}
ERROR_DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorDetail",
    "description": "One field at fault.",
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
                                                        " `database_unavailable` (2) and `auth_unavailable` (5)"}},
}
LOCATION = {"description": "Where the new resource is (a path on this service)", "required": True,
            "schema": {"type": "string", "format": "uri-reference"}}
CONTENT_DISPOSITION = {"description": "`attachment` with a file name", "required": True,
                       "schema": {"type": "string"}}
# Success headers an operation sends, by operationId and status.
SUCCESS_HEADERS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("createContactList", 201): {"Location": {**LOCATION, "schema": {
        "type": "string", "format": "uri-reference",
        "example": "/api/v1/contact-lists/b006036d-5f2a-4c8e-9d1b-6a7c3e2f8a90"}}},
    ("createContact", 201): {"Location": {**LOCATION, "schema": {
        "type": "string", "format": "uri-reference",
        "example": "/api/v1/contacts/6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11"}}},
    ("importContactsFile", 201): {"Location": {**LOCATION, "description": "The import job"}},
    ("importContactsJson", 201): {"Location": {**LOCATION, "description": "The import job"}},
    ("importContactsFile", 202): {
        "Location": {**LOCATION, "description": "The queued import job: poll it"},
        "Preference-Applied": {"description": "`respond-async`", "required": True, "schema": {"type": "string"}}},
    **{(op, 202): {"Location": {**LOCATION, "description": "The bulk action's job: poll it", "schema": {
        "type": "string", "format": "uri-reference",
        "example": "/api/v1/contacts/bulk-actions/0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30"}}}
       for op in ("bulkDeleteContacts", "addContactsToList", "removeContactsFromList", "bulkTagContacts",
                  "bulkUntagContacts", "bulkOptOutContacts", "bulkOptInContacts")},
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
                   " `idempotency_key_reused`. An import left running by a process that stopped mid-way"
                   " (not a queued one: a worker resumes those) is resumed by the retry, after its last"
                   " stored row, which answers 201 with the whole import's counts. Keys are per account;"
                   " at most 200 characters.",
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


# What an import the database stopped part-way answers (docs/imports.md, "The database lost mid-import").
_PART_WAY = "0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30"
IMPORT_STOPPED_PART_WAY = {
    "summary": "database_unavailable, an import stopped part-way (what it stored stays)",
    "value": {"status": 503, "error": "database_unavailable",
              "message": f"the database became unavailable part-way through import {_PART_WAY}; what it stored"
                         " stays: retry with the same Idempotency-Key to resume it after its last stored row",
              "errors": [], "importId": _PART_WAY, "imported": 40962, "valid": 40901, "invalid": 61,
              "skipped": 1038, "rows": 42000, "reportUrl": f"/api/v1/contacts/imports/{_PART_WAY}/report.csv"}}


def _errors(operation: dict[str, Any], codes: tuple[str, ...]) -> None:
    responses = operation["responses"]
    for status in [s for s in responses if int(s) >= 400]:
        del responses[status]  # Litestar's own guesses (its default 400 body the service never sends)
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(CODES[code].status, []).append(code)
    for status in sorted(by_status):
        responses[str(status)] = error_response(status, by_status[status])
    if "import_failed" in codes:  # the import operations (IMPORT): they can stop part-way
        examples = responses["503"]["content"]["application/json"]["examples"]
        examples["database_unavailable_part_way"] = IMPORT_STOPPED_PART_WAY


def _headers(operation: dict[str, Any]) -> None:
    op_id = operation["operationId"]
    written = [*REQUEST_HEADERS.get(op_id, []), REQUEST_ID_PARAMETER]
    names = {p["name"].lower() for p in written}
    # Headers a handler declares itself (If-Match) keep Litestar's words; the rest are written here.
    parameters = [p for p in operation.get("parameters", []) if p["in"] != "header" or p["name"].lower() not in names]
    operation["parameters"] = [*parameters, *written]
    for status, response in operation["responses"].items():
        response["headers"] = {**response.get("headers", {}), "X-Request-Id": REQUEST_ID,
                               **SUCCESS_HEADERS.get((op_id, int(status)), {})}




# -- words and examples ------------------------------------------------------------------

TAGS = [
    {"name": "contact lists", "description": "Named groups of contacts. A contact can be in many lists;"
                                             " `contactCount` counts a list's active members exactly."},
    {"name": "contacts", "description": "Contacts: a phone number (stored in E.164) with a name, email, tags"
                                        " and notes. Deleting moves a contact to the trash; purging erases it."},
    {"name": "export", "description": "The account's active contacts as a CSV download, as JSON, or mailed as a"
                                      " file. The downloads take the filters of `GET /contacts`."},
    {"name": "import", "description": "Bulk imports from a .csv/.xlsx file or from JSON, the import job, and"
                                      " its row-by-row report."},
    {"name": "bulk actions", "description": "Act on many contacts at once, by `ids` or on every contact"
                                          " matching a `filter` (the filters of `GET /contacts`, or"
                                          " `{\"all\": true}`): tag, untag, opt out, opt in. Past 1,000 matches"
                                          " the action runs as a job (202) whose progress you poll."},
    {"name": "operations", "description": "Liveness, readiness, Prometheus metrics and the AsyncAPI document"
                                          " of the events. No token needed."},
]

LIST_ID = "b006036d-5f2a-4c8e-9d1b-6a7c3e2f8a90"
LIST_ID_2 = "3c1d7e52-9a0b-4f6e-8c2d-51b7a9e3f046"
CONTACT_ID = "6e940735-4c1f-4d5e-9a51-3f0b8f6a2c11"
CONTACT_ID_2 = "d2a4f6b8-0c1e-4a3b-8d5f-7e9a1c3b5d70"
IMPORT_ID = "0b7f2c1e-8a43-4d2b-9f5e-2d8c1a7e9b30"
WHEN = "2026-11-27T07:13:33.563529Z"
LATER = "2026-11-27T09:02:11.204113Z"

LIST = {"id": LIST_ID, "name": "VIP Customers", "description": "Customers who spend over KES 10,000/month",
        "contactCount": 42, "createdAt": WHEN, "updatedAt": WHEN}
KENYAN = {"id": CONTACT_ID, "firstName": "John", "lastName": "Doe", "phone": "+254712345678",
          "email": "john@example.com", "tags": ["vip", "nairobi"], "notes": "Prefers Swahili", "isOptedOut": False,
          "status": "valid", "invalidReason": None, "operator": "Safaricom", "country": "KE", "listIds": [LIST_ID],
          "createdAt": WHEN, "updatedAt": WHEN, "deletedAt": None}
NIGERIAN = {"id": CONTACT_ID_2, "firstName": "Ngozi", "lastName": "Okafor", "phone": "+2348031234567",
            "email": "ngozi.okafor@example.com.ng", "tags": ["lagos"], "notes": None, "isOptedOut": False,
            "status": "valid", "invalidReason": None, "operator": "MTN", "country": "NG", "listIds": [],
            "createdAt": LATER, "updatedAt": LATER, "deletedAt": None}
RESULT = {"imported": 1994, "valid": 1990, "invalid": 4, "skipped": 17, "rows": 2011, "importId": IMPORT_ID,
          "status": "completed", "reportUrl": f"/api/v1/contacts/imports/{IMPORT_ID}/report.csv"}
JOB = {"id": IMPORT_ID, "status": "running", "source": "csv", "filename": "customers-november.csv",
       "listId": LIST_ID, "counts": {"rows": 1000, "imported": 988, "valid": 986, "invalid": 2, "skipped": 12},
       "error": None, "createdAt": WHEN, "updatedAt": LATER, "finishedAt": None,
       "reportUrl": f"/api/v1/contacts/imports/{IMPORT_ID}/report.csv"}
HISTORY = [
    {"version": 1, "type": "contacts.contact.created.v1", "time": WHEN, "actor": "jane@shop.co.ke",
     "requestId": "7d1c2e9a4b", "data": {"phone": "+254712345678", "firstName": "John", "lastName": "Doe",
                                         "email": "john@example.com",
              "notes": None, "tags": ["vip", "nairobi"], "listIds": [LIST_ID], "isOptedOut": False,
              "status": "valid", "operator": "Safaricom", "country": "KE"}},
    {"version": 2, "type": "contacts.contact.opted_out.v1", "time": LATER, "actor": "inbound-sms",
     "requestId": "sms-ATXid_4f2a", "data": {"reason": "STOP"}},
]
COUNTS_RULE = ("Counts only the contacts it changed: ids that are unknown, of another account, or already in the"
               " wanted state are skipped, not refused.")


class Doc:
    """The words of one operation: summary, description, examples and parameter descriptions."""

    def __init__(self, summary: str, description: str, *, request: dict[str, Any] | None = None,
                 response: Any = None, status: int | None = None, parameters: dict[str, str] | None = None,
                 body_fields: dict[str, str] | None = None, empty: int | None = None):
        self.summary, self.description = summary, description
        self.body_fields = body_fields or {}  # an inline request schema's field descriptions
        self.empty = empty  # a success status answered with no body
        self.request = request or {}  # example name → body
        self.response, self.status = response, status
        self.parameters = parameters or {}


BULK_RULE = ("Up to 1,000 matches it is done at once and answers 200 with the exact count; past that it runs"
             " as a job: 202 with the job, `Location` naming it, and a `contacts.bulk_action.completed.v1` event"
             " when it ends. A filter is read when the request arrives.")

FILTERS = {
    "search": "Case-insensitive substring of the first name, last name or full name. A term that reads as a"
              " phone number (digits with spaces, `+`, `-`, `.` or parentheses, at least 3 digits) searches"
              " the phone instead, in E.164 digits (`254712`) or as written nationally (`0712`); a term mixing"
              " letters and digits (`Ryw1`) searches names only.",
    "listId": "Only contacts in this list.",
    "isOptedOut": "`true`: only opted-out contacts; `false`: only those who may be messaged.",
    "tags": "Comma-separated tags (cleaned like stored tags: trimmed, lower-case); a contact must have all of them.",
}
LIST_PATH = {"list_id": "The list's id"}
CONTACT_PATH = {"contact_id": "The contact's id"}
IMPORT_PATH = {"import_id": "The import's id (`importId` of the import's answer)"}

OPERATIONS: dict[str, Doc] = {
    "listContactLists": Doc(
        "List the contact lists", "Every contact list of the account, oldest first (no paging).",
        response=[LIST, {**LIST, "id": LIST_ID_2, "name": "Newsletter Subscribers",
                         "description": "Opted-in newsletter audience", "contactCount": 1250}]),
    "createContactList": Doc(
        "Create a contact list", "Creates an empty list; the answer is the list, and `Location` names it. The"
        " name is trimmed and must not be empty; the description is optional.",
        request={"newsletter": {"name": "Newsletter Subscribers", "description": "Opted-in newsletter audience"}},
        response={**LIST, "id": LIST_ID_2, "name": "Newsletter Subscribers",
                  "description": "Opted-in newsletter audience", "contactCount": 0}, status=201,
        ),
    "updateContactList": Doc(
        "Rename or describe a contact list", "Changes the fields sent: a field left out stays as it is, and"
        " `description: null` clears the description. Another account's list answers 404.",
        request={"rename": {"name": "VIP Customers (Nairobi)"},
                 "both": {"name": "Newsletter Subscribers (updated)", "description": "Updated description"}},
        response={**LIST, "name": "VIP Customers (Nairobi)", "updatedAt": LATER}, parameters=LIST_PATH),
    "getContactList": Doc(
        "Read a contact list", "One contact list of the account, with its exact `contactCount`. The `ETag`"
        " header carries the list's version: send it back as `If-Match` on PATCH or DELETE to change the"
        " list only if nobody changed it since. Another account's list answers 404.",
        response=LIST, parameters=LIST_PATH),
    "getContactListHistory": Doc(
        "Read a contact list's history", "Every event of the list, oldest first, also after it was deleted:"
        " created, renamed, described, deleted. Who joined or left the list is in the members' histories.",
        response=[{"version": 1, "type": "contacts.contact_list.created.v1", "time": WHEN, "actor": "jane@shop.co.ke",
                   "requestId": "7d1c2e9a4b", "data": {"name": "VIP Customers", "description": None}}],
        parameters=LIST_PATH),
    "deleteContactList": Doc(
        "Delete a contact list", "Deletes the list. Its contacts stay in the account and in their other lists;"
        " the list's id disappears from their `listIds`. Answers 204 with no body.", parameters=LIST_PATH),
    "addContactsToList": Doc(
        "Add contacts to a list", "Adds the contacts to the list. " + COUNTS_RULE + " Safe to repeat.",
        request={"two": {"contactIds": [CONTACT_ID, CONTACT_ID_2]}}, response={"added": 2},
        parameters=LIST_PATH),
    "removeContactsFromList": Doc(
        "Remove contacts from a list", "Takes the contacts out of the list; they stay in the account. "
        + COUNTS_RULE, request={"one": {"contactIds": [CONTACT_ID]}}, response={"removed": 1},
        parameters=LIST_PATH),
    "listContacts": Doc(
        "List and search contacts", "A page of the account's active contacts (not the trash), newest first"
        " (`createdAt`, then `id`), with the exact `total` of matches read in the same snapshot. Filters"
        " combine with AND. `pageSize` above 100 is a 422, not clamped.",
        response={"contacts": [NIGERIAN, KENYAN], "total": 150, "page": 1, "pageSize": 25},
        parameters={**FILTERS, "page": "Page number, from 1.", "pageSize": "Contacts per page, 1 to 100."}),
    "listContactTags": Doc(
        "List the tags in use", "Distinct tags of the account's active contacts, sorted.",
        response=["lagos", "nairobi", "newsletter", "vip"]),
    "listTrash": Doc(
        "List the trash", "Every trashed contact of the account, most recently trashed first, with"
        " `deletedAt` (no paging). Trashed contacts keep their number and their lists, and are purged"
        " automatically after the retention period (90 days by default).",
        response=[{**KENYAN, "deletedAt": LATER, "updatedAt": LATER}]),
    "restoreContacts": Doc(
        "Restore contacts from the trash", "Brings trashed contacts back, with their lists and tags (list counts"
        " include them again). " + COUNTS_RULE, request={"two": {"ids": [CONTACT_ID, CONTACT_ID_2]}},
        response={"restored": 2}),
    "purgeContacts": Doc(
        "Purge contacts for good", "Erases trashed contacts: their personal data is deleted from the event"
        " store (its key is destroyed), the read tables and the NATS stream, and their numbers are free again."
        " An opt-out outlives the purge: a new contact with the same number starts opted out. Only contacts"
        " already in the trash are purged; active ones are untouched and not counted.",
        request={"one": {"ids": [CONTACT_ID]}}, response={"purged": 1}),
    "bulkTagContacts": Doc(
        "Tag many contacts", "Adds `tags` to the active contacts named by `ids`, or to every active contact"
        " matching `filter` (exactly one of the two; an empty filter is a 422, never \"everything\": send"
        " `{\"all\": true}` for that). " + BULK_RULE + " Counts the contacts that gained at least one tag.",
        request={"by filter": {"tags": ["vip"], "filter": {"listId": LIST_ID}},
                 "by ids": {"tags": ["nairobi"], "ids": [CONTACT_ID, CONTACT_ID_2]}},
        response={"tagged": 2}),
    "bulkUntagContacts": Doc(
        "Untag many contacts", "Removes `tags` from the contacts named by `ids` or matching `filter`. "
        + BULK_RULE + " Counts the contacts that lost at least one tag.",
        request={"by filter": {"tags": ["promo"], "filter": {"tags": ["promo"], "isOptedOut": True}}},
        response={"untagged": 128}),
    "bulkOptOutContacts": Doc(
        "Opt many contacts out", "Opts out the contacts named by `ids` or matching `filter`: they are not to"
        " be messaged. " + BULK_RULE + " Counts the contacts that were not opted out already.",
        request={"by filter": {"filter": {"tags": ["unsubscribed-in-crm"]}}}, response={"optedOut": 37}),
    "bulkOptInContacts": Doc(
        "Opt many contacts back in", "Lifts the opt-out of the contacts named by `ids` or matching `filter`. "
        + BULK_RULE + " Counts the contacts that were opted out.",
        request={"by ids": {"ids": [CONTACT_ID]}}, response={"optedIn": 1}),
    "getBulkAction": Doc(
        "Read a bulk action's job", "A bulk action that matched more than 1,000 contacts runs as a job: its"
        " `status` (queued, running, completed, failed), how many contacts `matched` when it was asked, how"
        " many it has `processed` and how many of those it `changed`. Another account's job answers 404.",
        response={"id": IMPORT_ID, "action": "tag", "status": "running", "matched": 42000, "processed": 4000,
                  "changed": 3990, "error": None, "createdAt": WHEN, "updatedAt": LATER, "finishedAt": None},
        parameters={"job_id": "The job's id (from `Location` of the 202 answer)"}),
    "bulkDeleteContacts": Doc(
        "Move contacts to the trash", "Moves active contacts to the trash. " + COUNTS_RULE,
        request={"three": {"ids": [CONTACT_ID, CONTACT_ID_2, "9e1f3a5c-7b2d-4e6f-a8c0-1d3e5f7a9b2c"]}},
        response={"deleted": 2}),
    "deleteContact": Doc(
        "Move a contact to the trash", "Moves one active contact to the trash (204, no body); it can be"
        " restored until it is purged. 404 if it is not an active contact of the account (already trashed,"
        " unknown, or another account's).", parameters=CONTACT_PATH),
    "getContact": Doc(
        "Read a contact", "One active contact of the account. With `asOf` or `version`, the contact as it"
        " was then, rebuilt from its events (also a trashed or purged one); that answer adds `version`,"
        " `erased` (its personal fields are gone for good) and `purged`.",
        response=KENYAN, parameters={**CONTACT_PATH, "asOf": "An RFC 3339 time with a zone (`2026-11-27T08:00:00Z`):"
                                     " the contact as it was then. 404 for a time before it existed.",
                                     "version": "The contact after this event version (from 1). 404 past the"
                                                " latest."}),
    "getContactHistory": Doc(
        "Read a contact's history", "Every event of the contact, oldest first (also when trashed or purged):"
        " `version`, `type`, `time`, `actor` (the token's `sub`), `requestId` and `data`. The personal fields of"
        " a purged contact read as erased.", response=HISTORY, parameters=CONTACT_PATH),
    "createContact": Doc(
        "Create a contact", "Creates a contact from a phone number as people write it: `0712 345 678` is read"
        " in the default region (KE unless configured) or in `region`; `+234 803 123 4567` carries its own"
        " country; a leading `00` is the international prefix. The answer holds the number in E.164 with its"
        " operator and country, and `Location` names the contact. One contact per number per account: a number"
        " already held (also in the trash) is a 409 `phone_taken` naming the holder. Tags are trimmed,"
        " lower-cased and de-duplicated; an empty text means no value.",
        request={"kenyan": {"phone": "0712 345 678", "firstName": "John", "lastName": "Doe",
                            "email": "john@example.com", "tags": ["VIP", " nairobi "], "notes": "Prefers Swahili",
                            "listIds": [LIST_ID]},
                 "nigerian": {"phone": "+234 803 123 4567", "firstName": "Ngozi", "lastName": "Okafor",
                              "email": "ngozi.okafor@example.com.ng", "tags": ["lagos"]},
                 "national number of another region": {"phone": "0803 123 4567", "region": "NG",
                                                       "firstName": "Emeka"}},
        response=KENYAN, status=201),
    "updateContact": Doc(
        "Change a contact", "Changes the fields sent; a field left out stays as it is and `null` clears an"
        " optional one. `listIds` replaces the memberships (send them all). A new `phone` is checked like on"
        " create (422 invalid, 409 taken).",
        request={"new number": {"phone": "0722 000 111"},
                 "memberships": {"listIds": [LIST_ID, LIST_ID_2], "tags": ["vip"], "notes": None},
                 "opt out": {"isOptedOut": True}},
        response={**KENYAN, "phone": "+254722000111", "updatedAt": LATER}, parameters=CONTACT_PATH),
    "exportContactsCsv": Doc(
        "Download contacts as CSV", "The matching active contacts, newest first, as a CSV file with the"
        " columns `first_name,last_name,phone,email,tags,notes` (tags joined with `;`). Cells a spreadsheet"
        " would run as a formula get a leading `'` (imports take it away again). Streams any size.",
        response="first_name,last_name,phone,email,tags,notes\r\nJohn,Doe,+254712345678,john@example.com,"
                 "vip;nairobi,Prefers Swahili\r\n", parameters=FILTERS),
    "exportContactsJson": Doc(
        "Export contacts as JSON", "The matching active contacts, newest first, as one JSON array of"
        " `GET /contacts` items (for the export wizard). Streams any size.",
        response=[NIGERIAN, KENYAN], parameters=FILTERS),
    "emailContactsExport": Doc(
        "Mail an export file", "Mails a file the client built (CSV, JSON, XLSX or ZIP, base64-encoded) to"
        " `email`. 503 when no mail provider is configured, 413 above the size limit (10 MiB decoded by"
        " default), 429 past the hourly sends per account (20 by default), 502 when the provider refuses or"
        " cannot be reached; only accepted sends count against the limit. Answers 200 with no body.",
        request={"csv": {"email": "jane@shop.co.ke", "filename": "contacts-2026-11-27.csv",
                         "fileBase64": "Zmlyc3RfbmFtZSxsYXN0X25hbWUscGhvbmUKSm9obixEb2UsKzI1NDcxMjM0NTY3OAo=",
                         "mimeType": "text/csv", "count": 1}},
        body_fields={"email": "Where to send it", "filename": "The attachment's name: no path separators or"
                     " control characters, at most 200 characters", "fileBase64": "The file, base64-encoded",
                     "mimeType": "`text/csv`, `application/json`, `application/zip` or the XLSX type",
                     "count": "Contacts in the file, said in the mail"}, empty=200),
    "importContactsFile": Doc(
        "Import a CSV or Excel file", "Imports the contacts of a .csv (UTF-8 or Windows-1252; `,` `;` tab or"
        " `|`) or .xlsx file sent as multipart field `file`. Columns are matched by header (phone, mobile,"
        " msisdn, first_name, surname, email, tags, notes, opted_out, …) or by `mapping`. A duplicate number"
        " (in the file or the account), a missing or unreadable phone, or a too-long field skips the row; the"
        " report says why, never with the row's values. Answers 201 when done with the counts (`imported` ="
        " `valid` + `invalid`; `rows` read), or with `Prefer: respond-async` 202 at once with the queued job."
        " `Idempotency-Key` makes a retry safe.", response=RESULT, status=201),
    "importContactsJson": Doc(
        "Import contacts sent as JSON", "Imports up to 100,000 contacts sent as JSON (the web wizard's path"
        " after mapping a file in the browser), with the rules and counts of the file import. Numbers may be"
        " sent as numbers, as spreadsheets give them.",
        request={"wizard": {"contacts": [{"phone": "0712 345 678", "firstName": "John", "lastName": "Doe",
                                          "tags": ["vip"]},
                                         {"phone": 254722000111, "firstName": "Wanjiku"},
                                         {"phone": "+234 803 123 4567", "firstName": "Ngozi",
                                          "email": "ngozi.okafor@example.com.ng"}],
                            "listId": LIST_ID}},
        response={**RESULT, "imported": 3, "valid": 3, "invalid": 0, "skipped": 0, "rows": 3}, status=201),
    "getImport": Doc(
        "Read an import job", "An import's status (`running`, `completed`, `failed`), its counts so far, its"
        " error if it failed, and where its report is. Poll it after a 202.", response=JOB,
        parameters=IMPORT_PATH),
    "getImportReport": Doc(
        "Download an import's report", "One CSV line per skipped or flagged row: `row` (counting non-empty"
        " data rows from 1), `outcome`, `reason` (`missing_phone`, `unparseable_phone`, `duplicate_in_file`,"
        " `already_exists`, `field_too_long`, `invalid_email_dropped`), `detail` and `contact_id`.",
        response="row,outcome,reason,detail,contact_id\r\n4,skipped,already_exists,the account already has a"
                 f" contact with this number,{CONTACT_ID}\r\n9,skipped,missing_phone,the row has no phone number,\r\n",
        parameters=IMPORT_PATH),
    "getHealth": Doc("Check the process is alive", "Answers 200 while the process runs; no token needed.",
                     response={"status": "ok"}),
    "getReadiness": Doc("Check the service is ready", "200 when PostgreSQL and NATS are reachable; otherwise 503"
                                                      " with `checks` naming which is not.",
                      response={"status": "ready", "checks": {"database": "ok", "nats": "ok"}}),
    "getMetrics": Doc(
        "Prometheus metrics", "Request latency, projection lag, relay lag, the event store head,"
        " `contacts_database_up`, `contacts_create_groups_total` / `contacts_grouped_creates_total`"
        " (statements that stored a group of creates, and the creates they stored: their ratio is the mean"
        " group's size) and `contacts_write_groups_total` / `contacts_grouped_writes_total` (the same for"
        " the other single writes). While the database is away it still answers, with the lags as NaN."),
    "getAsyncApi": Doc(
        "AsyncAPI document of the events", "The AsyncAPI 3.0 document of what the service publishes to NATS"
        " (and the inbound SMS it consumes): channels, CloudEvents headers, payload schemas and examples."),
}

# Descriptions of each component schema's fields (and of the schema itself, under "").
FIELDS: dict[str, dict[str, str]] = {
    "ContactListCreate": {"": "A new contact list.", "name": "1 to 200 characters after trimming",
                          "description": "Up to 2,000 characters; shown beside the name"},
    "ContactListUpdate": {"": "The fields to change; a field left out stays as it is.",
                          "name": "1 to 200 characters after trimming", "description": "`null` clears it"},
    "ContactListOut": {"": "A contact list.", "id": "The list's id", "name": "The list's name",
                       "description": "Shown beside the name", "contactCount": "Active members (not in the trash)",
                       "createdAt": "RFC 3339, UTC", "updatedAt": "RFC 3339, UTC"},
    "ContactIds": {"": "Contacts to add to or remove from a list.", "contactIds": "Up to 10,000 contact ids"},
    "IdList": {"": "The contacts to act on.", "ids": "Up to 10,000 contact ids"},
    "BulkSelection": {"": "The contacts to act on: `ids` or `filter`, exactly one.",
                      "ids": "Up to 10,000 contact ids", "filter": "Every active contact matching it"},
    "BulkTagging": {"": "Tags to add or remove, and the contacts: `ids` or `filter`, exactly one.",
                    "ids": "Up to 10,000 contact ids", "filter": "Every active contact matching it",
                    "tags": "1 to 100 tags, cleaned like stored tags"},
    "BulkFilter": {"": "The filters of `GET /contacts` (combined with AND), or `all`; at least one.",
                   "listId": "Only contacts in this list", "tags": "Only contacts with all these tags",
                   "isOptedOut": "Only opted-out (true) or messageable (false) contacts",
                   "search": "As `search` of `GET /contacts`", "all": "true: every active contact of the account"},
    "Tagged": {"": "How many contacts gained a tag.", "tagged": "Contacts that gained at least one tag"},
    "Untagged": {"": "How many contacts lost a tag.", "untagged": "Contacts that lost at least one tag"},
    "OptedOutCount": {"": "How many contacts were opted out.", "optedOut": "Contacts not opted out before"},
    "OptedInCount": {"": "How many contacts were opted back in.", "optedIn": "Contacts that were opted out"},
    "BulkActionJob": {"": "A bulk action running as a job.", "id": "The job's id", "action": "What it does:"
                      " delete, add_to_list, remove_from_list, tag, untag, opt_out or opt_in",
                      "status": "queued, running, completed or failed",
                      "matched": "Contacts matching the filter when the action was asked",
                      "processed": "Contacts processed so far", "changed": "Of those, contacts it changed",
                      "error": "Why it failed (null unless failed)", "createdAt": "RFC 3339, UTC",
                      "updatedAt": "RFC 3339, UTC", "finishedAt": "RFC 3339, UTC; null while it runs"},
    "Added": {"": "How many contacts joined the list.", "added": "Contacts newly added to the list"},
    "Removed": {"": "How many contacts left the list.", "removed": "Contacts that were in the list and are not"
                                                                  " any more"},
    "Deleted": {"": "How many contacts went to the trash.", "deleted": "Active contacts moved to the trash"},
    "Restored": {"": "How many contacts came back.", "restored": "Trashed contacts brought back"},
    "Purged": {"": "How many contacts were erased.", "purged": "Trashed contacts erased for good"},
    "ContactCreate": {
        "": "A new contact. Unknown fields are refused (422), so a typo is not silently ignored.",
        "phone": "As people write it: `0712 345 678`, `+254 712 345 678`, `00254712345678`, `+234 803 123 4567`",
        "region": "Two-letter region (ISO 3166-1) of a number written without a country code; default KE",
        "firstName": "Up to 200 characters", "lastName": "Up to 200 characters",
        "email": "Must look like a@b.c; stored lower-case", "notes": "Up to 5,000 characters",
        "tags": "Up to 100 tags of 64 characters, without `,` or `;`; trimmed, lower-cased, de-duplicated",
        "listIds": "Lists of this account to add the contact to (422 `unknown_lists` otherwise)",
        "isOptedOut": "Whether the contact asked not to receive messages"},
    "ContactUpdate": {
        "": "The fields to change; a field left out stays as it is and `null` clears an optional one.",
        "phone": "A new number, as people write it", "region": "Region of a number without a country code",
        "firstName": "Up to 200 characters", "lastName": "Up to 200 characters",
        "email": "Must look like a@b.c", "notes": "Up to 5,000 characters", "tags": "Replaces the tags",
        "listIds": "Replaces the memberships", "isOptedOut": "Whether the contact asked not to receive messages"},
    "ContactOut": {
        "": "A contact.", "id": "The contact's id", "firstName": "First name", "lastName": "Last name",
        "phone": "E.164 (`+254712345678`)", "email": "Lower-case", "tags": "Lower-case, in the order first given",
        "notes": "Free text", "isOptedOut": "Whether the contact asked not to receive messages",
        "status": "`valid`, or `invalid` when no known operator has the number's prefix",
        "invalidReason": "`unknown_network` when `status` is `invalid`",
        "operator": "Mobile network operator (`Safaricom`, `Airtel`, `MTN`, …)", "country": "ISO 3166-1 code",
        "listIds": "Lists the contact is in", "createdAt": "RFC 3339, UTC", "updatedAt": "RFC 3339, UTC",
        "deletedAt": "When it was moved to the trash; `null` when active"},
    "ContactPage": {"": "A page of contacts.", "contacts": "Newest first", "total": "Every match, exactly",
                    "page": "This page's number", "pageSize": "Contacts per page"},
    "HistoryEntry": {"": "One stored event.", "version": "The aggregate's version after this event, from 1",
                     "type": "What happened: the event's CloudEvents type (`contacts.contact.created.v1`, …)",
                     "time": "When it was stored (RFC 3339, UTC)", "actor": "The token's `sub`",
                     "requestId": "The request's `X-Request-Id`", "data": "What changed"},
    "BulkImport": {"": "Contacts to import, as JSON.", "contacts": "Up to 100,000 contacts",
                   "listId": "Add every imported contact to this list",
                   "region": "Region of numbers written without a country code"},
    "BulkContact": {"": "One contact to import; a row that breaks a rule is skipped, not refused.",
                    "phone": "A string as people write it, or a number (as spreadsheets give it)",
                    "firstName": "First name", "lastName": "Last name",
                    "email": "Dropped (and reported) when not valid", "tags": "Tags; a value with `,` or `;` is"
                    " several tags", "notes": "Free text", "isOptedOut": "Keep the contact's opt-out"},
    "ImportResult": {"": "What an import did.", "imported": "Contacts stored (= `valid` + `invalid`)",
                     "valid": "Stored with a known operator", "invalid": "Stored, but no known operator",
                     "skipped": "Rows not stored (see the report)", "rows": "Data rows read",
                     "importId": "The import job", "status": "`completed`", "reportUrl": "The row-by-row report"},
    "ImportCounts": {"": "An import's counts so far.", "rows": "Data rows read",
                     "imported": "Contacts stored (= `valid` + `invalid`)", "valid": "Stored with a known operator",
                     "invalid": "Stored, but no known operator", "skipped": "Rows not stored"},
    "ImportJob": {"": "An import job.", "id": "The job's id", "status": "`running`, `completed` or `failed`",
                  "source": "`csv`, `xlsx` or `json`", "filename": "The uploaded file's name",
                  "listId": "The list every imported contact joins", "counts": "Progress so far",
                  "error": "Why it failed", "createdAt": "RFC 3339, UTC", "updatedAt": "RFC 3339, UTC",
                  "finishedAt": "When it completed or failed", "reportUrl": "The row-by-row report"},
}


# Litestar's stock descriptions of a success (http.server's phrases) and what the service says instead.
SUCCESS = {"Request fulfilled, document follows": "OK", "Stream Response": "OK, streamed",
           "Document created, URL follows": "Created; `Location` names it",
           "Request fulfilled, nothing follows": "Done; the answer has no body"}


def _words(operation: dict[str, Any], doc: Doc) -> None:
    operation["summary"], operation["description"] = doc.summary, doc.description
    for response in operation["responses"].values():
        response["description"] = SUCCESS.get(response["description"], response["description"])
    for parameter in operation.get("parameters", []):
        if parameter["name"] in doc.parameters:
            parameter["description"] = doc.parameters[parameter["name"]]
            parameter.get("schema", {}).pop("description", None)  # one description, the parameter's
    for field, description in doc.body_fields.items():
        operation["requestBody"]["content"]["application/json"]["schema"]["properties"][field]["description"] = \
            description
    if doc.request:
        body = operation["requestBody"]["content"]["application/json"]
        body["examples"] = {name: {"summary": name, "value": value} for name, value in doc.request.items()}
    if doc.empty is not None:
        operation["responses"][str(doc.empty)].pop("content", None)
        operation["responses"][str(doc.empty)]["description"] = "Done; the answer has no body."
    if doc.response is not None:
        status = str(doc.status or min(s for s in operation["responses"] if s.startswith("2")))
        for media in operation["responses"][status].get("content", {}).values():
            media["example"] = doc.response


def _fields(schemas: dict[str, Any]) -> None:
    for name, fields in FIELDS.items():
        schema = schemas[name]
        if "" in fields:
            schema["description"] = fields[""]
        for field, description in fields.items():
            if field:
                schema["properties"][field]["description"] = description


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Complete the generated document in place (and return it); running it twice changes nothing more."""
    document["tags"] = TAGS
    schemas = document["components"]["schemas"]
    schemas["ErrorBody"], schemas["ErrorDetail"] = ERROR_BODY_SCHEMA, ERROR_DETAIL_SCHEMA
    _fields(schemas)
    for item in document["paths"].values():
        for operation in item.values():
            codes = ERRORS.get(operation["operationId"])
            if codes is not None:
                _errors(operation, codes)
            _headers(operation)
            _words(operation, OPERATIONS[operation["operationId"]])
    return document


# -- docs/api.md ---------------------------------------------------------------------------

INTRO = """# HTTP API reference

Generated from the service's OpenAPI document (`python -m service.api_docs` writes this
file; a test keeps it equal to the document). The same words, with schemas and "Try it
out", are served by the running service at `/schema/swagger` (the document itself at
`/schema/openapi.json`); the events are in [events.md](events.md).

The API serves one account per bearer token: every `/api/v1` request needs
`Authorization: Bearer <token>`, and the token's `account_id` claim is the account.
Another account's ids answer 404, as ids that do not exist do. Bodies are JSON in
camelCase; unknown fields are refused (422). Phones are answered in E.164; times are
RFC 3339 in UTC (`2026-11-27T07:13:33.563529Z`). Every write answers after the read
tables show it, so the next read, on any replica, sees it.

## Errors

Every error answer has one shape, `ErrorBody`:

```json
{"status": 422, "error": "invalid_phone", "message": "phone '0712 345' is invalid: too short",
 "errors": [{"field": "phone", "reason": "phone '0712 345' is invalid: too short"}]}
```

`errors` names each field at fault and is left out when no single field is. Some codes
add keys (named below). Each operation lists the codes it can answer; these are all of
them:
"""
HEADERS = """
## Headers

| header | where | meaning |
|---|---|---|
| `X-Request-Id` | request (optional) and every answer | your id for the request (first 100 characters kept), or one the service made; recorded on every event the request stores |
| `Idempotency-Key` | request: both imports | a retry with the same key and request answers 200 with the first result |
| `Prefer: respond-async` | request: file import | answer 202 at once with the queued job |
| `Location` | 201 and 202 answers | the new list, contact or import job |
| `Retry-After` | 429, and 503 `database_unavailable` and `auth_unavailable` | seconds to wait |
| `WWW-Authenticate: Bearer` | 401 | |
| `Content-Disposition` | CSV downloads | `attachment` with a file name |
"""


def _json(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```\n"


def markdown(document: dict[str, Any]) -> str:
    """docs/api.md: the document's words, examples and error lists as one Markdown page."""
    lines = [INTRO, "| status | code | when |", "|---|---|---|"]
    lines += [f"| {c.status} | `{code}` | {c.when} |" for code, c in sorted(CODES.items(),
                                                                           key=lambda i: (i[1].status, i[0]))]
    lines.append(HEADERS)
    for tag in document["tags"]:
        lines += [f"## {tag['name'][:1].upper()}{tag['name'][1:]}", "", tag["description"], ""]
        for path, item in document["paths"].items():
            for method, op in item.items():
                if op["tags"] != [tag["name"]]:
                    continue
                lines += [f"### {op['summary']}", "", f"`{method.upper()} {path}`", "", op["description"], ""]
                parameters = [p for p in op["parameters"] if p["name"] != "X-Request-Id"]
                if parameters:
                    lines += ["| parameter | in | meaning |", "|---|---|---|"]
                    lines += [f"| `{p['name']}` | {p['in']} | {p['description']} |" for p in parameters]
                    lines.append("")
                for name, example in op.get("requestBody", {}).get("content", {}).get(
                        "application/json", {}).get("examples", {}).items():
                    lines += [f"Request ({name}):", "", _json(example["value"])]
                for status, response in op["responses"].items():
                    if int(status) >= 400:
                        continue
                    lines.append(f"**{status}** {response['description']}")
                    lines.append("")
                    for media, content in response.get("content", {}).items():
                        if "example" in content:
                            example = content["example"]
                            lines.append(_json(example) if media == "application/json" else
                                         f"```\n{example}```\n".replace("\r\n", "\n"))
                errors = [f"{status} `{code}`" for status, response in op["responses"].items() if int(status) >= 400
                          for code in response["content"]["application/json"]["schema"].get("allOf", [{}, {
                              "properties": {"error": {"enum": []}}}])[1]["properties"]["error"]["enum"]]
                if errors:
                    lines += ["Errors: " + ", ".join(errors) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    import types
    from pathlib import Path

    from litestar.testing import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(types.SimpleNamespace(settings=Settings()))) as client:  # type: ignore[arg-type]
        Path("docs/api.md").write_text(markdown(client.get("/schema/openapi.json").json()))

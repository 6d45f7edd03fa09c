"""The HTTP error contract in one place: each domain error's status, and every code the service answers.

Domain errors (``command.errors.DomainError`` and its subclasses) say *what* went wrong
(``code``, ``message``, ``field``); this module says which HTTP status each one is.
``service.error_handlers`` answers with ``status_of`` and the OpenAPI document (``service.api_docs``)
lists, per operation, the codes of ``CODES`` with their status and when they happen, so the
document and the answers come from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

from command.errors import (
    ConcurrencyError,
    DomainError,
    InvalidPhoneError,
    NotFoundError,
    PhoneTakenError,
    PreconditionFailedError,
    UnknownListsError,
    ValidationError,
)
from command.imports.formats import FileFormatError, UnsupportedFileError
from command.imports.service import IdempotencyKeyReusedError, ImportInProgressError
from service.exports import AttachmentTooLargeError, MailDeliveryError, MailNotConfiguredError
from service.spool import SpoolUnavailableError
from service.uploads import MalformedUploadError

# Every DomainError class the service defines, with its HTTP status (tests/integration/test_api_docs.py
# checks none is missing: an unmapped one would answer 500).
STATUS: dict[type[DomainError], int] = {
    DomainError: 400,
    NotFoundError: 404,
    ValidationError: 422,
    InvalidPhoneError: 422,
    UnknownListsError: 422,
    PhoneTakenError: 409,
    ConcurrencyError: 409,
    UnsupportedFileError: 415,
    FileFormatError: 422,
    ImportInProgressError: 409,
    IdempotencyKeyReusedError: 422,
    PreconditionFailedError: 412,
    AttachmentTooLargeError: 413,
    MailNotConfiguredError: 503,
    MailDeliveryError: 502,
    MalformedUploadError: 400,
    SpoolUnavailableError: 503,
}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error: its own class's entry, else its nearest mapped base's."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


@dataclass(frozen=True)
class Code:
    """One error code of the ``ErrorBody``: its status and, in words, when the service answers it."""

    status: int
    when: str


# Every ``error`` code an answer may carry. Codes of domain errors take their status from STATUS.
CODES: dict[str, Code] = {
    "malformed_body": Code(400, "The body is not valid JSON (or is empty, cut off mid-value, nested too"
                                " deeply), or the multipart body of a file upload is malformed."),
    "unauthorized": Code(401, "The bearer token is missing, malformed, expired or wrongly signed, or lacks"
                              " the `sub` or `account_id` claim; `message` says which. Sent with"
                              " `WWW-Authenticate: Bearer`."),
    "not_found": Code(404, "No such resource in this account. Another account's ids answer the same, so"
                           " ids never reveal what other accounts hold."),
    "phone_taken": Code(409, "Another contact of the account (active or in the trash) already has this number;"
                             " `contactId` names it."),
    "concurrent_modification": Code(409, "Concurrent writers to the same contact, list or number won the race"
                                         " several times in a row; nothing was written: retry the request."),
    "import_in_progress": Code(409, "An import with this `Idempotency-Key` is still running; `importId` names"
                                    " it: poll `GET /contacts/imports/{importId}`."),
    "import_failed": Code(422, "The import stopped part-way: the file turned out unreadable further on, or"
                               " concurrent writers kept taking the same numbers. The body adds `importId`,"
                               " the counts of what was stored (`imported`, `valid`, `invalid`, `skipped`,"
                               " `rows`) and `reportUrl`; what was stored stays."),
    "precondition_failed": Code(412, "`If-Match` names a version of the contact or list that is no longer the"
                                     " current one (someone changed it since you read it); `currentEtag` and"
                                     " the `ETag` header name the current version. Nothing was written."),
    "payload_too_large": Code(413, "The body is larger than this endpoint accepts; `message` names the limit."),
    "unsupported_file": Code(415, "The upload is not a CSV or XLSX file (its content is read, not its name)."),
    "validation_failed": Code(422, "A field, query parameter or header breaks a rule (type, length, pattern,"
                                   " unknown field, empty name, bad email or region); `errors` names each"
                                   " one."),
    "invalid_phone": Code(422, "The phone number cannot be read as a number of its region; `message` gives"
                               " libphonenumber's reason (too short, not a valid number for region KE, …)."),
    "unknown_lists": Code(422, "`listIds` (or `listId`) names a list that does not exist, was deleted or is"
                               " another account's; `unknownListIds` lists them. Nothing is written."),
    "invalid_file": Code(422, "The file is a CSV or XLSX file that cannot be imported as it is: no phone"
                              " column, an unknown `mapping` field, too many columns, a record or workbook"
                              " past the limits, a corrupt or encrypted workbook. `message` says which."),
    "idempotency_key_reused": Code(422, "This `Idempotency-Key` was first used for a different request (other"
                                        " file, list, mapping, region or body); `importId` names the first"
                                        " import. Nothing is imported."),
    "too_many_requests": Code(429, "The account's write rate limit (or, for export emails, the hourly send"
                                   " limit) is used up; retry after `Retry-After` seconds. Nothing was done."),
    "mail_delivery_failed": Code(502, "The mail provider could not be reached, refused the login, recipient or"
                                      " message, or lacks what is configured; `message` says which. The send"
                                      " does not count against the hourly limit."),
    "database_unavailable": Code(503, "PostgreSQL is unreachable, full or has no free connection; nothing was"
                                      " written. Retry after `Retry-After` seconds. An import it stopped"
                                      " part-way keeps what it stored: the body adds `importId`, the counts and"
                                      " `reportUrl`, and the same request with its `Idempotency-Key` resumes it."),
    "auth_unavailable": Code(503, "The identity provider's signing keys (`CONTACTS_JWKS_URL`) could not be"
                                  " fetched, and none were fetched before, so no token can be checked; nothing"
                                  " was done. Retry after `Retry-After` seconds; your token is not at fault."),
    "export_unavailable": Code(503, "The service cannot prepare the download: its temporary directory"
                                    " (`TMPDIR`) is missing, not writable or full; `message` says which. Nothing"
                                    " was sent; retry later."),
    "mail_not_configured": Code(503, "No mail provider is configured (`CONTACTS_SMTP_URL` is not set, or is"
                                     " not an smtp:// or smtps:// URL)."),
}

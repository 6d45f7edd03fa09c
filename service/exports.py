"""Exports: CSV download, JSON data for the export wizard, and sending an export by email.

The two downloads stream from a server-side cursor, spooled through a temporary file so
that a slow client does not hold a database connection (service/spool.py); the first chunk
is read before the response starts, so a database failure is still a clean 503 rather than
a cut-off file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import smtplib
import ssl
import unicodedata
from datetime import UTC, datetime, timedelta
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Annotated
from urllib.parse import unquote, urlsplit
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi.spec import Example
from litestar.params import Parameter
from litestar.response import Stream
from psycopg_pool import ConnectionPool

from command.errors import DomainError, ValidationError
from query.exports import EXTRA_COLUMNS, csv_export, json_export
from service import bodies, locks, threads
from service.bootstrap import Container
from service.cleaning import clean_email
from service.controllers import ActorRequest, contact_filter
from service.parameters import ListIdParam, OptedOutParam, SearchParam, TagsParam
from service.openapi import struct_schema, with_request_body
from service.schemas import Email, In
from service.spool import spooled
from service.uploads import read_body

MIME_TYPES = frozenset({"text/csv", "application/json", "application/zip",
                        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"})
SMTP_TIMEOUT_S = 30


class AttachmentTooLargeError(DomainError):
    code = "payload_too_large"


class MailNotConfiguredError(DomainError):
    code = "mail_not_configured"


class MailDeliveryError(DomainError):
    """The mail provider could not be reached, refused, or lacks what the send needs."""

    code = "mail_delivery_failed"


class ExportEmail(In):
    """POST /contacts/export-email: a file the client built, to be mailed to ``email``."""

    email: Email
    filename: str
    file_base64: str
    mime_type: str
    count: Annotated[int, msgspec.Meta(ge=0)] | None = None


_COLUMN_NAME = "(?:" + "|".join([*EXTRA_COLUMNS, *(header for header, _ in EXTRA_COLUMNS.values())]) + ")"
# Documented, not enforced by Litestar: extra_columns accepts all it matches (and any case),
# and refuses the rest naming the unknown column, which a regex mismatch message would not.
COLUMNS_PATTERN = rf"^\s*{_COLUMN_NAME}?\s*(?:,\s*{_COLUMN_NAME}?\s*)*$"
ColumnsParam = Annotated[str | None, Parameter(max_length=500, schema_extra={"pattern": COLUMNS_PATTERN}, description=(
    "Comma-separated columns to add after the default six (first_name, last_name, phone, email, tags, notes),"
    f" in this order: any of {', '.join(EXTRA_COLUMNS)}. Headers are the importer's snake_case names"
    " (is_opted_out, invalid_reason, list_ids, created_at, …); an import reads is_opted_out back"),
    examples=[Example(value="isOptedOut,status,createdAt")])]
_COLUMN_KEYS = {name.replace("_", "").casefold(): name for name in EXTRA_COLUMNS} | {
    header.replace("_", "").casefold(): name for name, (header, _) in EXTRA_COLUMNS.items()}


def extra_columns(columns: str | None) -> tuple[str, ...]:
    """The ``columns=`` names, in the order given, each once; an unknown one is a 422 naming it."""
    chosen: dict[str, None] = {}
    for given in (columns or "").split(","):
        given = given.strip()
        if not given:
            continue
        name = _COLUMN_KEYS.get(given.replace("_", "").replace("-", "").casefold())
        if name is None:
            raise ValidationError(f"columns: unknown column {given[:50]!r}; choose from {', '.join(EXTRA_COLUMNS)}",
                                  field="columns")
        chosen[name] = None
    return tuple(chosen)


class ExportController(Controller):
    """Exports of the account's active contacts."""

    path = "/api/v1/contacts"
    tags = ["export"]

    @get("/export", operation_id="exportContactsCsv",
         media_type="text/csv", sync_to_thread=True)
    def export_csv(self, request: ActorRequest, container: Container, search: SearchParam = None,
                   list_id: ListIdParam = None, is_opted_out: OptedOutParam = None, tags: TagsParam = None,
                   columns: ColumnsParam = None) -> Stream:
        """The matching contacts as a CSV download (formula-like cells neutralised with a leading ')."""
        flt = contact_filter(search, list_id, is_opted_out, tags)
        extra = extra_columns(columns)
        filename = datetime.now(UTC).strftime("contacts-%Y%m%d-%H%M%S.csv")
        return Stream(spooled(csv_export(container.pool, request.user.account_id, flt, extra=extra)),
                      media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="{filename}"',
                               "Cache-Control": "no-store"})

    @get("/export-data", operation_id="exportContactsJson", sync_to_thread=True)
    def export_data(self, request: ActorRequest, container: Container, search: SearchParam = None,
                    list_id: ListIdParam = None, is_opted_out: OptedOutParam = None, tags: TagsParam = None) -> Stream:
        """The matching contacts as a JSON array, in the shape of GET /contacts items."""
        flt = contact_filter(search, list_id, is_opted_out, tags)
        return Stream(spooled(json_export(container.pool, request.user.account_id, flt)),
                      media_type="application/json", headers={"Cache-Control": "no-store"})

    @post("/export-email", operation_id="emailContactsExport",
          status_code=200, request_max_body_size=None,
          operation_class=with_request_body("application/json", struct_schema(ExportEmail),
                                            "The file to mail, base64-encoded, and where to send it"))
    async def export_email(self, request: ActorRequest, container: Container) -> Response[bytes]:
        """Mail a client-built export file (JSON body: email, filename, fileBase64, mimeType, count)."""
        settings = container.settings
        if not settings.smtp_url:
            raise MailNotConfiguredError("no mail provider is configured (CONTACTS_SMTP_URL)")
        data = bodies.decode(await _read_body(request, settings.export_email_max_bytes), ExportEmail)
        await threads.run_in(threads.MAIL, mail_export, container, request.user.account_id, data)
        return Response(b"", status_code=200, media_type=MediaType.TEXT)


def mail_export(container: Container, account_id: UUID, data: ExportEmail) -> None:
    """Mail the file, within the account's hourly limit (429 when it is used up)."""
    settings = container.settings
    message = build_message(data, settings.mail_from, settings.export_email_max_bytes)
    slot = reserve_email_send(container.pool, account_id, settings.export_email_per_hour)
    if isinstance(slot, int):
        raise HTTPException(status_code=429, headers={"Retry-After": str(slot)},
                            detail=f"at most {settings.export_email_per_hour} export emails per hour;"
                                   f" retry in {slot} s")
    try:
        send_mail(settings.smtp_url, message)
    except (MailDeliveryError, MailNotConfiguredError):
        # Nothing was handed over, and the limit is there against spam: only accepted sends count.
        release_email_send(container.pool, account_id, slot)
        raise


async def _read_body(request: Request, max_file_bytes: int) -> bytearray:
    """The request body, refused with 413 past what a file of ``max_file_bytes`` needs in base64 JSON."""
    base64_size = 4 * math.ceil(max_file_bytes / 3)
    limit = base64_size + base64_size // 8 + 64 * 1024  # room for escaped "/" and the other fields
    too_large = AttachmentTooLargeError(f"the file is larger than the limit of {max_file_bytes} bytes",
                                        field="fileBase64")
    return await read_body(request, limit, too_large)


def build_message(data: ExportEmail, sender: str, max_file_bytes: int) -> EmailMessage:
    """The email with the decoded file attached; 422/413 for anything that does not check out."""
    recipient = _recipient(data.email)
    filename = _filename(data.filename)
    mime_type = data.mime_type.split(";", 1)[0].strip().lower()
    if mime_type not in MIME_TYPES:
        raise ValidationError(f"mimeType {data.mime_type!r} is not one of {', '.join(sorted(MIME_TYPES))}",
                              field="mimeType")
    try:
        content = base64.b64decode(data.file_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("fileBase64 is not valid base64", field="fileBase64") from None
    if not content:
        raise ValidationError("the file is empty", field="fileBase64")
    if len(content) > max_file_bytes:
        raise AttachmentTooLargeError(f"the file is {len(content)} bytes, more than the limit of"
                                      f" {max_file_bytes} bytes", field="fileBase64")
    message = EmailMessage()
    message["Subject"] = "Your contacts export"
    message["From"] = sender
    message["To"] = recipient
    counted = f" ({data.count} contact{'' if data.count == 1 else 's'})" if data.count is not None else ""
    message.set_content(f"Your contacts export {filename}{counted} is attached.\n")
    maintype, subtype = mime_type.split("/", 1)
    message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message


def _recipient(value: str) -> str:
    address = clean_email(value)
    if address is None:
        raise ValidationError("email must not be empty", field="email")
    try:
        return Address(addr_spec=address).addr_spec
    except (ValueError, MessageError):
        raise ValidationError(f"email {address!r} is not a valid address", field="email") from None


def _filename(value: str) -> str:
    if not value.strip():
        raise ValidationError("filename must not be empty", field="filename")
    if len(value) > 200:
        raise ValidationError("filename must be at most 200 characters", field="filename")
    if any(c in "/\\" or unicodedata.category(c) == "Cc" for c in value) or not value.strip("."):
        raise ValidationError("filename must not contain path separators or control characters",
                              field="filename")
    return value


def reserve_email_send(pool: ConnectionPool, account_id: UUID, per_hour: int) -> datetime | int:
    """Record a send for the account and return its slot (the time logged), or the seconds to wait if the hour is full.

    The log is a PostgreSQL table and the check runs under a per-account advisory lock,
    so the limit holds across api replicas and concurrent requests.
    """
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (locks.EXPORT_EMAIL, str(account_id)))
        now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        since = now - timedelta(hours=1)
        conn.execute("DELETE FROM export_email_log WHERE account_id = %s AND sent_at <= %s", (account_id, since))
        count, oldest = conn.execute("SELECT count(*), min(sent_at) FROM export_email_log WHERE account_id = %s",
                                     (account_id,)).fetchone()
        if count >= per_hour:
            free_at = oldest + timedelta(hours=1) if oldest else now + timedelta(hours=1)
            return max(1, math.ceil((free_at - now).total_seconds()))
        conn.execute("INSERT INTO export_email_log (account_id, sent_at) VALUES (%s, %s)", (account_id, now))
    return now


def release_email_send(pool: ConnectionPool, account_id: UUID, slot: datetime) -> None:
    """Give back a slot that ``reserve_email_send`` returned, for a send that failed."""
    with pool.connection() as conn, conn.transaction():
        # The log has no key and equal rows are interchangeable: delete one row with the slot's time. Under the
        # reservation's lock, two releases of equal times see each other's delete and each remove one row.
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (locks.EXPORT_EMAIL, str(account_id)))
        conn.execute("DELETE FROM export_email_log WHERE ctid = (SELECT ctid FROM export_email_log"
                     " WHERE account_id = %s AND sent_at = %s LIMIT 1)", (account_id, slot))


def send_mail(smtp_url: str, message: EmailMessage) -> None:
    """Hand the message to the provider: ``smtps://`` is TLS from the start, ``smtp://`` uses STARTTLS if offered."""
    url = urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise MailNotConfiguredError("CONTACTS_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
    context = ssl.create_default_context()
    try:
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=SMTP_TIMEOUT_S,
                                                    context=context)
        else:
            client = smtplib.SMTP(url.hostname, url.port or 587, timeout=SMTP_TIMEOUT_S)
        try:
            client.ehlo()
            encrypted = url.scheme == "smtps"
            if url.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                encrypted = True
            if url.username and not encrypted and not _is_loopback(url.hostname):
                # As Go's net/smtp does: credentials travel only over TLS, or to this machine.
                raise MailDeliveryError(f"the mail provider at {url.hostname} does not offer STARTTLS, and the user"
                                        " name and password of CONTACTS_SMTP_URL are never sent unencrypted: use"
                                        " smtps:// or a provider that offers STARTTLS")
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
            # Accepted now: a failed goodbye must not turn a delivered message into a 502.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
        finally:
            client.close()
    except (smtplib.SMTPException, OSError) as exc:
        raise _delivery_error(exc) from None


def _is_loopback(host: str) -> bool:
    """This machine by its usual names (Go's net/smtp's rule): a provider on the same host as the API."""
    return host in ("localhost", "127.0.0.1", "::1")


def _delivery_error(exc: smtplib.SMTPException | OSError) -> MailDeliveryError:
    """The 502 for a failed send, saying whether the provider refused, lacks a feature, or was not reached."""
    match exc:
        case smtplib.SMTPRecipientsRefused():
            code, reason = next(iter(exc.recipients.values()))
            return MailDeliveryError(f"the mail provider refused the recipient: {code} {_text(reason)}")
        case smtplib.SMTPAuthenticationError():
            return MailDeliveryError(f"the mail provider refused the user name and password of"
                                     f" CONTACTS_SMTP_URL: {exc.smtp_code} {_text(exc.smtp_error)}")
        case smtplib.SMTPConnectError():
            return MailDeliveryError(f"the mail provider refused the connection:"
                                     f" {exc.smtp_code} {_text(exc.smtp_error)}")
        case smtplib.SMTPResponseException():
            return MailDeliveryError(f"the mail provider refused the message: {exc.smtp_code} {_text(exc.smtp_error)}")
        case smtplib.SMTPServerDisconnected():
            return MailDeliveryError(f"the mail provider closed the connection: {exc}")
        case smtplib.SMTPException():  # SMTPException is an OSError, so this comes before the network errors
            return MailDeliveryError(f"the mail provider does not support what is configured: {exc}")
        case ssl.SSLError():
            return MailDeliveryError(f"the TLS session with the mail provider failed: {exc.__class__.__name__} {exc}")
        case _:  # connection refused, name not resolved, timeout
            return MailDeliveryError(f"the mail provider could not be reached: {exc.__class__.__name__}"
                                     f" {exc}".strip())


def _text(reply: bytes | str) -> str:
    """An SMTP reply's text, whichever type smtplib handed over."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply

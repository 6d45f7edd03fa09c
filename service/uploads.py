"""Request bodies as they arrive: a multipart upload's file part goes to a temporary file, never
whole into memory (``receive_upload``); a JSON body is read once into one buffer (``read_body``)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from command.errors import DomainError, ValidationError

MAX_FIELD_BYTES = 64 * 1024
HEAD_BYTES = 64 * 1024  # what detect_format looks at


class PayloadTooLargeError(HTTPException):
    status_code = 413


class MalformedUploadError(DomainError):
    """The body is not well-formed multipart (bad boundary, oversized part headers, cut short)."""

    code = "malformed_body"


def file_label(raw: bytes) -> str | None:
    """A client's filename as a label to show back: its last path segment, printable, at most 255 characters.

    It is never used as a path (uploads go to a temporary file), but it is stored with
    the job and shown in answers, so control and bidi characters are dropped.
    """
    name = re.split(r"[/\\]", raw.decode("utf-8", "replace"))[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if len(name) > 255:
        stem, dot, suffix = name.rpartition(".")
        name = stem[:254 - len(suffix)] + dot + suffix if dot and len(suffix) <= 10 else name[:255]
    return name or None


@dataclass
class Upload:
    """The uploaded file on disk, its name, its first bytes and the form's other fields."""

    path: Path | None = None
    filename: str | None = None
    head: bytes = b""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    digest: Any = None  # a hashlib.sha256 of the file, when asked for (an Idempotency-Key's check)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, max_bytes: int, file_field: str = "file",
                         digest: bool = False) -> Upload:
    """Parse a multipart/form-data body as it streams in; 413 as soon as it is too large."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ValidationError("send the file as multipart/form-data with a 'file' field", field="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(detail=f"the upload is {int(declared)} bytes; the limit is {max_bytes} bytes")

    upload = Upload(digest=hashlib.sha256() if digest else None)
    fd, name = tempfile.mkstemp(prefix="contacts-import-")
    sink = os.fdopen(fd, "wb")
    upload.path = Path(name)
    state: dict[str, object] = {"name": None, "header": b"", "value": b"", "headers": {}, "buffer": bytearray()}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] = bytes(state["header"]) + data[start:end]  # type: ignore[operator]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = bytes(state["value"]) + data[start:end]  # type: ignore[operator]

    def on_header_end() -> None:
        headers = state["headers"]
        headers[bytes(state["header"]).lower()] = bytes(state["value"])  # type: ignore[index]
        state["header"], state["value"] = b"", b""

    seen: set[str] = set()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))  # type: ignore[union-attr]
        name = state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name in seen:
            # Two files would be read as one (the second's header as a data row), and two
            # listIds or mappings leave the client guessing which one counted.
            raise ValidationError(f"the form has more than one {name!r} field: send one" +
                                  (" file per import" if name == file_field else ""), field=name)
        seen.add(name)
        if name == file_field:
            upload.filename = file_label(disposition.get(b"filename", b""))
        state["buffer"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["name"] == file_field:
            if len(upload.head) < HEAD_BYTES:
                upload.head += chunk[: HEAD_BYTES - len(upload.head)]
            upload.size += len(chunk)
            sink.write(chunk)
            if upload.digest is not None:
                upload.digest.update(chunk)
        else:
            buffer: bytearray = state["buffer"]  # type: ignore[assignment]
            if len(buffer) + len(chunk) > MAX_FIELD_BYTES:
                raise ValidationError(f"form field {state['name']!r} is too large", field=str(state["name"]))
            buffer.extend(chunk)

    def on_part_end() -> None:
        if state["name"] != file_field and state["name"]:
            upload.fields[str(state["name"])] = bytes(state["buffer"]).decode("utf-8", "replace")
        state["headers"] = {}

    received = 0
    try:
        parser = MultipartParser(params[b"boundary"], callbacks={
            "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end,
        })
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(detail=f"the upload is larger than the limit of {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            # python-multipart's finalize does not check this: a body cut short would import part of a file.
            raise MalformedUploadError("the multipart body ends before its closing boundary: the upload was cut "
                                       "short", field="file")
    except FormParserError as exc:
        sink.close()
        upload.discard()
        raise MalformedUploadError(f"the body is not valid multipart/form-data: {exc}", field="file") from None
    except BaseException:
        sink.close()
        upload.discard()
        raise
    sink.close()
    if upload.filename is None and upload.size == 0 and "file" not in upload.fields:
        upload.discard()
        raise ValidationError("the form has no 'file' field", field="file")
    return upload


async def read_body(request: Request, limit: int | None = None, too_large: Exception | None = None) -> bytearray:
    """The whole body in one buffer, which grows with what arrives, never with what ``Content-Length``
    announces: a client announcing 50 MB and sending nothing holds no 50 MB of this process.

    Past ``limit`` bytes ``too_large`` is raised (at once when ``Content-Length`` announces more);
    without one, the route's ``request_max_body_size`` bounds the body (``stream()`` answers 413).
    Grown in place: a large buffer is its own mapping, which ``realloc`` extends without a copy.
    """
    if limit is not None:
        too_large = too_large or PayloadTooLargeError(detail=f"the body is larger than the limit of {limit} bytes")
        if (request.content_length or 0) > limit:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if limit is not None and len(body) > limit:
            raise too_large  # set above whenever there is a limit
    return body

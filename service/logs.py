"""One log format for every process (api, worker, relay, serve): JSON lines or text, with request context.

``CONTACTS_LOG_FORMAT=json`` writes one JSON object a line: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, then ``requestId``, ``accountId`` and ``actor``
when the line was logged while serving a request (or a job) that has them, and
``exception`` (the traceback) when there is one. ``text`` writes the same fields as
a human reads them. Unset, a process logging to a terminal writes text and any other
(a container, a service manager, a file) writes JSON, which log collectors parse.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Request id, account and actor of the request (or job) being served; copied into the
# threads that serve it (anyio and asyncio.to_thread carry contextvars along).
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("contacts_log_context", default={})
_FIELDS = {"request_id": "requestId", "account_id": "accountId", "actor": "actor"}


def bind(**values: Any) -> None:
    """Add request id / account id / actor to the context of what this task or thread logs from now on."""
    _context.set({**_context.get(), **{k: str(v) for k, v in values.items() if v not in (None, "")}})


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``bind`` for the duration of a block (a job run by the worker)."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in values.items() if v not in (None, "")}})
    try:
        yield
    finally:
        _context.reset(token)


def context() -> dict[str, str]:
    return _context.get()


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in context().items():
            line[_FIELDS[key]] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return msgspec.json.encode(line).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with ``[requestId=… accountId=… actor=…]`` when known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        known = context()
        if known:
            line += " [" + " ".join(f"{_FIELDS[k]}={v}" for k, v in known.items()) + "]"
        return line


def chosen_format(environ: dict[str, str] | None = None, stream: Any = None) -> str:
    """``CONTACTS_LOG_FORMAT``, else text on a terminal and JSON elsewhere."""
    value = (environ if environ is not None else os.environ).get("CONTACTS_LOG_FORMAT", "").strip().lower()
    if value in FORMATS:
        return value
    if value:
        raise SystemExit(f"CONTACTS_LOG_FORMAT must be json or text, not {value!r}")
    stream = stream if stream is not None else sys.stderr
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def configure(fmt: str | None = None, level: int = logging.INFO) -> str:
    """Send every logger of the process (ours, uvicorn's, the libraries') to stderr in one format."""
    fmt = fmt or chosen_format()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # in case uvicorn set its own handlers
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return fmt


def request_context_middleware(app: Any) -> Any:
    """An ASGI middleware binding the request id for whatever the request logs."""
    from service.auth import request_id_of

    async def with_context(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        with bound(request_id=request_id_of(scope)):  # the auth middleware adds account and actor
            await app(scope, receive, send)
    return with_context

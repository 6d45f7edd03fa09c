"""One warning line for NATS connection errors, at most every 30 s, instead of nats-py's tracebacks."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def server_list(url: str) -> list[str]:
    """``CONTACTS_NATS_URL`` may name several servers of a cluster, comma-separated: nats-py wants a list.

    A single URL would do once connected (the servers announce each other), but not to
    connect while that one server is down.
    """
    return [part.strip() for part in url.split(",") if part.strip()]


class NatsErrorLog:
    """``report`` is nats-py's ``error_cb``: the default logs a full traceback per reconnect attempt (twice a second).

    nats-py accepts only a coroutine function there (not an object with an async ``__call__``).
    """

    def __init__(self, who: str, every_s: float = 30.0):
        self.who, self.every_s = who, every_s
        self.last = -every_s
        self.skipped = 0

    async def report(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.skipped += 1
            return
        more = f" ({self.skipped} more since the last warning)" if self.skipped else ""
        log.warning("%s: NATS: %s%s", self.who, describe(exc), more)
        self.last, self.skipped = now, 0


def describe(exc: BaseException) -> str:
    """The exception's type and message: some (a refused connection, a timeout) have no message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""NATS connection errors: one warning line at most every 30 s, not a traceback twice a second."""

from __future__ import annotations

import asyncio
import logging

from events.nats_log import NatsErrorLog


def test_nats_errors_are_one_line_and_rate_limited(caplog) -> None:
    errors = NatsErrorLog("relay", every_s=30)
    with caplog.at_level(logging.WARNING, logger="events.nats_log"):
        for _ in range(60):  # thirty seconds of refused reconnects
            asyncio.run(errors.report(ConnectionRefusedError(111, "Connect call failed")))
        errors.last -= 31  # thirty seconds later
        asyncio.run(errors.report(ConnectionRefusedError(111, "Connect call failed")))
    assert [r.getMessage() for r in caplog.records] == [
        "relay: NATS: ConnectionRefusedError: [Errno 111] Connect call failed",
        "relay: NATS: ConnectionRefusedError: [Errno 111] Connect call failed (59 more since the last warning)"]
    assert all(r.exc_info is None for r in caplog.records)
    assert asyncio.iscoroutinefunction(errors.report)  # what nats-py checks: it refused the object itself

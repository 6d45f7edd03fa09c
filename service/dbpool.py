"""Connection pools retry a lost database every second, not with psycopg_pool's growing back-off."""

from __future__ import annotations

import time
from typing import Any

import psycopg_pool
import psycopg_pool.pool
from psycopg_pool.base import AttemptWithBackoff

RETRY_EVERY_S = 1.0


class SteadyRetry(AttemptWithBackoff):
    """A reconnection attempt that waits about a second between tries, however long the outage.

    psycopg_pool doubles the pause after each failed connect (1, 2, 4, 8, 16 s…). All of
    a pool's connections break together when PostgreSQL restarts, so they retried in
    step, and the event store's pool (ten connections) came back up to 15 s after the
    server: writes answered 503 while reads, and /ready, said all was well. A connect
    to a server that is down is refused at once, so trying every second costs nothing.
    """

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RETRY_EVERY_S)


def retry_every_second() -> None:
    """Make every psycopg_pool pool of this process (ours and the event store's) use SteadyRetry."""
    psycopg_pool.pool.AttemptWithBackoff = SteadyRetry


class CheckAfterOutage:
    """A pool's checkout check that costs nothing until the database has gone away once.

    A connection broken by a PostgreSQL restart fails the request that takes it. Reads
    used to be healed by the writes' catch-up, which went through the same pool; since
    writes project in their own transaction, nothing touched the read pool between an
    outage and the next reads, and each of its stale connections answered one 503 (the
    restart fault test's first read after the writes came back). After any request met a
    lost database (``mark``), checkouts test the connection with an empty query for
    ``window_s`` seconds and replace a dead one; the rest of the time there is no round trip.
    """

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self.until = 0.0

    def mark(self) -> None:
        self.until = time.monotonic() + self.window_s

    def __call__(self, conn: Any) -> None:
        if time.monotonic() < self.until:
            psycopg_pool.ConnectionPool.check_connection(conn)


#: The read pool's check (service/bootstrap.py), marked by the 503 handler (service/error_handlers.py).
check_after_outage = CheckAfterOutage()

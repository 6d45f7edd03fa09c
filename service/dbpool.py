"""Connection pools retry a lost database every second, not with psycopg_pool's growing back-off."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
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

    ``mark`` also sweeps the pools it watches at once, in a thread of its own (``_sweep``):
    psycopg_pool pauses about a second after each dead connection a checkout meets, so a
    pool of ten dead connections timed every request out (2 s) for several seconds after
    the database was back: an import's retry, sent after its ``Retry-After``, got a second 503.
    """

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self.until = 0.0
        self.pools: weakref.WeakSet[psycopg_pool.ConnectionPool] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    def watch(self, pool: psycopg_pool.ConnectionPool) -> None:
        """Check this pool after an outage: at checkout (``__call__``), and all its idle connections at once."""
        self.pools.add(pool)

    def mark(self, *, wait_s: float = 0.0) -> None:
        """The database was lost: check connections for a while, and sweep the pools now (waiting up to ``wait_s``).

        One sweep at a time (every 503 of an outage marks); the wait is bounded, as a check
        on a connection whose server stopped answering waits for the network to give up.
        """
        self.until = time.monotonic() + self.window_s
        with self._lock:
            if self._sweeper is None or not self._sweeper.is_alive():
                self._sweeper = threading.Thread(target=self._sweep, name="pool-sweep", daemon=True)
                self._sweeper.start()
            sweeper = self._sweeper
        if wait_s > 0:
            sweeper.join(wait_s)

    def _sweep(self) -> None:
        """Replace every dead idle connection of the watched pools (each test is an empty query)."""
        for pool in list(self.pools):
            with contextlib.suppress(Exception):  # a closed pool, or the database still away
                pool.check()

    def __call__(self, conn: Any) -> None:
        if time.monotonic() < self.until:
            psycopg_pool.ConnectionPool.check_connection(conn)


#: The read pool's check (service/bootstrap.py), marked by the 503 handler (service/error_handlers.py).
check_after_outage = CheckAfterOutage()

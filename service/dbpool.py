"""Connection pools retry a lost database every second, not with psycopg_pool's growing back-off."""

from __future__ import annotations

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

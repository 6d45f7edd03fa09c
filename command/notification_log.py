"""The notification log read in batches bounded by size: what every follower of the event store reads.

Two processes follow the log: the NATS relay (``events/relay.py``) and the projection
replay of ``contacts projections rebuild`` (``projections/runner.py``). Live writes
need no follower: their read rows commit with them (``command/unit_of_work.py``).
The replay looks the sizes up first (``bounded_limit``), then reads; the relay, which
looks many times a second, reads a batch bounded the same way in one statement
(``bounded_batch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import Cursor, sql
from psycopg_pool import ConnectionPool

from command.unit_of_work import EVENTS_TABLE

MAX_BATCH_BYTES = 8 * 1024 * 1024  # stored event state per batch: import batches are ~0.5 MB each


def bounded_limit(cur: Cursor[Any], position: int, max_events: int, max_bytes: int) -> int:
    """How many events after ``position`` fit in ``max_bytes`` of stored state (at least one).

    Import batches carry a thousand contacts each: fetching a thousand of them at once
    would hold hundreds of megabytes. The sizes come from ``pg_column_size`` (no
    de-toasting), so this look-ahead is cheap.
    """
    cur.execute(f"SELECT pg_column_size(state) FROM {EVENTS_TABLE} WHERE notification_id > %s"
                " ORDER BY notification_id LIMIT %s", (position, max_events))
    total, count = 0, 0
    for (size,) in cur.fetchall():
        total += size or 0
        if count and total > max_bytes:
            break
        count += 1
    return max(count, 1)


def bounded_batch(columns: sql.Composable, size: sql.Composable) -> sql.Composed:
    """A query for the events after ``%(after)s``: ``columns`` and ``upto`` (the running total of ``size``), at most
    ``%(limit)s`` of them and ``%(max_bytes)s`` of ``size`` (at least one), the same bound as ``bounded_limit``.

    The running total comes from ``pg_column_size`` in a window over the index order,
    so the look-ahead costs no de-toasting and no statement of its own; a row past the
    bound is scanned (at most ``%(limit)s`` rows) but its value never read.
    """
    return sql.SQL("SELECT * FROM (SELECT {columns}, sum(pg_column_size({size})) OVER w AS upto,"
                   " row_number() OVER w AS n FROM {table} WHERE notification_id > %(after)s"
                   " WINDOW w AS (ORDER BY notification_id) ORDER BY notification_id LIMIT %(limit)s) bounded"
                   " WHERE n = 1 OR upto <= %(max_bytes)s").format(columns=columns, size=size,
                                                                  table=sql.Identifier(EVENTS_TABLE))


class LogFollower:
    """The next batch of stored notifications after a position, at most ``batch_size`` and ``max_bytes``."""

    def __init__(self, pool: ConnectionPool, select_notifications: Callable[..., Any], batch_size: int,
                 max_bytes: int = MAX_BATCH_BYTES):
        self.pool = pool
        self.select_notifications = select_notifications
        self.batch_size = batch_size
        self.max_bytes = max_bytes

    def next_batch(self, position: int) -> list[Any]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            limit = bounded_limit(cur, position, self.batch_size, self.max_bytes)
        return list(self.select_notifications(start=position, limit=limit, inclusive_of_start=False))

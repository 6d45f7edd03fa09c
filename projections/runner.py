"""Batched catch-up of projectors, callable from any process.

Any process (an ``api`` replica answering a write, or the ``worker`` woken by
LISTEN/NOTIFY) may advance the projections. A ``SELECT … FOR UPDATE`` on the
tracking row serialises them: whoever holds it applies every pending event in
batches, each batch's row changes and new position committed in one transaction.
A writer that finds the position already past its own event returns at once, so
read-your-writes needs no polling and no sleep. Within one process, writers queue on a
thread lock before they queue on the row: whoever gets the row applies the others'
events too, so the rest find them applied with a plain read and never take the row's
lock nor hold a connection while they wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import eventsourcing.persistence
import psycopg
from psycopg import Cursor
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


# A lost or restarted database is retried by the caller, never quarantined.
INFRASTRUCTURE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError,
                         eventsourcing.persistence.OperationalError, eventsourcing.persistence.InterfaceError)
MAX_BATCH_BYTES = 8 * 1024 * 1024  # stored event state per batch: import batches are ~0.5 MB each
EVENTS_TABLE = "contacts_events"


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


class Projector(Protocol):
    name: str

    def apply(self, event: Any, cur: Cursor[Any]) -> None: ...


class ProjectionRunner:
    """Applies events from the application's notification log to projectors."""

    def __init__(self, pool: ConnectionPool, select_notifications: Callable[..., Any],
                 decode: Callable[[list[Any]], list[Any]], projector: Projector, batch_size: int = 1000):
        self.pool = pool
        self.select_notifications = select_notifications
        self.decode = decode
        self.projector = projector
        self.batch_size = batch_size
        self.applied_total = 0
        self._turn = threading.Lock()  # one catch-up at a time in this process

    def position(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT position FROM projection_tracking WHERE name = %s",
                               (self.projector.name,)).fetchone()
            return row[0] if row else 0

    def up_to_date(self) -> int | None:
        """The position if it is at the event store's head (read without any lock), else None.

        None too when the tracking row is not made yet: the first catch-up makes it.
        """
        with self.pool.connection() as conn:
            position, head = conn.execute(
                f"SELECT (SELECT position FROM projection_tracking WHERE name = %s),"
                f" (SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE})", (self.projector.name,)).fetchone()
        return position if position is not None and position >= head else None

    def catch_up(self, until: int | None = None) -> int:
        """Apply pending events; return once the position is at least ``until`` (or the head)."""
        # Under concurrent writes another process has usually applied this writer's event
        # already: a plain read says so without queueing for the tracking row's lock. The
        # worker, woken by every stored event, usually finds the writer has applied it.
        if until is not None and (position := self.position()) >= until:
            return position
        if until is None and (position := self.up_to_date()) is not None:
            return position
        waited = not self._turn.acquire(blocking=False)  # another thread of this process is applying events
        if waited:
            self._turn.acquire()
        try:
            if waited and until is not None and (position := self.position()) >= until:
                return position  # applied by the thread that held the turn
            while True:
                position, applied = self._apply_batch(until)
                if applied == 0 or (until is not None and position >= until):
                    return position
        finally:
            self._turn.release()

    def _apply_batch(self, until: int | None) -> tuple[int, int]:
        name = self.projector.name
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # Read tables are derived: if PostgreSQL crashes before this commit reaches the
            # disk, the batch's rows and its position are lost together and applied again
            # from the (durable) events. Not waiting for the flush frees the tracking row
            # at once instead of after an fsync (docs/architecture.md, read-your-writes).
            cur.execute("SET LOCAL synchronous_commit = off")
            take_row = "SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE"
            row = cur.execute(take_row, (name,)).fetchone()
            if row is None:  # a new (or rebuilt-from-nothing) database: the row is made once
                cur.execute("INSERT INTO projection_tracking (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
                row = cur.execute(take_row, (name,)).fetchone()
            position = row[0]
            if until is not None and position >= until:
                return position, 0
            limit = bounded_limit(cur, position, self.batch_size, MAX_BATCH_BYTES)
            notifications = self.select_notifications(start=position, limit=limit, inclusive_of_start=False)
            if not notifications:
                return position, 0
            started = time.perf_counter()
            try:
                with conn.transaction():  # a savepoint: on failure the tracking row stays locked
                    for event in self.decode(notifications):
                        self.projector.apply(event, cur)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception:  # noqa: BLE001 - find the bad event(s), apply the others
                log.exception("projection of events %d..%d failed; applying them one at a time",
                              notifications[0].id, notifications[-1].id)
                self._apply_one_by_one(conn, cur, notifications)
            position = notifications[-1].id
            cur.execute("UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
                        (position, name))
        self.applied_total += len(notifications)
        log.debug("projected %d events to %d in %.1f ms", len(notifications), position,
                  (time.perf_counter() - started) * 1000)
        return position, len(notifications)

    def _apply_one_by_one(self, conn: Any, cur: Cursor[Any], notifications: list[Any]) -> None:
        """Apply each event in a savepoint of its own; quarantine the ones that fail."""
        for notification in notifications:
            try:
                with conn.transaction():
                    for event in self.decode([notification]):
                        self.projector.apply(event, cur)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, counted in /metrics, logged
                log.error("projection: event %d (%s) quarantined: %s", notification.id, notification.topic, exc)
                cur.execute("INSERT INTO projection_quarantine (name, notification_id, topic, error)"
                            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (self.projector.name, notification.id, notification.topic,
                             f"{type(exc).__name__}: {exc}"[:2000].replace("\x00", "\\0")))

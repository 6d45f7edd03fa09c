"""Replay of the notification log into read tables, in batches: for rebuilds and for a database's first start.

Live writes never come here: each one projects its own events in its own transaction
(``command/unit_of_work.py``). This runner follows the log for the two cases where
read tables must be built from stored events: ``contacts projections rebuild``
(fresh tables in a schema of their own) and a database whose read tables lag its
events (made by a version of the service that projected asynchronously, or dropped
by hand). Each batch's rows and its new position commit in one transaction.

An event the projector cannot apply during a replay is quarantined
(``projection_quarantine``, counted in ``/metrics``) so one bad event cannot stop the
replay of every account; a live write whose projection fails stores nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import eventsourcing.persistence
import psycopg
from psycopg import Cursor
from psycopg_pool import ConnectionPool

from command.notification_log import LogFollower
from command.unit_of_work import Projector

log = logging.getLogger(__name__)

# A lost or restarted database is retried by the caller, never quarantined.
INFRASTRUCTURE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError,
                         eventsourcing.persistence.OperationalError, eventsourcing.persistence.InterfaceError)


class ProjectionRunner:
    """Applies events from the application's notification log to a projector's tables."""

    def __init__(self, pool: ConnectionPool, select_notifications: Callable[..., Any],
                 decode: Callable[[list[Any]], list[Any]], projector: Projector, batch_size: int = 1000):
        self.pool = pool
        self.follower = LogFollower(pool, select_notifications, batch_size)
        self.decode = decode
        self.projector = projector
        self.applied_total = 0

    @property
    def batch_size(self) -> int:
        return self.follower.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.follower.batch_size = value

    def position(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT position FROM projection_tracking WHERE name = %s",
                               (self.projector.name,)).fetchone()
            return row[0] if row else 0

    def catch_up(self, until: int | None = None) -> int:
        """Apply stored events in batches until the head (or at least ``until``); return the position."""
        while True:
            position, applied = self._apply_batch()
            if applied == 0 or (until is not None and position >= until):
                return position

    def _apply_batch(self) -> tuple[int, int]:
        name = self.projector.name
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # Read tables are derived: a batch lost in a crash is applied again, with its position.
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute("INSERT INTO projection_tracking (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            position = cur.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE",
                                   (name,)).fetchone()[0]
            notifications = self.follower.next_batch(position)
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

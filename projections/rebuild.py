"""Rebuild the read tables from the events into fresh tables, then swap them in.

The API keeps serving (and writing) the old tables while the new ones are built in a
schema of their own. The swap holds off the writers (the events table's lock, which
every write takes before it projects), applies the last events to the new tables, and
moves both sets of tables between schemas in one transaction: readers see the old
tables or the new ones, never a mix, and no write is projected into the old tables
after the new ones caught up. The swap gives way to readers rather than
deadlock with them (``_swap``); if it cannot get its locks, or anything else fails, the
old tables keep serving and the fresh schema is dropped.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from psycopg import errors, sql
from psycopg_pool import ConnectionPool

from command.locks import EVENTS_APPEND, WRITE_AHEAD
from command.unit_of_work import EVENTS_TABLE
from projections.read_model import READ_TABLES, ReadModelProjector, create_tables
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)
TABLES = (*READ_TABLES, "projection_tracking", "projection_quarantine")
#: How long the swap waits for any one table's lock before it steps back: well under
#: PostgreSQL's deadlock_timeout (1 s by default), so that it gives up before the
#: deadlock detector would kill a reader it is deadlocked with.
LOCK_TIMEOUT_MS = 150
#: How many times the swap tries to lock the tables (about 40 s of trying in all).
ATTEMPTS = 40


class RebuildSwapError(RuntimeError):
    """The swap never got the read tables' locks: the old tables still serve."""


def rebuild(pool: ConnectionPool, database_url: str, select_notifications: Any, decode: Any, *,
            attempts: int = ATTEMPTS, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> dict[str, Any]:
    """Replay every event into new tables and swap them in; return what was done."""
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d%H%M%S")
    fresh, retired = f"rebuild_{stamp}", f"retired_{stamp}"
    try:
        with ConnectionPool(database_url, min_size=1, max_size=2, open=True,
                            kwargs={"autocommit": True, "prepare_threshold": None,
                                    "options": f"-c search_path={fresh},public"}) as fresh_pool:
            with fresh_pool.connection() as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(fresh)))
                create_tables(conn)
            runner = ProjectionRunner(fresh_pool, select_notifications, decode, ReadModelProjector())
            position = runner.catch_up()
            log.info("rebuild: %d events replayed into %s", position, fresh)
            position = _swap(pool, runner, fresh, retired, attempts, lock_timeout_ms)
    except BaseException:
        _drop_fresh(pool, fresh)
        raise
    with pool.connection() as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(retired)))
    return {"position": position, "seconds": round(time.perf_counter() - started, 2)}


def _swap(pool: ConnectionPool, runner: ProjectionRunner, fresh: str, retired: str, attempts: int,
          lock_timeout_ms: int) -> int:
    """Swap the fresh tables in, in one transaction; return the position they are at.

    A reader's transaction (a page of contacts reads several tables) may hold one table
    the swap needs while it waits for one the swap already locked. Rather than leave it to
    PostgreSQL's deadlock detector, which would kill one side after a second (the reader
    answering 503), the swap waits at most ``lock_timeout_ms`` for each lock, then rolls
    back, which frees the reader, and tries again after a short random pause.
    """
    for attempt in range(1, attempts + 1):
        try:
            with pool.connection() as conn, conn.transaction():
                # Import batches in hand finish, and the next ones wait before they write any read
                # row (command/locks.py): an import keeps a batch ahead of the lock at all times.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_AHEAD,))
                # The append lock, as every write takes it (command/locks.py), and the events table's,
                # as an earlier version's writes take it: writes wait from here on (reads go on).
                # Waiting for a write in progress is safe: the swap holds nothing yet.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_APPEND,))
                conn.execute(sql.SQL("LOCK TABLE public.{} IN EXCLUSIVE MODE").format(sql.Identifier(EVENTS_TABLE)))
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",))
                # Writers write their new rows before the events table's lock (a create's row, an
                # import batch's rows: command/unit_of_work.py). Held off the read tables from here
                # (SHARE lets readers in), none starts while the last events are replayed: one
                # would hold a table the swap needs while it waited for the events lock, and an
                # import starts its next batch's rows within a millisecond of its last commit.
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.SQL(", ").join(
                    sql.Identifier("public", table) for table in TABLES)))
                position = runner.catch_up()  # events stored while we replayed
                # Every lock before any move, always in the same order.
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(
                    sql.Identifier("public", table) for table in TABLES)))
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(retired)))
                for table in TABLES:
                    conn.execute(sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(
                        sql.Identifier(table), sql.Identifier(retired)))
                for table in TABLES:
                    conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA public").format(
                        sql.Identifier(fresh), sql.Identifier(table)))
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(fresh)))
            return position
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            if attempt == attempts:
                raise RebuildSwapError(f"rebuild: the read tables stayed busy through {attempts} attempts"
                                       " to swap them; the old read tables still serve") from exc
            pause = random.uniform(0.5, 1.5) * min(0.05 * 2 ** attempt, 1.0)
            log.info("rebuild: swap attempt %d of %d gave way to readers (%s); retrying in %.2f s",
                     attempt, attempts, type(exc).__name__, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # attempts >= 1


def _drop_fresh(pool: ConnectionPool, fresh: str) -> None:
    """Drop a failed rebuild's schema; the error that failed it is the one to report."""
    try:
        with pool.connection() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(fresh)))
    except Exception:  # noqa: BLE001 - logged; the rebuild's own error follows
        log.warning("rebuild: could not drop schema %s; drop it by hand", fresh, exc_info=True)

"""Rebuild the read tables from the events into fresh tables, then swap them in.

The API keeps serving the old tables while the new ones are built in a schema of
their own. The swap holds the live tracking row (so no process projects meanwhile),
applies the last events to the new tables, and moves both sets of tables between
schemas in one transaction: readers see the old tables or the new ones, never a mix.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.read_model import READ_TABLES, ReadModelProjector, create_tables
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)
TABLES = (*READ_TABLES, "projection_tracking", "projection_quarantine")


def rebuild(pool: ConnectionPool, database_url: str, select_notifications: Any, decode: Any) -> dict[str, Any]:
    """Replay every event into new tables and swap them in; return what was done."""
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d%H%M%S")
    fresh, retired = f"rebuild_{stamp}", f"retired_{stamp}"
    fresh_pool = ConnectionPool(database_url, min_size=1, max_size=2, open=True,
                                kwargs={"autocommit": True, "prepare_threshold": None,
                                        "options": f"-c search_path={fresh},public"})
    try:
        with fresh_pool.connection() as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(fresh)))
            create_tables(conn)
        runner = ProjectionRunner(fresh_pool, select_notifications, decode, ReadModelProjector())
        position = runner.catch_up()
        log.info("rebuild: %d events replayed into %s", position, fresh)
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE",
                         (ReadModelProjector.name,))
            position = runner.catch_up()  # events stored while we replayed
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(retired)))
            for table in TABLES:
                conn.execute(sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(
                    sql.Identifier(table), sql.Identifier(retired)))
            for table in TABLES:
                conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA public").format(
                    sql.Identifier(fresh), sql.Identifier(table)))
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(fresh)))
    finally:
        fresh_pool.close()
    with pool.connection() as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(retired)))
    return {"position": position, "seconds": round(time.perf_counter() - started, 2)}

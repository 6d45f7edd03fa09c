"""The read tables' GIN pending lists, merged in the background (the worker runs ``merge_pending_lists``).

A GIN index with ``fastupdate`` (the default) takes new entries into a pending list and
merges them into the index later, in bulk. Left alone, the write that finds the list
over ``gin_pending_list_limit`` merges it, inside its own transaction, which is under
the events table's lock (command/unit_of_work.py): 32-49 ms during which every other
write waits (the profiling harness, 15 s of list-adds at 32 connections: the slowest
single projection statement took 37.5 ms, against a mean of 0.11 ms; 5.1 ms with the
worker merging, one run each at a load of about 2). The contacts' search and tag
indexes and the memberships' tag index take entries from every create, PATCH, list-add
and import row.

So one worker merges them every half second (``gin_clean_pending_list``) on a
connection of its own, outside any write's transaction, and the indexes allow a larger
pending list (projections/schema.sql: 16 MB) so that a write almost never reaches the
limit before the worker has merged it. A write that does reach it (the worker stopped
or far behind) merges the list itself, as PostgreSQL always does: the worker moves the
work off the write path, nothing depends on it. While the worker merges an index, a
write that reaches the limit does not wait for it: PostgreSQL lets it go on.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from service.locks import GIN_PENDING_LISTS

log = logging.getLogger(__name__)
INTERVAL_S = 0.5  # an import at 11,400 rows/s grew each search index's list by 1-2 MB in that time (16 MB limit)
BUSY_RETRY_S = 10.0  # another worker merges: look again this much later, in case it stopped

# Every GIN index of the read tables (the schema the connection uses): the list is read
# each round, so an index that a rebuild swaps in is merged from its first round.
_MERGE = """
SELECT coalesce(sum(gin_clean_pending_list(i.indexrelid)), 0)::bigint
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
WHERE a.amname = 'gin' AND c.relnamespace = current_schema()::regnamespace
"""


async def merge_pending_lists(database_url: str, stop: asyncio.Event, interval_s: float = INTERVAL_S) -> None:
    """Merge the GIN indexes' pending lists every ``interval_s`` until ``stop`` is set, in one worker at a time."""
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (GIN_PENDING_LISTS,))
                if not (await cur.fetchone())[0]:
                    await _pause(stop, BUSY_RETRY_S)
                    continue
                while not stop.is_set():
                    merged = await merge_once(conn)
                    if merged:
                        log.debug("worker: merged %d pending pages into the GIN indexes", merged)
                    await _pause(stop, interval_s)
        except psycopg.errors.InsufficientPrivilege as exc:
            # Not the indexes' owner (a deployment whose service role does not own the schema):
            # writes merge the lists themselves, as PostgreSQL does by default.
            log.warning("worker: cannot merge GIN pending lists (%s); writes will merge them", exc)
            return
        except (psycopg.Error, OSError) as exc:
            log.warning("worker: GIN pending lists not merged (%s: %s); retrying", type(exc).__name__, exc)
            await _pause(stop, 1.0)


async def merge_once(conn: psycopg.AsyncConnection) -> int:
    """Merge every GIN index's pending list now; the number of pending pages merged."""
    cur = await conn.execute(_MERGE)
    return (await cur.fetchone())[0]


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass

"""A NATS task one process at a time runs (the relay, the eraser): leadership by a PostgreSQL advisory lock.

The lock is held by an open connection of the leader's own: if the leader dies, its
connection closes, the lock frees, and a standby takes over within a couple of seconds.
While leading, the task does one round of work when woken (or every ``idle_s``), and
keeps going through failures with a back-off from 0.2 to 5 s; a lost database ends the
leadership, and the standby loop tries again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
import psycopg

from events.nats_log import NatsErrorLog, server_list

log = logging.getLogger(__name__)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


class Leader:
    """Base of a task that runs in one process at a time; subclasses say what a round does."""

    name: str  # in the log lines
    lock_key: int  # the advisory lock (events/locks.py)
    idle_s: float  # the longest wait between rounds when nothing wakes the task
    connect_options: dict[str, Any] = {}  # more options of ``nats.connect`` for this task's connection
    database_url: str
    nats_url: str

    def __init__(self) -> None:
        self.is_leader = False
        self.last_error: str | None = None
        self.wakeup = asyncio.Event()
        self.nc: Any = None
        self.js: Any = None

    async def start(self) -> None:
        """Connect to NATS (JetStream); called before the first round and after a failed one."""
        self.nc = await nats.connect(server_list(self.nats_url), connect_timeout=2, allow_reconnect=True,
                                     max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     error_cb=NatsErrorLog(self.name).report, **self.connect_options)
        self.js = self.nc.jetstream()

    async def round(self) -> None:
        """One round of work."""
        raise NotImplementedError

    def lead_taken(self) -> None:
        """Called each time this process takes the lead (state kept from an earlier leadership may be stale)."""

    async def close(self) -> None:
        """Close the NATS connection (a broken one too)."""
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self.nc = self.js = None

    def ready(self) -> bool:
        """Whether ``start`` needs calling before the next round."""
        return self.js is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Lead while this process holds the lock; stand by while another does."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as lock:
                    cur = await lock.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
                    if (await cur.fetchone())[0]:
                        self.is_leader = True
                        self.lead_taken()
                        await self._lead(stop, lock)
            except (psycopg.Error, OSError) as exc:
                log.warning("%s: lost the database (%s)", self.name, exc)
            finally:
                self.is_leader = False
            await pause(stop, 2.0)

    async def _lead(self, stop: asyncio.Event, lock: Any) -> None:
        backoff = 0.2
        while not stop.is_set():
            await lock.execute("SELECT 1")  # still holding the lock's connection?
            try:
                if not self.ready():
                    await self.start()
                # Cleared before the round, not after: a wake-up during the round brings
                # the next one at once instead of waiting for the idle tick.
                self.wakeup.clear()
                await self.round()
                self.last_error = None
                backoff = 0.2
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=self.idle_s)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep going whatever went wrong
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: %s; retrying in %.1fs", self.name, self.last_error, backoff)
                await self.close()
                await pause(stop, backoff)
                backoff = min(backoff * 2, 5.0)
        await self.close()

"""The worker: relays every event to NATS, runs queued imports and the trash retention purge, marks failed
the synchronous imports their process abandoned, and merges the read tables' GIN pending
lists off the write path (service/pending_lists.py).

It does not project: every write builds its own read rows in its own transaction
(``command/unit_of_work.py``). Woken by PostgreSQL LISTEN/NOTIFY: the event store's
channel (every write notifies it) wakes the relay, the import queue's channel wakes
the import slots, and a one-second safety tick wakes both.

Three roles, one class each: ``Worker`` runs everything in one process (the tests use
it); ``WorkerWithRelayChild`` is ``contacts worker``, which runs the relay in a child
process (``RelayChild``, ``contacts relay``) at a lower CPU priority: publishing an
import's thousands of ``contact.created`` messages may lag behind the import, but never
takes a core from the import, whose response waits for its batches (docs/imports.md,
"Performance").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql

from events import inbound
from events.erasure import Eraser
from events.relay import Relay
from service.pending_lists import merge_pending_lists
from service import import_jobs, job_leases
from service.bootstrap import Container
from service.retention import purge_expired

log = logging.getLogger(__name__)
# The relay runs in a session (scheduling group) of its own with this niceness: weight
# 110 against 1024 for each busy nice-0 group, so it takes about a twentieth of the
# machine while an import keeps api, worker and PostgreSQL busy, yet keeps publishing
# under sustained load (at 19 it starved: 58 s behind a 20k-row import at load 8).
RELAY_NICENESS = 10
NOTIFY_COALESCE_S = 0.005  # the longest a wake-up waits behind the one before it (the relay's grows with its rate)


class Worker:
    """``contacts worker`` in one process: queued imports, the retention purge, the eraser, the inbound SMS
    consumer and the NATS relay, as asyncio tasks (the tests run it so, in a thread)."""

    def __init__(self, container: Container, nats_url: str, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 retention_interval_s: float = 6 * 3600, import_slots: int = 2,
                 abandoned_after_s: float = job_leases.ABANDONED_AFTER_S):
        self.container = container
        self.nats_url = nats_url
        self.clock = clock
        self.retention_interval_s = retention_interval_s
        self.abandoned_after_s = abandoned_after_s
        self.import_slots = import_slots
        self.imports_wakeup = asyncio.Event()
        self.relay = self._local_relay()
        # Purged contacts are erased from the stream here, off the relay's ordered path.
        self.eraser = Eraser(container.pool, nats_url=nats_url, database_url=container.database_url,
                             stream=container.settings.nats_stream) if nats_url else None
        self.stop = asyncio.Event()

    def _local_relay(self) -> Relay | None:
        """The relay this process runs (none without NATS)."""
        return self.container.relay(self.nats_url) if self.nats_url else None

    def _relay_task(self) -> Coroutine[Any, Any, None] | None:
        """What publishes to NATS: here, this process's relay (none without NATS)."""
        return self.relay.run(self.stop) if self.relay is not None else None

    def _wake(self) -> None:
        """Wake the relay (if this process runs it) and the import slots: the first round at start."""
        if self.relay is not None:
            self.relay.wakeup.set()
        self.imports_wakeup.set()

    async def _imports(self) -> None:
        """Run queued imports, several at once (each in its own thread)."""
        running: set[asyncio.Task] = set()
        while not self.stop.is_set():
            while len(running) < self.import_slots:
                try:
                    claimed = await asyncio.to_thread(job_leases.claim_next, self.container)
                except Exception as exc:  # noqa: BLE001 - the database is away: look again next round
                    # Uncaught, this ended the loop for good: queued imports waited for a worker restart.
                    log.warning("worker: cannot claim queued imports (%s: %s); retrying", type(exc).__name__, exc)
                    break
                if claimed is None:
                    break
                task = asyncio.create_task(asyncio.to_thread(import_jobs.run_job, self.container, claimed))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: self.imports_wakeup.set())  # the slot is free for the next job
            self.imports_wakeup.clear()
            try:
                await asyncio.wait_for(self.imports_wakeup.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                pass
        await asyncio.gather(*running, return_exceptions=True)

    async def _every(self, interval_s: float, what: str, work: Callable[[], Any]) -> None:
        """Run ``work`` in a thread at start-up and then every ``interval_s`` seconds until stopped."""
        while not self.stop.is_set():
            try:
                await asyncio.to_thread(work)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("worker: %s failed", what)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=interval_s)
            except asyncio.TimeoutError:
                pass

    def _retention(self) -> Coroutine[Any, Any, None]:
        """Purge expired trash at start-up and then every few hours (at least daily)."""
        return self._every(self.retention_interval_s, "retention purge",
                           lambda: purge_expired(self.container, self.clock()))

    def _abandoned_imports(self) -> Coroutine[Any, Any, None]:
        """Mark failed the synchronous imports whose process died mid-import with no key to resume them."""
        return self._every(min(60.0, max(1.0, self.abandoned_after_s / 2)), "the look for abandoned imports",
                           lambda: job_leases.fail_abandoned(self.container, self.abandoned_after_s))

    async def run(self) -> None:
        """Run every task until ``stop`` is set."""
        wakers = {import_jobs.queue_channel(self.container): self.imports_wakeup.set}
        jobs = [listen(self.container.database_url, wakers, self.stop), self._retention(), self._imports(),
                self._abandoned_imports(),
                merge_pending_lists(self.container.database_url, self.stop), self._relay_task()]
        if self.relay is not None:
            # Every write notifies the events channel: only a process that relays listens to it
            # (a wake-up per write cost the worker 0.14 ms of CPU per write while its relay ran
            # in the child process), on a connection of its own that the relay's gate closes.
            jobs.append(listen_for_relay(self.container, self.relay, self.stop))
        if self.eraser is not None:
            jobs.append(self.eraser.run(self.stop))
        if self.nats_url:
            settings = self.container.settings
            jobs.append(inbound.consume(self.container, self.nats_url, settings.inbound_subject,
                                        f"{settings.nats_stream}_INBOUND", self.stop, settings.nats_replicas))
        try:
            await until_stopped(self.stop, [job for job in jobs if job is not None], then=self._wake)
        finally:
            if self.relay is not None:
                await self.relay.close()


class WorkerWithRelayChild(Worker):
    """``contacts worker`` as deployed: the worker's tasks, with the relay in a ``contacts relay`` child process
    at a lower CPU priority (``RelayChild``)."""

    def _local_relay(self) -> Relay | None:
        return None  # the child relays; this process only keeps it running

    def _relay_task(self) -> Coroutine[Any, Any, None] | None:
        """What publishes to NATS: here, the supervisor of the relay child (none without NATS)."""
        return self._relay_child() if self.nats_url else None

    async def _relay_child(self) -> None:
        """Keep a ``contacts relay`` child process running, at a lower CPU priority."""
        env = {**os.environ, **relay_env(self.container, self.nats_url)}
        while not self.stop.is_set():
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", "relay", env=env,
                                                        preexec_fn=_relay_session)
            try:
                await proc.wait()
            except asyncio.CancelledError:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), timeout=20)
                    except asyncio.TimeoutError:
                        proc.kill()
                raise
            log.warning("worker: relay process exited with code %s; restarting", proc.returncode)
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass


class RelayChild:
    """``contacts relay``, the worker's child process: LISTEN for stored events and relay them, nothing else."""

    def __init__(self, container: Container, nats_url: str):
        self.container = container
        self.relay = container.relay(nats_url)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Relay until ``stop`` is set, at a lower CPU priority."""
        lower_priority()
        try:
            await until_stopped(self.stop, [listen_for_relay(self.container, self.relay, self.stop),
                                            self.relay.run(self.stop)], then=self.relay.wakeup.set)
        finally:
            await self.relay.close()


def listen_for_relay(container: Container, relay: Relay, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
    """Wake ``relay`` when events are stored: the event store's channel, paced and gated by the relay."""
    return listen(container.database_url, {container.app.recorder.channel_name: relay.wakeup.set}, stop,
                  relay.coalesce_s, relay.wakeups_wanted)


def _fixed_coalesce() -> float:
    return NOTIFY_COALESCE_S


async def listen(database_url: str, wakers: dict[str, Callable[[], None]], stop: asyncio.Event,
                 coalesce_s: Callable[[], float] = _fixed_coalesce, gate: asyncio.Event | None = None) -> None:
    """Call a channel's waker on each of its notifications (the event store's, the import queue's).

    A second without any notification calls every waker (the safety tick): a job whose
    worker died is claimed again then, as nothing announces a lost lock. After a wake-up
    the next notifications are read ``coalesce_s()`` later, all at once.

    While ``gate`` is closed (the relay publishing without a pause: events/relay.py) the
    connection does not listen: each notification cost the listening PostgreSQL backend
    about 50 µs of CPU and this process as much again, for a wake-up nobody needed. Once
    it opens, the connection listens again and calls the wakers once, for a write stored
    before the ``LISTEN`` that no notification announces.
    """
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await _listening(conn, wakers, True)
                while not stop.is_set():
                    if gate is not None and not gate.is_set():
                        await _listening(conn, wakers, False)
                        await _first(gate.wait(), stop.wait())
                        await _listening(conn, wakers, True)
                        for wake in wakers.values():
                            wake()
                        continue
                    heard = {notify.channel async for notify in conn.notifies(timeout=1.0, stop_after=1)}
                    for wake in [wakers[c] for c in heard if c in wakers] if heard else wakers.values():
                        wake()
                    if heard:
                        # Under load every write notifies: reading them a few ms apart wakes this
                        # process once for many (a wake per write cost the relay process 70 µs of
                        # CPU per write, a third of its share), and the relay, once woken,
                        # publishes everything stored up to then anyway. The relay's pause grows
                        # with its rate (events/relay.py, coalesce_s): each read then drains more.
                        await asyncio.sleep(coalesce_s())
        except (psycopg.Error, OSError) as exc:
            log.warning("worker: LISTEN connection lost (%s); reconnecting", exc)
            await asyncio.sleep(1.0)


async def _listening(conn: psycopg.AsyncConnection[Any], channels: dict[str, Any], on: bool) -> None:
    for channel in channels:
        await conn.execute(sql.SQL("LISTEN {}" if on else "UNLISTEN {}").format(sql.Identifier(channel)))


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of ``waits`` does; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def until_stopped(stop: asyncio.Event, jobs: list[Coroutine[Any, Any, None]],
                        then: Callable[[], None]) -> None:
    """Run ``jobs`` as tasks, call ``then`` (a first wake-up), and cancel them all once ``stop`` is set."""
    tasks = [asyncio.create_task(job) for job in jobs]
    then()
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _relay_session() -> None:
    """In the relay child, before exec: a session of its own; on Linux, end it when the worker dies."""
    os.setsid()
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphaned relay
    except (OSError, AttributeError):
        pass


def lower_priority() -> None:
    """Lower this process's CPU priority and its session's (called by the relay once started).

    Linux schedules sessions as groups (autogroup): niced inside the worker's session,
    the relay still took that session's share whenever api and worker waited on
    PostgreSQL, competing with PostgreSQL itself. In a session of its own whose group
    is niced too, it yields to the import and still makes progress under load. It is
    lowered only once started, so that a busy machine does not starve its start-up.
    """
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(RELAY_NICENESS))
    except OSError:
        pass  # no autogroup scheduling here: the process's own nice is enough
    os.nice(RELAY_NICENESS)


def relay_env(container: Container, nats_url: str) -> dict[str, str]:
    """The settings a ``contacts relay`` child needs, as its environment."""
    settings = container.settings
    return {"CONTACTS_DATABASE_URL": container.database_url, "CONTACTS_NATS_URL": nats_url,
            "CONTACTS_NATS_STREAM": settings.nats_stream,
            "CONTACTS_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix,
            "CONTACTS_NATS_DUPLICATE_WINDOW_S": str(settings.nats_duplicate_window_s),
            "CONTACTS_NATS_REPLICAS": str(settings.nats_replicas),
            "CONTACTS_DB_POOL_SIZE": str(settings.db_pool_size)}

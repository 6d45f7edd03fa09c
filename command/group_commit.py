"""Group commit, one level above PostgreSQL's: writes that arrive while a group is being
committed go together in the next group, one transaction for all of them.

Under load one BEGIN, one lock, one COMMIT and one flush wait serve many writes; a write
alone goes at once. A group that failed having surely stored nothing (``stored_nothing``:
the server refused a statement) goes again one write at a time, so that a bad write fails
only itself; a group whose fate is unknown (the connection was lost) answers each of its
writes with the error, as a single write would. Two forms, for the two places a write
starts from: ``WriteGroups`` for use cases running in threads, ``LoopGroups`` for those
on the API's event loop. command/unit_of_work.py commits the groups.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from eventsourcing.persistence import PersistenceError

T = TypeVar("T")


class GroupedWrite(Protocol):
    """What ``WriteGroups`` reads and sets on a write (command/unit_of_work.py ``_Write``)."""

    done: threading.Event    # set when its group has answered
    alone: bool              # its group failed having stored nothing: it commits again on its own
    error: BaseException | None
    committed: bool


W = TypeVar("W", bound=GroupedWrite)


class WriteGroups(Generic[W]):
    """Single writes that arrive while others are being committed go together in one transaction.

    ``writers`` threads take the queued writes, ``limit`` at most at a time, and commit each
    group as one transaction (``commit``): one BEGIN, one lock, one COMMIT and one flush
    wait for the group, the writes' statements in between in their order of arrival. A
    write alone goes at once. A group that stored nothing (``alone_if``, by default: the
    server refused a statement, as on a lost race on a version or a number, or bad data)
    commits again one write at a time, so the write at fault fails alone (and a lost race
    is retried by its use case, as before). A group whose fate is unknown (the connection
    was lost) answers every write with the error, as a single write would. The threads
    leave after a second without work and come back with the next write.
    """

    def __init__(self, commit: Callable[[list[W]], None], writers: int = 2, limit: int = 32,
                 alone_if: Callable[[BaseException], bool] | None = None):
        self._commit = commit
        self._writers = writers
        self._limit = limit
        self._alone_if = alone_if or stored_nothing
        self._ready = threading.Condition()
        self._queue: deque[W] = deque()
        self._threads = 0
        self._idle = 0
        self.groups = 0
        self.grouped = 0

    def submit(self, write: W) -> None:
        """Commit ``write`` in whichever group it joins, or raise its error."""
        with self._ready:
            self._queue.append(write)
            if self._idle:
                self._ready.notify()
            elif self._threads < self._writers:
                self._threads += 1
                threading.Thread(target=self._work, name="write-group", daemon=True).start()
        write.done.wait()
        if write.alone:
            self._commit([write])
        elif write.error is not None:
            raise write.error

    def _work(self) -> None:
        """A writer thread: commit groups until the queue has stayed empty for a second."""
        while True:
            with self._ready:
                if not self._queue:
                    self._idle += 1
                    self._ready.wait(1.0)
                    self._idle -= 1
                    if not self._queue:
                        self._threads -= 1
                        return
                group = [self._queue.popleft() for _ in range(min(self._limit, len(self._queue)))]
                self.groups += 1
                self.grouped += len(group)
            try:
                self._commit(group)
            except BaseException as exc:
                alone = len(group) > 1 and not group[0].committed and self._alone_if(exc)
                for write in group:
                    if alone:
                        write.alone = True
                    else:
                        write.error = exc
            for write in group:
                write.done.set()


class LoopGroups(Generic[T]):
    """Work that arrives while a group is in hand goes together in the next group, on the event loop.

    The first item to arrive while no group is in hand starts one at once, with every
    item queued by then (``limit`` at most): ``store`` takes the group in one statement or
    transaction, in a thread of its own (a few, so that no other work of the process's
    executor delays a group). As soon as that has committed (``store`` calls back), the
    items queued meanwhile start the next group, while this one waits for the WAL flush.
    Under load one statement, one lock, one commit, one flush and one thread serve many
    items (PostgreSQL's group commit, one level up); an item alone goes at once. A group
    that failed before its commit, when ``alone_if`` says the failure stored nothing
    (creates: any failure; writes: a statement the server refused), goes again one item
    at a time, so a bad item fails only itself; otherwise every item gets the error.

    Groups form per event loop (an API process has one). ``groups`` and ``grouped`` count
    the groups started and the items in them (metrics: their ratio is the mean group's size).
    """

    def __init__(self, store: Callable[[list[T], Callable[[], None]], None], limit: int = 64,
                 alone_if: Callable[[BaseException], bool] = lambda error: True):
        self._store = store
        self._limit = limit
        self._alone_if = alone_if
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
        self._new_loop = threading.Lock()
        # One group's statement and the one before's flush wait at once; the rest is for the
        # items stored alone after a failed group.
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loop-group")
        self.groups = 0
        self.grouped = 0

    async def submit(self, item: T) -> None:
        """Store ``item`` in whichever group it joins (its answer is the store's to set on it)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            with self._new_loop:
                queue = self._queues.setdefault(loop, _Queue())
        answer: asyncio.Future[Any] = loop.create_future()
        queue.waiting.append((item, answer))
        if not queue.writing:
            self._start(loop, queue)
        if await answer is _ALONE:
            await loop.run_in_executor(self._threads, self._store, [item], _nothing)

    def _start(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        """Store the queue's first ``limit`` items as one group; answer them when it is done."""
        queue.writing = True
        group = [queue.waiting.popleft() for _ in range(min(self._limit, len(queue.waiting)))]
        self.groups += 1
        self.grouped += len(group)
        committed: list[bool] = []

        def next_group() -> None:  # on the loop, once per group
            if queue.waiting:
                self._start(loop, queue)
            else:
                queue.writing = False

        def on_commit() -> None:  # in the executor's thread
            committed.append(True)
            loop.call_soon_threadsafe(next_group)

        def answer(done: asyncio.Future[None]) -> None:
            error = done.exception()
            if error is not None and not committed:
                next_group()  # the group failed before its commit
            alone = error is not None and not committed and len(group) > 1 and self._alone_if(error)
            for item, waiting in group:
                if waiting.done():  # the request went away; its write stands
                    continue
                if error is None:
                    waiting.set_result(None)
                elif alone:
                    waiting.set_result(_ALONE)
                else:  # it failed alone, or committed but its flush wait failed
                    waiting.set_exception(error)

        loop.run_in_executor(self._threads, self._store, [item for item, _ in group], on_commit
                             ).add_done_callback(answer)


class _Queue:
    """One event loop's items waiting for a group, and whether a group is in hand."""

    __slots__ = ("waiting", "writing")

    def __init__(self) -> None:
        self.waiting: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        self.writing = False


_ALONE = object()  # an item whose group failed: stored again on its own


def _nothing() -> None:
    """No next group to start: an item stored on its own belongs to none."""


def stored_nothing(exc: BaseException) -> bool:
    """Whether a transaction that raised ``exc`` surely stored nothing: the server refused a statement
    (its SQLSTATE is not a lost connection's or a crashed server's), or it never reached the server."""
    state = sqlstate(exc)
    if state is not None:
        return state[:2] not in ("08", "53", "57", "58", "XX")
    return not any(isinstance(error, (psycopg.Error, PersistenceError)) for error in (exc, exc.__cause__))


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, or of the one an eventsourcing error was raised from."""
    for error in (exc, exc.__cause__):
        if isinstance(error, psycopg.Error):
            return error.sqlstate
    return None

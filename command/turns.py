"""Writers of one aggregate in this process take turns, so that they do not lose races to each other.

A use case loads an aggregate, changes it and commits the new events at the next version;
two that loaded the same version cannot both commit, and the loser is re-run from a fresh
load (``application.retry_on_conflict``). Writes that arrive together commit together (the
group commits of ``command/group_commit.py``), so N concurrent PATCHes of one contact
loaded the same version, one of them was stored, and the N-1 others met again on their
re-run: 16 clients PATCHing one contact at once got 170 of 400 answers 409 "changed
concurrently too many times" (measured with the service's own API, 2026-12-06), for
requests that asked for no version check at all.

``one_at_a_time("contact_id")`` queues the calls of a use case that name the same
aggregate: each loads what the one before it committed. Only this process's writers wait
here; a writer in another API process still meets them in the event store, and the
version check there (with the re-run) is what keeps every write correct. A turn is held
from the load to the commit (a few milliseconds), the waiting calls in arrival order.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
L = TypeVar("L", asyncio.Lock, threading.Lock)


class Turns(Generic[L]):
    """One lock per key while anyone holds or waits for it (so the map stays as small as the queue)."""

    def __init__(self, make: Callable[[], L]):
        self.make = make
        self.locks: dict[Any, list[Any]] = {}  # key -> [lock, holders and waiters]
        self.guard = threading.Lock()

    def enter(self, key: Any) -> L:
        with self.guard:
            entry = self.locks.get(key)
            if entry is None:
                entry = self.locks[key] = [self.make(), 0]
            entry[1] += 1
            return entry[0]

    def leave(self, key: Any) -> None:
        with self.guard:
            entry = self.locks[key]
            entry[1] -= 1
            if not entry[1]:
                del self.locks[key]


_ON_LOOP: Turns[asyncio.Lock] = Turns(asyncio.Lock)      # the use cases on the event loop
_IN_THREADS: Turns[threading.Lock] = Turns(threading.Lock)  # those run in threads


def one_at_a_time(argument: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Calls of the decorated use case (a coroutine's too) whose ``argument`` is the same aggregate id run in turn.

    About 2 us a call (with ``inspect.signature().bind`` and context managers it was 8).
    """
    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        position = list(inspect.signature(func).parameters).index(argument)

        def key(args: tuple, kwargs: dict) -> Any:
            return args[position] if len(args) > position else kwargs[argument]

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def in_turn_async(*args: Any, **kwargs: Any) -> Any:
                # An asyncio lock belongs to one loop: a process with several (the tests' servers) keeps theirs apart.
                turn = (asyncio.get_running_loop(), key(args, kwargs))
                lock = _ON_LOOP.enter(turn)
                try:
                    async with lock:
                        return await func(*args, **kwargs)
                finally:
                    _ON_LOOP.leave(turn)

            return in_turn_async  # type: ignore[return-value]

        @functools.wraps(func)
        def in_turn(*args: Any, **kwargs: Any) -> T:
            aggregate_id = key(args, kwargs)
            lock = _IN_THREADS.enter(aggregate_id)
            try:
                with lock:
                    return func(*args, **kwargs)
            finally:
                _IN_THREADS.leave(aggregate_id)

        return in_turn

    return decorate

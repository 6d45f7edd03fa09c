"""Waits on a condition: poll with a short interval, fail naming what never happened; and a function held
until a test lets it go."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What a test waited for never happened (an AssertionError, so pytest reports it as a failure)."""


def _timed_out(what: str | Callable[[], str], timeout: float) -> WaitTimeout:
    # ``what`` may be a callable so that the message can say the state at the end (a job, a last error).
    return WaitTimeout(f"timed out after {timeout:g} s waiting until {what() if callable(what) else what}")


def wait_until(predicate: Callable[[], T], what: str | Callable[[], str], timeout: float = 30,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail naming ``what`` never happened.

    Tests wait on a condition, never for a fixed time: a fast machine goes on at once and a
    loaded one gets until ``timeout``. The predicate runs once more after the deadline. A
    predicate whose answer may be falsy (a count of 0, an index 0) returns something that is not.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)
    return value


async def wait_until_async(predicate: Callable[[], Awaitable[T]], what: str | Callable[[], str],
                           timeout: float = 30, interval: float = 0.05) -> T:
    """``wait_until`` for an async predicate, sleeping on the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(interval)
    return value


class Held:
    """A module's function held at its start until ``release()``, then run for real; ``calls`` counts the
    calls begun (a test fills the threads that run such calls, then checks what still answers)."""

    def __init__(self, monkeypatch: Any, module: Any, name: str):
        self._begun: list[None] = []  # appended to by each call's thread (atomic, where += is not)
        self._released = threading.Event()
        real = getattr(module, name)

        def held(*args: Any, **kwargs: Any) -> Any:
            self._begun.append(None)
            self._released.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, held)

    @property
    def calls(self) -> int:
        return len(self._begun)

    def release(self) -> None:
        self._released.set()

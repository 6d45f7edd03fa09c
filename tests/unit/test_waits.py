"""tests/waits.py: a wait returns as soon as its condition holds and fails naming what never happened."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waits import WaitTimeout, wait_until, wait_until_async


def test_a_wait_returns_the_first_truthy_value_as_soon_as_the_condition_holds() -> None:
    answers = iter([None, 0, [], {"status": "completed"}])
    started = time.monotonic()
    assert wait_until(lambda: next(answers), "the job completed", timeout=5, interval=0.01) == {"status": "completed"}
    assert time.monotonic() - started < 1


def test_a_wait_that_times_out_fails_naming_what_never_happened() -> None:
    polls = []
    with pytest.raises(AssertionError, match=r"timed out after 0.2 s waiting until the relay caught up"):
        wait_until(lambda: polls.append(1), "the relay caught up", timeout=0.2, interval=0.01)
    assert len(polls) > 2  # it polled, and once more after the deadline


def test_a_wait_message_can_say_the_state_at_the_end() -> None:
    state = {"status": "queued"}

    def advance() -> bool:
        state["status"] = "running"
        return False

    with pytest.raises(WaitTimeout, match="job finished, last seen {'status': 'running'}"):
        wait_until(advance, lambda: f"job finished, last seen {state}", timeout=0.05, interval=0.01)


def test_an_async_wait_polls_on_the_event_loop_and_fails_the_same_way() -> None:
    answers = iter([False, False, "ready"])

    async def probe() -> str | bool:
        return next(answers)

    assert asyncio.run(wait_until_async(probe, "ready", timeout=5, interval=0.01)) == "ready"

    async def never() -> bool:
        return False

    with pytest.raises(WaitTimeout, match="waiting until the stream exists"):
        asyncio.run(wait_until_async(never, "the stream exists", timeout=0.05, interval=0.01))

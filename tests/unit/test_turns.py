"""Use cases naming the same aggregate run one after another in a process; others run side by side."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from command import turns
from command.turns import one_at_a_time


class _Recorder:
    def __init__(self) -> None:
        self.inside: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.all_inside = self.most_inside = 0  # over every key
        self.guard = threading.Lock()

    def enter(self, key: str) -> None:
        with self.guard:
            self.inside[key] = self.inside.get(key, 0) + 1
            self.most[key] = max(self.most.get(key, 0), self.inside[key])
            self.all_inside += 1
            self.most_inside = max(self.most_inside, self.all_inside)

    def leave(self, key: str) -> None:
        with self.guard:
            self.inside[key] -= 1
            self.all_inside -= 1


def test_threads_naming_one_aggregate_take_turns_and_others_do_not_wait() -> None:
    seen = _Recorder()

    @one_at_a_time("aggregate_id")
    def write(actor: str, aggregate_id: str, *, pause: float = 0.01) -> str:
        seen.enter(aggregate_id)
        time.sleep(pause)
        seen.leave(aggregate_id)
        return aggregate_id

    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(lambda i: write("me", "a" if i % 2 else f"b{i}"), range(16)))
    assert done.count("a") == 8
    assert seen.most["a"] == 1                                        # never two at once
    assert seen.most_inside > 1  # the others ran beside the turns of "a", not after them
    assert not turns._IN_THREADS.locks  # nothing kept once nobody holds or waits


def test_a_turn_is_given_back_when_the_use_case_raises() -> None:
    @one_at_a_time("aggregate_id")
    def fail(aggregate_id: str) -> None:
        raise ValueError(aggregate_id)

    for _ in range(2):  # the second would wait for ever if the first kept its turn
        try:
            fail("x")
        except ValueError:
            pass
    assert not turns._IN_THREADS.locks


def test_coroutines_naming_one_aggregate_take_turns_in_arrival_order() -> None:
    seen, order = _Recorder(), []

    @one_at_a_time("contact_id")
    async def patch(contact_id: str, n: int) -> None:
        seen.enter(contact_id)
        await asyncio.sleep(0.005)
        if contact_id == "c":
            order.append(n)
        seen.leave(contact_id)

    async def main() -> None:
        await asyncio.gather(*(patch("c", n) for n in range(10)), *(patch(f"other{n}", n) for n in range(5)))

    asyncio.run(main())
    assert seen.most["c"] == 1 and seen.most_inside > 1
    assert order == list(range(10))
    assert not turns._ON_LOOP.locks

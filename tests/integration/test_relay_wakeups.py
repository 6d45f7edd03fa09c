"""The relay's wake-ups (service/worker.py listen): gated while the relay publishes batch after batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg

from service.worker import listen

CHANNEL = "relay_wakeups_test"


async def _notify(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"NOTIFY {CHANNEL}")


async def _last_statement(url: str) -> list[str]:
    """What the listening connection ran last: LISTEN or UNLISTEN."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT split_part(query, ' ', 1) FROM pg_stat_activity"
                                 " WHERE query LIKE %s AND pid <> pg_backend_pid()", (f"%LISTEN%{CHANNEL}%",))
        return [q for (q,) in await cur.fetchall()]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_closed_gate_stops_listening_and_its_opening_wakes_at_once(fresh_database: str) -> None:
    async def body() -> None:
        wakes: list[int] = []
        stop, gate = asyncio.Event(), asyncio.Event()
        gate.set()
        task = asyncio.create_task(listen(fresh_database, {CHANNEL: lambda: wakes.append(1)}, stop,
                                          lambda: 0.001, gate))

        def woken_after(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return len(wakes) > n
            return check

        def ran(statement: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return await _last_statement(fresh_database) == [statement]
            return check

        try:
            await _until(ran("LISTEN"))
            seen = len(wakes)
            await _notify(fresh_database)
            await _until(woken_after(seen))  # a notification wakes

            gate.clear()  # the relay publishes batch after batch: no wake-up wanted
            await _notify(fresh_database)  # the last one heard: the gate is looked at after it
            await _until(ran("UNLISTEN"))
            closed = len(wakes)
            await _notify(fresh_database)
            await asyncio.sleep(1.5)  # nothing heard, and no safety tick either, while closed
            assert len(wakes) == closed

            gate.set()  # a look found nothing: wake-ups wanted again
            await _until(woken_after(closed))  # at once: a write stored meanwhile had no notification
            assert await _last_statement(fresh_database) == ["LISTEN"]
            opened = len(wakes)
            await _notify(fresh_database)
            await _until(woken_after(opened))
        finally:
            stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(body())

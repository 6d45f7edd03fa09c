"""The relay's JetStream acks (events.acks.AckWindow) against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from events.acks import AckWindow


async def _with_stream(nats_url: str, body) -> None:  # noqa: ANN001
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"ACKS_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], duplicate_window=60)
    try:
        await body(nc, js, name)
    finally:
        await js.delete_stream(name)
        await nc.close()


def test_every_message_is_stored_once_and_acknowledged(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        acks = AckWindow(nc)
        await acks.start()
        for i in range(2500):
            await acks.publish(f"{name.lower()}.c.{i % 7}", b'{"n":%d}' % i, f"id-{i}")
        assert acks.in_flight > 0
        await acks.settle()
        assert acks.in_flight == 0
        # A republished batch (a relay restarted before its checkpoint) stores nothing new.
        for i in range(0, 2500, 3):
            await acks.publish(f"{name.lower()}.c.{i % 7}", b'{"n":%d}' % i, f"id-{i}")
        await acks.settle()
        assert (await js.stream_info(name)).state.messages == 2500
        await acks.settle()  # nothing in flight: returns at once

    asyncio.run(_with_stream(nats_url, body))


def test_a_message_no_stream_takes_is_a_refusal_not_a_silent_loss(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        acks = AckWindow(nc)
        await acks.start()
        await acks.publish(f"{name.lower()}.c.1", b"{}", "kept")
        await acks.publish(f"nostream-{uuid.uuid4().hex}.c.1", b"{}", "lost")
        with pytest.raises(RuntimeError, match="no stream answered"):
            await acks.settle()
        await acks.publish(f"{name.lower()}.c.2", b"{}", "next")
        await acks.settle()  # the refusal was reported once; the window goes on
        assert (await js.stream_info(name)).state.messages == 2

    asyncio.run(_with_stream(nats_url, body))


def test_a_stream_error_is_a_refusal(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        acks = AckWindow(nc)
        await acks.start()
        # The stream is not the one this message expects: JetStream answers with an error.
        await nc.publish(f"{name.lower()}.c.1", b"{}", reply=acks.expect(),
                         headers={"Nats-Msg-Id": "x", "Nats-Expected-Stream": "OTHER"})
        with pytest.raises(RuntimeError, match="refused"):
            await acks.settle()

    asyncio.run(_with_stream(nats_url, body))


def test_missing_acks_time_out(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        acks = AckWindow(nc, timeout_s=0.5)
        await acks.start()
        acks.expect()  # for a publish whose answer never comes
        with pytest.raises(TimeoutError, match="1 JetStream acks missing"):
            await acks.settle()

    asyncio.run(_with_stream(nats_url, body))

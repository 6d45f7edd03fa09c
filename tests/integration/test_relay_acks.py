"""The relay's JetStream acks (events.acks.AckWindow) against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from events.acks import AckWindow, BatchingRefused, FastBatch


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


async def _with_batched_stream(nats_url: str, body, **settings) -> None:  # noqa: ANN001
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"FAST_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], duplicate_window=60, **settings)
    try:
        await body(nc, js, name)
    finally:
        await js.delete_stream(name)
        await nc.close()


async def _stored(js, name: str) -> list[tuple[str, bytes, str]]:  # noqa: ANN001
    """Every message of the stream in stream order: subject, data, message id."""
    info = await js.stream_info(name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        m = await js.get_msg(name, seq)
        found.append((m.subject, m.data, m.headers["Nats-Msg-Id"]))
    return found


def test_a_fast_batch_stores_every_message_once_in_order(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        batch = FastBatch(nc)
        await batch.start()
        sent = [(f"{name.lower()}.c.{i % 7}", b'{"n":%d}' % i, f"id-{i}") for i in range(2500)]
        peak = 0
        for message in sent:
            await batch.publish(*message)
            peak = max(peak, batch.in_flight)
        # Publishing waits while 2,000 are unacknowledged: never more are in flight (how many
        # are at the end depends on how fast the server acknowledged).
        assert 0 < peak <= FastBatch.FLOW * FastBatch.OUTSTANDING
        await batch.settle()
        assert batch.in_flight == 0
        # Republished (a relay restarted before its checkpoint), duplicates and all, then new ones.
        for message in sent[1000:] + [(f"{name.lower()}.c.0", b'{"n":2500}', "id-2500")]:
            await batch.publish(*message)
        await batch.settle()
        assert await _stored(js, name) == sent + [(f"{name.lower()}.c.0", b'{"n":2500}', "id-2500")]
        await batch.settle()  # nothing open: returns at once

    asyncio.run(_with_batched_stream(nats_url, body, allow_batched=True))


def test_a_stream_that_takes_no_fast_batches_refuses_the_first_message(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        batch = FastBatch(nc)
        await batch.start()
        with pytest.raises(BatchingRefused):
            await batch.publish(f"{name.lower()}.c.1", b"{}", "first")
        assert (await js.stream_info(name)).state.messages == 0
        acks = AckWindow(nc)  # what the relay falls back to
        await acks.start()
        await acks.publish(f"{name.lower()}.c.1", b"{}", "first")
        await acks.settle()
        assert (await js.stream_info(name)).state.messages == 1

    asyncio.run(_with_batched_stream(nats_url, body))


def test_a_refused_message_ends_the_batch_where_it_stands(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        batch = FastBatch(nc)
        await batch.start()
        with pytest.raises(RuntimeError, match="message size exceeds maximum"):
            for i in range(3):
                await batch.publish(f"{name.lower()}.c.{i}", b"{}", f"small-{i}")
            await batch.publish(f"{name.lower()}.c.3", b"x" * 500, "too-big")  # over the stream's max_msg_size
            for i in range(4, 10):
                await batch.publish(f"{name.lower()}.c.{i}", b"{}", f"small-{i}")
            await batch.settle()
        # In order and without a gap: what came after the refused message was not stored either.
        assert [m[2] for m in await _stored(js, name)] == ["small-0", "small-1", "small-2"]
        # The next batch starts afresh.
        await batch.publish(f"{name.lower()}.c.9", b"{}", "after")
        await batch.settle()
        assert (await js.stream_info(name)).state.messages == 4

    asyncio.run(_with_batched_stream(nats_url, body, allow_batched=True, max_msg_size=200))


def test_a_fast_batch_with_no_stream_is_a_refusal(nats_url: str) -> None:
    async def body(nc, js, name) -> None:  # noqa: ANN001
        batch = FastBatch(nc)
        await batch.start()
        with pytest.raises(RuntimeError, match="no stream answered"):
            await batch.publish(f"nostream-{uuid.uuid4().hex}.c.1", b"{}", "lost")

    asyncio.run(_with_batched_stream(nats_url, body, allow_batched=True))

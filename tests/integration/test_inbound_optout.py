"""Inbound STOP messages on NATS opt contacts out, idempotently."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path

import nats
import pytest
from nats.js.api import RetentionPolicy

from command.optout import is_stop
from service.embedded import EmbeddedNats
from tests.support import Service, start_service
from tests.waits import wait_until, wait_until_async


@pytest.mark.parametrize("body, stop", [("STOP", True), (" stop ", True), ("StopAll", True), ("unsubscribe", True),
                                        ("CANCEL", True), ("end", True), ("Quit\n", True), ("stop please", False),
                                        ("hello", False), ("", False)])
def test_stop_words(body: str, stop: bool) -> None:
    assert is_stop(body) is stop


async def _publish(url: str, subject: str, payloads: list[dict]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def captured() -> bool:
        try:
            return bool(await js.find_stream_name_by_subject(subject))
        except nats.js.errors.NotFoundError:
            return False

    # The worker creates the inbound stream when it starts.
    await wait_until_async(captured, f"a stream captures the inbound subject {subject}", 20, 0.1)
    for payload in payloads:
        await js.publish(subject, json.dumps(payload).encode())
    await nc.close()


def _wait_opted_out(api, contact_id: str, expected: bool, timeout: float = 20) -> dict:
    def seen() -> dict | None:
        contact = api.get(f"/api/v1/contacts/{contact_id}").json()
        return contact if contact["isOptedOut"] is expected else None

    # The consumer runs in the worker; poll as a client would.
    return wait_until(seen, f"contact {contact_id} has isOptedOut {expected}", timeout, 0.1)


def test_inbound_stop_from_a_known_number_opts_the_contact_out(service: Service) -> None:
    api, other = service.client(), service.client()
    mine = api.create_contact("0712345678")
    theirs = other.create_contact("0712345678")
    bystander = api.create_contact("0722000000")
    last = api.create_contact("0733000000")
    subject = f"{service.settings.inbound_subject}.{api.account_id}"
    asyncio.run(_publish(service.nats_url, subject, [
        {"from": "+254 712 345 678", "body": " Stop ", "messageId": "m1"},
        {"from": "+254712345678", "body": "STOP", "messageId": "m2"},      # again: no second event
        {"from": "+254722000000", "body": "thanks!", "messageId": "m3"},   # not a stop word
        {"from": "+254799999999", "body": "STOP", "messageId": "m4"},      # unknown number
        {"garbage": True},
        {"from": "0733000000", "body": "quit", "messageId": "m5"},          # processed last, in order
    ]))
    assert _wait_opted_out(api, last["id"], True)["isOptedOut"] is True
    assert api.get(f"/api/v1/contacts/{mine['id']}").json()["isOptedOut"] is True
    history = api.get(f"/api/v1/contacts/{mine['id']}/history").json()
    opted = [e for e in history if e["type"] == "contacts.contact.opted_out.v1"]
    assert len(opted) == 1 and opted[0]["actor"] == "inbound-sms" and "Stop" in opted[0]["data"]["reason"]
    assert api.get(f"/api/v1/contacts/{bystander['id']}").json()["isOptedOut"] is False
    assert other.get(f"/api/v1/contacts/{theirs['id']}").json()["isOptedOut"] is False  # other account untouched
    assert uuid.UUID(mine["id"])


async def _inbound_stream_info(url: str, stream: str, messages: int, timeout: float = 20) -> object:
    """The stream's info once it holds ``messages`` messages (the worker deletes each just after handling it)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()

        async def holding() -> object | None:
            info = await js.stream_info(stream)
            return info if info.state.messages == messages else None

        return await wait_until_async(holding, f"stream {stream} holds {messages} message(s)", timeout, 0.1)
    finally:
        await nc.close()


def test_a_handled_inbound_sms_leaves_no_number_in_the_stream_or_its_files(fresh_database: str, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbound stream is a work queue, and each handled message is deleted with its bytes overwritten."""
    from events import inbound

    # A message still being handled keeps the block file in use: with a work queue's ack
    # alone, the handled messages' bytes would stay in it, next to this one.
    release = threading.Event()
    handle = inbound._handle

    def held(container, subject: str, data: bytes) -> None:
        if b"HOLD" in data:
            release.wait(30)
        handle(container, subject, data)

    monkeypatch.setattr(inbound, "_handle", held)
    server = EmbeddedNats(tmp_path)  # our own server, so the test knows its store directory
    svc = start_service(fresh_database, server.start())
    try:
        api = svc.client()
        contact = api.create_contact("0745666321")
        subject = f"{svc.settings.inbound_subject}.{api.account_id}"
        asyncio.run(_publish(svc.nats_url, subject, [
            {"from": "+254799111222", "body": "hello", "messageId": "m1"},  # an unknown number
            {"from": "+254745666321", "body": "STOP", "messageId": "m2"},
            {"from": "+254700333444", "body": "HOLD", "messageId": "m3"},
        ]))
        assert _wait_opted_out(api, contact["id"], True)["isOptedOut"] is True
        stream = f"{svc.settings.nats_stream}_INBOUND"
        info = asyncio.run(_inbound_stream_info(svc.nats_url, stream, messages=1))
        assert info.config.retention == RetentionPolicy.WORK_QUEUE
        assert (info.state.messages, info.state.first_seq) == (1, 3)  # only the message being handled

        files = [p for p in (server.store / "jetstream" / "$G" / "streams" / stream).rglob("*") if p.is_file()]
        # The server writes the block a moment after the publish.
        wait_until(lambda: any(b"254700333444" in p.read_bytes() for p in files),
                   "the pending message reached the store files", 10, 0.1)
        for number in (b"254799111222", b"254745666321"):
            assert [str(p) for p in files if number in p.read_bytes()] == [], f"{number!r} still on disk"

        release.set()
        assert asyncio.run(_inbound_stream_info(svc.nats_url, stream, messages=0)).state.messages == 0
    finally:
        release.set()
        svc.close()
        server.stop()


def test_an_inbound_sms_is_erased_after_its_handling_and_before_its_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    """A work queue's ack removes a message unerased, so the delete comes first; if it fails, no ack."""
    from events import inbound

    steps: list[str] = []
    monkeypatch.setattr(inbound, "_handle", lambda container, subject, data: steps.append(f"handle {data.decode()}"))
    first, second = _Message("sms.inbound.a", b"1"), _Message("sms.inbound.a", b"2")

    async def erase(msg: _Message) -> None:
        steps.append(f"erase {msg.data.decode()} acked={msg.acked}")
        if msg is second:
            raise RuntimeError("NATS went away")

    async def drain() -> None:
        stop = asyncio.Event()
        await inbound._drain(_Subscription([[first, second]], stop), None, stop, erase)

    with pytest.raises(RuntimeError):
        asyncio.run(drain())
    assert steps == ["handle 1", "erase 1 acked=False", "handle 2", "erase 2 acked=False"]
    assert first.acked and not second.acked  # redelivered later, handled again (idempotently) and erased


class _Message:
    def __init__(self, subject: str, data: bytes):
        self.subject, self.data, self.acked = subject, data, False

    async def ack(self) -> None:
        self.acked = True


class _Subscription:
    """A pull subscription whose fetches answer from a script: a list of messages or an exception."""

    def __init__(self, script: list, stop: asyncio.Event):
        self.script, self.stop = script, stop

    async def fetch(self, batch: int, timeout: float) -> list:
        if len(self.script) == 1:
            self.stop.set()  # the last answer: the consumer stops after it
        answer = self.script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_a_fetch_timing_out_with_either_timeout_error_is_an_empty_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py 2.16's fetch raises asyncio's TimeoutError as well as its own: neither ends the subscription."""
    from events import inbound

    handled = []
    monkeypatch.setattr(inbound, "_handle", lambda container, subject, data: handled.append(data))
    first, second = _Message("sms.inbound.a", b"1"), _Message("sms.inbound.a", b"2")

    async def drain() -> None:
        stop = asyncio.Event()
        sub = _Subscription([TimeoutError(), [first], nats.errors.TimeoutError(), [second]], stop)
        await inbound._drain(sub, None, stop)

    asyncio.run(drain())
    assert handled == [b"1", b"2"] and first.acked and second.acked


def test_the_consumers_warning_names_the_error(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """An exception with an empty message still gives a warning that says what happened."""
    from events import inbound

    stop = asyncio.Event()

    async def refused(*args, **kwargs):
        stop.set()
        raise ConnectionRefusedError()

    monkeypatch.setattr(inbound.nats, "connect", refused)
    with caplog.at_level("WARNING", logger="events.inbound"):
        asyncio.run(inbound.consume(None, "nats://127.0.0.1:1", "sms.inbound", "S", stop))
    assert "inbound SMS consumer: ConnectionRefusedError; retrying" in caplog.messages

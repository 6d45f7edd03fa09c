"""Inbound STOP messages on NATS opt contacts out, idempotently."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import nats
import pytest

from command.optout import is_stop
from tests.support import Service


@pytest.mark.parametrize("body, stop", [("STOP", True), (" stop ", True), ("StopAll", True), ("unsubscribe", True),
                                        ("CANCEL", True), ("end", True), ("Quit\n", True), ("stop please", False),
                                        ("hello", False), ("", False)])
def test_stop_words(body: str, stop: bool) -> None:
    assert is_stop(body) is stop


async def _publish(url: str, subject: str, payloads: list[dict]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    deadline = time.monotonic() + 20
    while True:  # the worker creates the inbound stream when it starts
        try:
            await js.find_stream_name_by_subject(subject)
            break
        except nats.js.errors.NotFoundError:
            assert time.monotonic() < deadline, "no stream captures the inbound subject"
            await asyncio.sleep(0.1)
    for payload in payloads:
        await js.publish(subject, json.dumps(payload).encode())
    await nc.close()


def _wait_opted_out(api, contact_id: str, expected: bool, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        contact = api.get(f"/api/v1/contacts/{contact_id}").json()
        if contact["isOptedOut"] is expected or time.monotonic() > deadline:
            return contact
        time.sleep(0.1)  # the consumer runs in the worker; poll as a client would


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

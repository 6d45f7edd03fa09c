"""Inbound SMS consumer: opt-outs arriving on NATS (``CONTACTS_INBOUND_SUBJECT``).

Messages are JSON ``{"from": "+2547…", "body": "STOP", "messageId": "…"}`` on
``<subject prefix>.<account_id>`` (default ``sms.inbound.<account_id>``). They are read
through a durable JetStream consumer, so none is lost while the worker is down: the
service creates a stream for those subjects unless one already captures them, and
acknowledges a message only after its opt-out is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

import msgspec
import nats
from nats.js.api import StreamConfig

from command.optout import opt_out_by_sms

log = logging.getLogger(__name__)
DURABLE = "contacts-optout"


class InboundSms(msgspec.Struct, rename="camel"):
    from_: str = msgspec.field(name="from")
    body: str
    message_id: str = ""


async def consume(container: Any, nats_url: str, subject_prefix: str, stream_name: str,
                  stop: asyncio.Event) -> None:
    """Opt out contacts from inbound STOP messages until ``stop`` is set (reconnects as needed)."""
    while not stop.is_set():
        nc = sub = None
        try:
            nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=-1)
            js = nc.jetstream()
            subjects = f"{subject_prefix}.>"
            try:
                stream = await js.find_stream_name_by_subject(f"{subject_prefix}.x")
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=stream_name, subjects=[subjects]))
                stream = stream_name
            sub = await js.pull_subscribe(subjects, durable=DURABLE, stream=stream)
            await _drain(sub, container, stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep consuming
            log.warning("inbound SMS consumer: %s; retrying", _describe(exc))
            await asyncio.sleep(2)
        finally:
            if nc is not None:
                try:
                    if sub is not None:
                        await sub.unsubscribe()
                    await nc.close()
                except Exception:  # noqa: BLE001
                    pass


async def _drain(sub: Any, container: Any, stop: asyncio.Event) -> None:
    """Handle and acknowledge the subscription's messages, in order, until ``stop`` is set."""
    while not stop.is_set():
        try:
            messages = await sub.fetch(50, timeout=1)
        except TimeoutError:  # nats.errors.TimeoutError is one; nats-py 2.16's fetch also raises asyncio's
            continue
        for msg in messages:
            await asyncio.to_thread(_handle, container, msg.subject, msg.data)
            await msg.ack()


def _describe(exc: Exception) -> str:
    """The exception's type and message: some (a refused connection, a timeout) have no message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _handle(container: Any, subject: str, data: bytes) -> None:
    try:
        account_id = UUID(subject.rsplit(".", 1)[-1])
        message = msgspec.json.decode(data, type=InboundSms)
    except (ValueError, msgspec.DecodeError) as exc:
        log.warning("inbound SMS on %s ignored: %s", subject, exc)
        return
    contact_id, position = opt_out_by_sms(container.app, account_id, message.from_, message.body,
                                          message.message_id)
    if position:
        container.runner.catch_up(until=position)
        log.info("contact %s opted out by inbound SMS", contact_id)

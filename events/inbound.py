"""Inbound SMS consumer: opt-outs arriving on NATS (``CONTACTS_INBOUND_SUBJECT``).

Messages are JSON ``{"from": "+2547…", "body": "STOP", "messageId": "…"}`` on
``<subject prefix>.<account_id>`` (default ``sms.inbound.<account_id>``). They are read
through a durable JetStream consumer, so none is lost while the worker is down: the
service creates a stream for those subjects unless one already captures them, and
acknowledges a message only after its opt-out is stored.

A message's ``from`` is a phone number, so the service keeps none once handled. The
stream it creates is a work queue (an acked message leaves it), and from its own
stream it also deletes each handled message before acking it: a delete overwrites
the message's bytes in the store, while a work queue's ack or a purge leaves them in
the block files until compaction. A stream someone else provides may have other
consumers, so it is only read and acked; it must be a work queue or have a max age
(docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import msgspec
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

from command.optout import opt_out_by_sms
from events.nats_log import NatsErrorLog, describe, server_list

log = logging.getLogger(__name__)
DURABLE = "contacts-optout"


class InboundSms(msgspec.Struct, rename="camel"):
    from_: str = msgspec.field(name="from")
    body: str
    message_id: str = ""


async def consume(container: Any, nats_url: str, subject_prefix: str, stream_name: str,
                  stop: asyncio.Event, replicas: int = 1) -> None:
    """Opt out contacts from inbound STOP messages until ``stop`` is set (reconnects as needed)."""
    while not stop.is_set():
        nc = sub = None
        try:
            nc = await nats.connect(server_list(nats_url), connect_timeout=2, max_reconnect_attempts=-1,
                                    error_cb=NatsErrorLog("inbound SMS consumer").report)
            js = nc.jetstream()
            subjects = f"{subject_prefix}.>"
            try:
                stream = await js.find_stream_name_by_subject(f"{subject_prefix}.x")
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=stream_name, subjects=[subjects],
                                                 retention=RetentionPolicy.WORK_QUEUE, num_replicas=replicas))
                stream = stream_name
            if stream != stream_name:
                await _warn_if_kept_forever(js, stream)
            # A work queue takes one consumer per subject, with explicit acks, delivering all.
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL)
            sub = await js.pull_subscribe(subjects, durable=DURABLE, stream=stream, config=config)
            erase = _eraser(js, stream) if stream == stream_name else None
            await _drain(sub, container, stop, erase)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep consuming
            log.warning("inbound SMS consumer: %s; retrying", describe(exc))
            await asyncio.sleep(2)
        finally:
            if nc is not None:
                try:
                    if sub is not None:
                        await sub.unsubscribe()
                    await nc.close()
                except Exception:  # noqa: BLE001
                    pass


async def _drain(sub: Any, container: Any, stop: asyncio.Event,
                 erase: Callable[[Any], Awaitable[None]] | None = None) -> None:
    """Handle, erase (if given ``erase``) and acknowledge the subscription's messages, in order."""
    while not stop.is_set():
        try:
            messages = await sub.fetch(50, timeout=1)
        except TimeoutError:  # nats.errors.TimeoutError is one; nats-py 2.16's fetch also raises asyncio's
            continue
        for msg in messages:
            await asyncio.to_thread(_handle, container, msg.subject, msg.data)
            if erase is not None:
                # Before the ack: on a work queue the ack removes the message without
                # erasing it, and a delete after that finds nothing. If the delete fails
                # the message is not acked, so it comes back and is handled (idempotently)
                # and deleted again.
                await erase(msg)
            await msg.ack()


def _eraser(js: Any, stream: str) -> Callable[[Any], Awaitable[None]]:
    """Securely delete a handled message from ``stream``: one request per inbound SMS."""

    async def erase(msg: Any) -> None:
        try:
            await js.delete_msg(stream, msg.metadata.sequence.stream)  # no "no_erase": overwritten
        except nats.js.errors.NotFoundError:  # already deleted: a redelivery after a lost ack
            pass

    return erase


async def _warn_if_kept_forever(js: Any, stream: str) -> None:
    """Warn when a stream someone else provides keeps inbound SMS (phone numbers) forever."""
    config = (await js.stream_info(stream)).config
    if config.retention != RetentionPolicy.WORK_QUEUE and not config.max_age:
        log.warning("inbound SMS stream %s keeps messages forever (not a work queue, no max_age): their phone"
                    " numbers stay readable after a purge; see docs/privacy.md", stream)


def _handle(container: Any, subject: str, data: bytes) -> None:
    try:
        account_id = UUID(subject.rsplit(".", 1)[-1])
        message = msgspec.json.decode(data, type=InboundSms)
    except (ValueError, msgspec.DecodeError) as exc:
        log.warning("inbound SMS on %s ignored: %s", subject, exc)
        return
    contact_id = opt_out_by_sms(container.app, account_id, message.from_, message.body, message.message_id)
    if contact_id is not None:
        log.info("contact %s opted out by inbound SMS", contact_id)

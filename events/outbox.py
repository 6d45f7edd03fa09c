"""The messages an event publishes, encoded once when it is stored; the relay only completes them.

The unit of work (command/unit_of_work.py) stores, beside each event, its NATS messages
(``contacts_events.messages``): subject, message id, the CloudEvents envelope up to its
``sequence`` and the ``data``, all JSON encoded from the event in memory (``events/contract.py``
``parts``). The relay adds the subject prefix and the notification id and sends the bytes:
it no longer decodes and decrypts the stored event and encodes a message from it (0.6 ms
of CPU per single write, measured: docs/benchmarks.md).

A ``data`` that carries a contact's personal fields or tags (``contact.created``,
``contact.updated``) is sealed with that contact's own key (AES-256-GCM, as the event's
``pii`` is: command/crypto.py), so purging the contact (deleting its key) leaves it as
unreadable as the event. The relay opens it with one decryption; when the key is gone
the relay falls back to decoding the event, which yields the ``erased`` message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from command.domain import ContactImport
from events.contract import Message, parts, payload
from events.contract import head as envelope_head

# Bound into every sealed ``data`` with the contact id: a message's ciphertext cannot pass
# for an event's sealed ``pii`` (command/crypto.py binds the bare id), nor the other way.
_AAD = b"contacts.message:"


class Outgoing(msgspec.Struct, array_like=True):
    """One stored message, MessagePack-encoded (bytes stay bytes, no base64)."""

    subject: str              # after the subject prefix
    msg_id: str
    head: bytes               # the envelope's JSON up to the sequence (contract.head)
    data: bytes               # the data's JSON, sealed when ``sealed_by`` is set
    sealed_by: bytes = b""    # the 16 bytes of the contact id whose key seals ``data``
    erases: bool = False      # contact.purged: queued for the eraser (events/erasure.py)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[Outgoing])


def encode(event: Any, key_of: Callable[[UUID], bytes]) -> bytes | None:
    """The messages of ``event`` as stored beside it; ``key_of`` gives a contact's key (its data is sealed).

    None for an import batch: the relay decodes it as before. Its thousand messages cost
    11–13 µs a contact to encode and seal here, on the import's own path, and would save
    the relay about as much (decoding the batch and building them: 11–15 µs a contact),
    while doubling what the batch stores (850 bytes a contact); measured in-process on a
    batch of 1,000.
    """
    if isinstance(event, ContactImport.Progressed):
        return None
    frames = []
    for part in parts(event):
        data = msgspec.json.encode(part.data)
        sealed_by = b""
        if part.sealed_by is not None:
            data = _seal(key_of(part.sealed_by), part.sealed_by, data)
            sealed_by = part.sealed_by.bytes
        frames.append(Outgoing(part.subject, part.msg_id, envelope_head(part.attributes), data, sealed_by,
                               part.erases))
    return _ENCODER.encode(frames)


def decode(stored: bytes) -> list[Outgoing]:
    return _DECODER.decode(stored)


def sealed_by(frames: Iterable[list[Outgoing]]) -> list[UUID]:
    """The contacts whose keys opening these messages needs (fetch them in one query)."""
    return list({UUID(bytes=f.sealed_by) for group in frames for f in group if f.sealed_by})


def complete(frames: list[Outgoing], position: int, prefix: str,
             keys: dict[UUID, bytes | None]) -> list[Message] | None:
    """The messages to publish, or None if a contact's key is gone (purged: decode the event instead)."""
    messages = []
    for f in frames:
        data = f.data
        if f.sealed_by:
            contact_id = UUID(bytes=f.sealed_by)
            key = keys.get(contact_id)
            if key is None:
                return None
            data = AESGCM(key).decrypt(data[:12], data[12:], _AAD + f.sealed_by)
        subject = f"{prefix}.{f.subject}"
        messages.append(Message(subject=subject, msg_id=f.msg_id, payload=payload(f.head, position, data),
                                erases=subject.rsplit(".", 1)[0] if f.erases else None))
    return messages


def _seal(key: bytes, contact_id: UUID, data: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, _AAD + contact_id.bytes)

"""Cursors of GET /contacts: opaque, signed keyset positions (query/keyset.py) on the wire.

A cursor is base64url (no padding) of a version byte, the msgpack of ``_Cursor`` (the
sort, a digest of the filters, the last contact's sort key and id) and the first 16
bytes of an HMAC-SHA256 over both, keyed with the service's hash key. So a client can
neither forge a position nor reuse a cursor with other filters or another sort: each
is a 422 naming ``cursor``. A cursor does not expire: it names a position, not a page
held by the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from uuid import UUID

import msgspec

from command.errors import ValidationError
from query.contacts import ContactFilter
from query.keyset import Position, Sort

_VERSION = b"\x01"
_SIGNATURE_BYTES = 16
_DOMAIN = b"contacts-cursor:"  # keeps these signatures apart from the key's other uses


class _Cursor(msgspec.Struct, array_like=True):
    sort: str
    filters: bytes
    key: str | None
    id: UUID


_decoder = msgspec.msgpack.Decoder(_Cursor)
_encoder = msgspec.msgpack.Encoder()


def _filters_digest(flt: ContactFilter) -> bytes:
    """What the page is of, in 8 bytes: a cursor is only valid for the filters it was made with."""
    shape = [flt.term.lower(), str(flt.list_id or ""), flt.is_opted_out, sorted(flt.tags)]
    return hashlib.sha256(msgspec.json.encode(shape)).digest()[:8]


def _sign(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def encode(secret: bytes, flt: ContactFilter, sort: Sort, position: Position) -> str:
    """The opaque cursor of the page after ``position``."""
    key = position.key.isoformat() if isinstance(position.key, datetime) else position.key
    payload = _VERSION + _encoder.encode(_Cursor(str(sort), _filters_digest(flt), key, position.id))
    return base64.urlsafe_b64encode(payload + _sign(secret, payload)).rstrip(b"=").decode()


def decode(secret: bytes, cursor: str, flt: ContactFilter, sort: Sort) -> Position:
    """The position a cursor names; a 422 naming ``cursor`` if it was altered or made for another page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    payload, signature = raw[:-_SIGNATURE_BYTES], raw[-_SIGNATURE_BYTES:]
    if len(raw) <= _SIGNATURE_BYTES + 1 or not hmac.compare_digest(signature, _sign(secret, payload)) \
            or payload[:1] != _VERSION:
        raise ValidationError("cursor is not one this service gave out (malformed, cut short or altered): pass"
                              " nextCursor exactly as the previous page returned it", field="cursor")
    try:
        found = _decoder.decode(payload[1:])
    except msgspec.DecodeError as exc:  # signed by us, so only a bug gets here
        raise ValidationError(f"cursor cannot be read: {exc}", field="cursor") from exc
    if found.sort != str(sort):
        raise ValidationError(f"cursor was made for sort={found.sort}, not sort={sort}: keep the sort of the first"
                              " page, or start again without a cursor", field="cursor")
    if found.filters != _filters_digest(flt):
        raise ValidationError("cursor was made for other filters (search, listId, isOptedOut, tags): keep the"
                              " filters of the first page, or start again without a cursor", field="cursor")
    key: datetime | str | None = found.key
    if sort.is_time and found.key is not None:
        key = datetime.fromisoformat(found.key)
    return Position(key=key, id=found.id)

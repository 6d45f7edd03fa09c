"""Crypto-shredding: each contact's personal fields are sealed with the contact's own key.

The ``pii`` field of every Contact event is encrypted with AES-256-GCM under a key
kept in ``contact_keys``. Purging a contact deletes its key, after which those
fields can no longer be read from any stored event; the mapper then yields
``{"erased": True}`` so projections, replays and history keep working.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg_pool import ConnectionPool

from command.ids import uuid_array

SEALED = "__sealed__"
SMALL_KEY_SET = 20  # up to this many new keys: one INSERT rather than a COPY
ERASED = {"erased": True}

DDL = """
CREATE TABLE IF NOT EXISTS contact_keys (
    contact_id  uuid PRIMARY KEY,
    key         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""


class KeyStore:
    """Per-contact data keys in PostgreSQL, with a per-batch prefetch for fast decoding."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool
        self._local = threading.local()

    def ensure_table(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(DDL)

    def create(self, contact_id: UUID) -> bytes:
        """The contact's key, created on first use (idempotent)."""
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO contact_keys (contact_id, key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (contact_id, AESGCM.generate_key(bit_length=256)))
            return bytes(conn.execute("SELECT key FROM contact_keys WHERE contact_id = %s",
                                      (contact_id,)).fetchone()[0])

    def create_many(self, contact_ids: list[UUID]) -> dict[UUID, bytes]:
        """Keys for contacts that have none yet (fresh ids), written in one statement.

        The random bytes come in one call. An import's thousand keys go by COPY, whose
        text is formatted here (uuid hex, bytea hex): per key that is a fraction of a
        row dumped by psycopg. A few keys (a single write) go by one INSERT: a COPY
        takes two round trips, and under load the second waits for this thread's turn
        at the interpreter.
        """
        blob = os.urandom(32 * len(contact_ids))
        keys = {cid: blob[i:i + 32] for cid, i in zip(contact_ids, range(0, len(blob), 32))}
        if len(keys) > SMALL_KEY_SET:
            with self.pool.connection() as conn, conn.cursor() as cur:
                with cur.copy("COPY contact_keys (contact_id, key) FROM STDIN") as copy:
                    copy.write("".join(f"{cid.hex}\t\\\\x{key.hex()}\n" for cid, key in keys.items()))
        elif keys:
            # No wait for the flush: the events sealed with these keys commit after this,
            # synchronously, and their flush carries this earlier WAL to the disk too. A key
            # lost in a crash belongs to events that were never stored.
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute("INSERT INTO contact_keys (contact_id, key) SELECT * FROM unnest(%s::uuid[], %s::bytea[])",
                             (list(keys), list(keys.values())))
        return keys

    def get(self, contact_id: UUID) -> bytes | None:
        cache = getattr(self._local, "cache", None)
        if cache is not None and contact_id in cache:
            return cache[contact_id]
        with self.pool.connection() as conn:
            row = conn.execute("SELECT key FROM contact_keys WHERE contact_id = %s", (contact_id,)).fetchone()
        return bytes(row[0]) if row else None

    def get_many(self, contact_ids: Iterable[UUID]) -> dict[UUID, bytes | None]:
        ids = list(dict.fromkeys(contact_ids))
        found: dict[UUID, bytes | None] = dict.fromkeys(ids)
        if ids:
            with self.pool.connection() as conn:
                for cid, key in conn.execute("SELECT contact_id, key FROM contact_keys"
                                             " WHERE contact_id = ANY(%s::uuid[])", (uuid_array(ids),)).fetchall():
                    found[cid] = bytes(key)
        return found

    @contextmanager
    def batch(self, contact_ids: Iterable[UUID]) -> Iterator[None]:
        """Fetch many keys at once for the duration of one batch (this thread only)."""
        self._local.cache = self.get_many(contact_ids)
        try:
            yield
        finally:
            self._local.cache = None

    def many(self, contact_ids: list[UUID]) -> dict[UUID, bytes | None]:
        """Keys of many contacts: from this thread's batch cache, the rest in one query (and cached)."""
        cache = getattr(self._local, "cache", None)
        if cache is None:
            return self.get_many(contact_ids)
        missing = [cid for cid in contact_ids if cid not in cache]
        if missing:
            cache.update(self.get_many(missing))
        return cache

    def seed_cache(self, keys: dict[UUID, bytes]) -> None:
        cache = getattr(self._local, "cache", None)
        if cache is not None:
            cache.update(keys)


def seal(key: bytes, contact_id: UUID, pii: dict[str, Any]) -> dict[str, str]:
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, msgspec.json.encode(pii), contact_id.bytes)
    return {SEALED: base64.b64encode(nonce + ciphertext).decode()}


def unseal(key: bytes, contact_id: UUID, sealed: dict[str, str]) -> dict[str, Any]:
    blob = base64.b64decode(sealed[SEALED])
    return msgspec.json.decode(AESGCM(key).decrypt(blob[:12], blob[12:], contact_id.bytes))


class PiiMapper(Mapper):
    """A Mapper that seals ``pii`` fields on the way in and unseals (or erases) them on the way out."""

    keys: KeyStore  # set by the application before use

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        pii = getattr(domain_event, "pii", None)
        if isinstance(pii, dict) and SEALED not in pii:
            contact_id = domain_event.originator_id
            key = self.keys.get(contact_id) or self.keys.create(contact_id)
            domain_event = dataclasses.replace(domain_event, pii=seal(key, contact_id, pii))
        contacts = getattr(domain_event, "contacts", None)
        if isinstance(contacts, list):
            # An import batch: each entry sealed with its own key, the whole list
            # encoded once by msgspec (far faster than the generic JSON transcoder).
            sealed = [{**entry, "pii": seal(self.keys.get(entry["id"]) or self.keys.create(entry["id"]),
                                            entry["id"], entry["pii"])} for entry in contacts]
            domain_event = dataclasses.replace(domain_event, contacts=msgspec.json.encode(sealed).decode())
        return super().to_stored_event(domain_event)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        pii = getattr(event, "pii", None)
        if isinstance(pii, dict) and SEALED in pii:
            object.__setattr__(event, "pii", self._unseal(event.originator_id, pii))
        contacts = getattr(event, "contacts", None)
        if isinstance(contacts, str):
            entries = _BATCH_DECODER.decode(contacts)
            keys = self.keys.many([entry.id for entry in entries])  # one query per batch
            decoded = []
            for entry in entries:
                values = msgspec.structs.asdict(entry)
                key = keys.get(entry.id)
                values["pii"] = unseal(key, entry.id, entry.pii) if key is not None else dict(ERASED)
                decoded.append(values)
            object.__setattr__(event, "contacts", decoded)
        return event

    def _unseal(self, contact_id: UUID, sealed: dict[str, str]) -> dict[str, Any]:
        key = self.keys.get(contact_id)
        return unseal(key, contact_id, sealed) if key is not None else dict(ERASED)


class _Entry(msgspec.Struct):
    """One contact inside a stored import batch (see ContactImport.RowsImported)."""

    id: UUID
    row: int
    pii: dict[str, Any]
    tags: list[str]
    list_ids: list[UUID]
    is_opted_out: bool
    reservation_id: UUID
    status: str
    invalid_reason: str | None
    operator: str | None
    country: str | None
    line: int = 0  # the row's line as a spreadsheet shows it; 0 in batches stored before it was kept


_BATCH_DECODER = msgspec.json.Decoder(list[_Entry])

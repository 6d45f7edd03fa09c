"""Crypto-shredding: each contact's personal fields are sealed with the contact's own key.

The ``pii`` field of every Contact event is encrypted with AES-256-GCM under a key
kept in ``contact_keys``. Purging a contact erases its key (NULL), after which those
fields can no longer be read from any stored event; the mapper then yields
``{"erased": True}`` so projections, replays and history keep working.

Tags are sealed too: they are free text that users fill with personal facts (a
customer number, a clinic, "owes-3000"). The domain events keep ``tags`` where they
always were (``Created.tags``, ``Updated.changes["tags"]``, each import entry's
``tags``); only the stored form moves them into the sealed blob and leaves ``[]`` (or
no ``tags`` change) in clear. The names of the sealed fields stay readable
(``fields``), so an auditor still sees *that* the tags changed after the values are
gone. Events stored before tags were sealed (tags in clear, no ``tags`` inside the
blob) load as they always did: nothing to upcast, the event classes did not change.
"""

from __future__ import annotations

import binascii
import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg_pool import ConnectionPool

from command.ids import uuid_array

SEALED = "__sealed__"
SEALED_FIELDS = "fields"  # beside the blob, in clear: the names of the fields inside it
TAGS = "tags"
ERASED = {"erased": True}



# ``KeyStore.in_order``: the keys of the ids' rows that exist, each beside its id as text, in two arrays.
# ``= ANY`` walks the primary key once for all the ids (PostgreSQL 18 sorts them): 0.8 ms for a batch
# of 1,000 (EXPLAIN ANALYZE, warm), where a join of unnest() with it made 1,000 index searches (1.6 ms).
_IN_ORDER = ("SELECT array_agg(contact_id::text), array_agg(key) FROM contact_keys"
             " WHERE contact_id = ANY(%s::uuid[])")


class KeyStore:
    """Per-contact data keys in PostgreSQL, with a per-batch prefetch for fast decoding."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool
        self._local = threading.local()

    def generate(self, contact_ids: list[UUID]) -> dict[UUID, bytes]:
        """Fresh keys for new contacts, in this thread's batch cache; stored by the unit of work.

        The random bytes come in one call (an import makes a thousand at once). Nothing
        is written here: a key is stored in the transaction that stores the events it
        seals, so no key outlives a failed write and no write waits on a second commit.
        """
        blob = os.urandom(32 * len(contact_ids))
        keys = {cid: blob[i:i + 32] for cid, i in zip(contact_ids, range(0, len(blob), 32))}
        self.seed_cache(keys)
        return keys

    def get(self, contact_id: UUID) -> bytes | None:
        cache = getattr(self._local, "cache", None)
        if cache is not None and contact_id in cache:
            return cache[contact_id]
        with self.pool.connection() as conn:
            row = conn.execute("SELECT key FROM contact_keys WHERE contact_id = %s", (contact_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None  # NULL: erased (purged)

    def get_many(self, contact_ids: Iterable[UUID]) -> dict[UUID, bytes | None]:
        ids = list(dict.fromkeys(contact_ids))
        found: dict[UUID, bytes | None] = dict.fromkeys(ids)
        if ids:
            with self.pool.connection() as conn:
                for cid, key in conn.execute("SELECT contact_id, key FROM contact_keys"
                                             " WHERE contact_id = ANY(%s::uuid[]) AND key IS NOT NULL",
                                             (uuid_array(ids),)).fetchall():
                    found[cid] = bytes(key)
        return found

    def in_order(self, contact_ids: list[str]) -> list[bytes | None]:
        """The keys of these contacts (ids as text), in their order, None where gone: one row of two arrays."""
        if not contact_ids:
            return []
        with self.pool.connection() as conn:
            ids, keys = conn.execute(_IN_ORDER, ("{" + ",".join(contact_ids) + "}",), binary=True).fetchone()
        found = dict(zip(ids, keys)) if ids else {}  # text keys: hashed in C, where a UUID's hash is Python code
        return [found.get(cid) for cid in contact_ids]

    @contextmanager
    def batch(self, contact_ids: Iterable[UUID]) -> Iterator[None]:
        """Fetch many keys at once for the duration of one batch (this thread only).

        Batches nest: inside one (a use case that loads a contact and saves it), an inner
        batch fetches only the keys not cached yet, and the outer cache lives on.
        """
        outer = getattr(self._local, "cache", None)
        if outer is not None:
            missing = [cid for cid in contact_ids if cid not in outer]
            if missing:
                outer.update(self.get_many(missing))
            yield
            return
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


def seal(key: bytes, contact_id: UUID, pii: dict[str, Any]) -> dict[str, Any]:
    """One contact's personal fields sealed with its key (``seal_batch`` of one)."""
    return seal_batch([key], [contact_id], [pii])[0]


def seal_batch(keys: list[bytes], contact_ids: list[UUID], secrets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``seal`` of many contacts' fields (an import batch): the nonces drawn in one call, the
    field names sorted once for entries that share them. Same output as ``seal`` each."""
    nonces = os.urandom(12 * len(secrets))
    encode, b64, sealed = msgspec.json.encode, binascii.b2a_base64, []
    names_of, names = None, []
    for i, (key, contact_id, secret) in enumerate(zip(keys, contact_ids, secrets)):
        if secret.keys() != names_of:  # one set of names for every entry of a batch
            names_of, names = secret.keys(), sorted(secret)
        nonce = nonces[12 * i:12 * i + 12]
        ciphertext = AESGCM(key).encrypt(nonce, encode(secret), contact_id.bytes)
        sealed.append({SEALED: b64(nonce + ciphertext, newline=False).decode(), SEALED_FIELDS: names})
    return sealed


def erased(sealed: dict[str, Any]) -> dict[str, Any]:
    """What an event whose key is gone holds in place of its personal fields (with their names, if stored)."""
    names = sealed.get(SEALED_FIELDS)
    return {**ERASED, "erased_fields": list(names)} if names else dict(ERASED)


def _secret_and_clear(event: Any, pii: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields to seal (the personal ones and the tags) and the event's fields left in clear."""
    tags = getattr(event, TAGS, None)
    if isinstance(tags, list):  # Contact.Created
        return {**pii, TAGS: tags}, {TAGS: []}
    changes = getattr(event, "changes", None)
    if isinstance(changes, dict) and TAGS in changes:  # Contact.Updated that changes the tags
        return {**pii, TAGS: changes[TAGS]}, {"changes": {k: v for k, v in changes.items() if k != TAGS}}
    return pii, {}


def _restore_tags(event: Any, opened: dict[str, Any]) -> None:
    """Put tags unsealed with the personal fields back where the event keeps them."""
    if TAGS not in opened:
        return  # stored before tags were sealed (in clear, already in place), or none changed
    tags = opened.pop(TAGS)
    if isinstance(getattr(event, TAGS, None), list):
        object.__setattr__(event, TAGS, tags)
    else:
        object.__setattr__(event, "changes", {**event.changes, TAGS: tags})


def unseal(key: bytes, contact_id: UUID, sealed: dict[str, Any]) -> dict[str, Any]:
    # binascii itself, as seal_batch encodes: base64.b64decode wraps it in a Python call that
    # re-checks the argument, per contact of every import batch the relay decodes.
    blob = binascii.a2b_base64(sealed[SEALED])
    return msgspec.json.decode(AESGCM(key).decrypt(blob[:12], blob[12:], contact_id.bytes))


class PiiMapper(Mapper):
    """A Mapper that seals ``pii`` fields on the way in and unseals (or erases) them on the way out."""

    keys: KeyStore  # set by the application before use

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        pii = getattr(domain_event, "pii", None)
        if isinstance(pii, dict) and SEALED not in pii:
            contact_id = domain_event.originator_id
            key = self._key(contact_id)
            secret, clear = _secret_and_clear(domain_event, pii)
            domain_event = dataclasses.replace(domain_event, pii=seal(key, contact_id, secret), **clear)
        contacts = getattr(domain_event, "contacts", None)
        if isinstance(contacts, list):
            # An import batch: each entry sealed with its own key, the whole list
            # encoded once by msgspec (far faster than the generic JSON transcoder).
            ids = [entry["id"] for entry in contacts]
            keys = self._keys(ids)
            secrets = [{**entry["pii"], TAGS: entry[TAGS]} for entry in contacts]
            sealed = [{**entry, "pii": pii, TAGS: []}
                      for entry, pii in zip(contacts, seal_batch(keys, ids, secrets))]
            domain_event = dataclasses.replace(domain_event, contacts=msgspec.json.encode(sealed).decode())
        return super().to_stored_event(domain_event)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        pii = getattr(event, "pii", None)
        if isinstance(pii, dict) and SEALED in pii:
            opened = self._unseal(event.originator_id, pii)
            _restore_tags(event, opened)
            object.__setattr__(event, "pii", opened)
        contacts = getattr(event, "contacts", None)
        if isinstance(contacts, str):
            entries = _BATCH_DECODER.decode(contacts)
            keys = self.keys.many([entry.id for entry in entries])  # one query per batch
            decoded = []
            for entry in entries:
                values = msgspec.structs.asdict(entry)
                key = keys.get(entry.id)
                values["pii"] = unseal(key, entry.id, entry.pii) if key is not None else erased(entry.pii)
                if TAGS in values["pii"]:  # sealed with the personal fields (in clear before)
                    values[TAGS] = values["pii"].pop(TAGS)
                decoded.append(values)
            object.__setattr__(event, "contacts", decoded)
        return event

    def open_import_batch(self, stored_event: StoredEvent) -> tuple[Any, list[Published]] | None:
        """An import batch event, its ``contacts`` left as stored, and each contact opened as far as its
        ``contact.created`` message needs (the relay's path: events/contract.py ``import_messages``).

        ``to_domain_event`` makes every entry a dict of all its fields with UUIDs, its
        personal fields all decoded, to give the projector and a rebuild the whole
        contact; a message carries the number, the names and the tags only, and its ids as
        text. The keys come in the entries' order in one value (``KeyStore.in_order``). None
        for a batch whose contacts are not stored as one JSON text (``to_domain_event`` then).
        """
        event = super().to_domain_event(stored_event)
        if not isinstance(event.contacts, str):
            return None
        entries = _PUBLISHED_DECODER.decode(event.contacts)
        for entry, key in zip(entries, self.keys.in_order([e.id for e in entries])):
            if key is None:  # purged: its message is marked erased, as to_domain_event's would be
                continue
            blob = binascii.a2b_base64(entry.pii.blob)
            contact_id = bytes.fromhex(entry.id.replace("-", ""))  # the AAD: the id's 16 bytes, as ``unseal`` binds
            opened = _OPENED_DECODER.decode(AESGCM(key).decrypt(blob[:12], blob[12:], contact_id))
            if opened.tags is not None:  # sealed with the personal fields (in clear before)
                entry.tags = opened.tags
            entry.opened = opened
        return event, entries

    def _key(self, contact_id: UUID) -> bytes:
        """The key to seal a contact's data with: made beforehand (``KeyStore.generate``) for a new contact."""
        key = self.keys.get(contact_id)
        if key is None:
            raise LookupError(f"contact {contact_id} has no key: new contacts' keys come from KeyStore.generate")
        return key

    def _keys(self, contact_ids: list[UUID]) -> list[bytes]:
        """``_key`` of many contacts (an import batch's), from one look-up of the batch cache."""
        found = self.keys.many(contact_ids)
        missing = [cid for cid in contact_ids if found.get(cid) is None]
        if missing:
            raise LookupError(f"contact {missing[0]} has no key: new contacts' keys come from KeyStore.generate")
        return [found[cid] for cid in contact_ids]

    def _unseal(self, contact_id: UUID, sealed: dict[str, Any]) -> dict[str, Any]:
        key = self.keys.get(contact_id)
        return unseal(key, contact_id, sealed) if key is not None else erased(sealed)


class _Entry(msgspec.Struct):
    """One contact inside a stored import batch (see ContactImport.Progressed)."""

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


class Opened(msgspec.Struct):
    """The fields of a contact's sealed ``pii`` that its ``contact.created`` message carries (the rest is skipped)."""

    phone: str | None | UnsetType = UNSET  # UNSET: not in the sealed fields (left out of the message, as before)
    first_name: str | None | UnsetType = UNSET
    last_name: str | None | UnsetType = UNSET
    tags: list[str] | None = None  # None: sealed before tags were (they are the entry's own)


class _Sealed(msgspec.Struct):
    """A sealed ``pii`` as the relay reads it: the blob (the names of the fields beside it are skipped)."""

    blob: str = msgspec.field(name=SEALED)


class Published(msgspec.Struct):
    """One contact of a stored import batch, as its message needs it: ids as the stored text, ``pii`` still sealed."""

    id: str
    pii: _Sealed
    tags: list[str]
    list_ids: list[str]
    is_opted_out: bool
    status: str
    invalid_reason: str | None
    operator: str | None
    country: str | None
    opened: Opened | None = None  # set by ``open_import_batch``: None when the key is gone (purged)


_PUBLISHED_DECODER = msgspec.json.Decoder(list[Published])
_OPENED_DECODER = msgspec.json.Decoder(Opened)

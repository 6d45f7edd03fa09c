"""Erasure of purged contacts from the NATS stream, as a durable job beside the relay.

The relay meets a ``Contact.Purged`` event in order, like any other, but does not
publish its ``contact.purged`` message there: it records the message in
``pending_erasures``, in the transaction that moves its checkpoint past the event,
and goes on with every other account's events. The ``Eraser`` (a task of the worker)
drains that table oldest first: for each contact it deletes, one by one, the
messages of the stream that carried personal fields (``created`` and ``updated``), then
publishes the ``contact.purged`` message (same ``Nats-Msg-Id`` as ever, so a repeat is
deduplicated), waits for its ack, and only then deletes the row.

So **"done" is the ``contact.purged`` message on the stream**: a subscriber that sees it
knows the stream holds none of that contact's personal fields any more, and the
message tells it to erase its own copies. A crash anywhere in between leaves the row,
and the next round does the same again (deleting finds nothing left; the publish is a
duplicate the stream drops). Before, the relay did the deletes itself, in its ordered
path: about 9 ms a message, so a purge of 10,000 contacts held every account's events
back by about three minutes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
import psycopg
from psycopg_pool import ConnectionPool

from events import locks
from events.contract import PII_EVENT_NAMES
from events.leader import Leader

log = logging.getLogger(__name__)

def record(conn: psycopg.Connection[Any], erasures: list[tuple[int, Any]]) -> None:
    """Queue the ``contact.purged`` messages the relay met (in the relay's checkpoint transaction)."""
    if erasures:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO pending_erasures (position, stem, subject, msg_id, payload)"
                            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stem) DO NOTHING",
                            [(position, m.erases, m.subject, m.msg_id, m.payload) for position, m in erasures])


def pending(pool: ConnectionPool) -> int:
    """How many purged contacts still wait for their erasure from the stream."""
    with pool.connection() as conn:
        try:
            return conn.execute("SELECT count(*) FROM pending_erasures").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


class Eraser(Leader):
    """Drains ``pending_erasures``: deletes each purged contact's messages, then publishes its ``purged``
    (one eraser at a time, at least twice a second)."""

    name, lock_key, idle_s = "eraser", locks.ERASER, 0.5

    def __init__(self, pool: ConnectionPool, *, nats_url: str, database_url: str, stream: str, batch: int = 100,
                 concurrency: int = 8):
        super().__init__()
        self.pool = pool
        self.concurrency = concurrency
        self.nats_url = nats_url
        self.database_url = database_url
        self.stream = stream
        self.batch = batch
        self.erased_total = 0

    def _next(self) -> list[tuple[str, str, str, bytes]]:
        with self.pool.connection() as conn:
            try:
                rows = conn.execute("SELECT stem, subject, msg_id, payload FROM pending_erasures"
                                    " ORDER BY position LIMIT %s", (self.batch,)).fetchall()
            except psycopg.errors.UndefinedTable:  # no relay has run here yet
                return []
        return [(stem, subject, msg_id, bytes(payload)) for stem, subject, msg_id, payload in rows]

    def _done(self, stem: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM pending_erasures WHERE stem = %s", (stem,))

    async def erase_pending(self) -> int:
        """Erase every contact waiting now, several at a time; return how many."""
        done = 0
        while rows := await asyncio.to_thread(self._next):
            for start in range(0, len(rows), self.concurrency):
                # Contacts are independent: while one waits for the server's overwrite of a
                # message, another's requests go out (one contact at a time: 12 a second
                # on the loaded 2-core machine, about 80 ms a contact).
                await asyncio.gather(*(self._erase_one(*row) for row in rows[start:start + self.concurrency]))
                done += len(rows[start:start + self.concurrency])
        return done

    async def _erase_one(self, stem: str, subject: str, msg_id: str, payload: bytes) -> None:
        for event_name in PII_EVENT_NAMES:
            await self._erase_subject(f"{stem}.{event_name}")
        # Published only now: a subscriber that sees contact.purged may rely on the erasure.
        ack = await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=15)
        if ack.stream != self.stream:
            raise RuntimeError(f"contact.purged stored in {ack.stream}, not {self.stream}")
        await asyncio.to_thread(self._done, stem)
        self.erased_total += 1

    async def _erase_subject(self, subject: str) -> None:
        """Securely delete every message on ``subject``.

        A purge (``purge_stream``) only hides messages: their bytes stay in the stream's
        block files until compaction. A message delete without ``no_erase`` overwrites
        the message with random bytes, so each one is found and deleted one by one: one
        get and one delete per message, one get per subject that finds nothing. The
        deletes dominate, about 9 ms each against a local nats-server on a disk.
        """
        seq = 1
        while True:
            try:  # the first message on the subject at or after seq, found by the stream's subject index
                msg = await self.js.get_msg(self.stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            await self.js.delete_msg(self.stream, msg.seq)  # nats-py sends no "no_erase": a secure erase
            seq = msg.seq + 1

    async def round(self) -> None:  # events/leader.py
        await self.erase_pending()

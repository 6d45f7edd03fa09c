"""The event recorder and the write-side consistency tables kept beside the events.

``phone_reservations`` holds one row per (account, phone) — keyed by an HMAC of
account + E.164, never the phone — and the contact that holds it. Claims and
releases are written in the very transaction that appends the events (the unit of
work), so two commands claiming one number cannot both commit: the loser gets a
unique violation and its events are not stored either.

``contact_keys`` holds each contact's data key and, for contacts created inside an
import batch event, which event holds their creation (their own stream starts at
version 2); a purged contact's key is erased and its origin kept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder, PostgresFactory
from psycopg.sql import SQL, Identifier

from command.ids import uuid_array

class ContactsRecorder(PostgresApplicationRecorder):
    """The event store and the write-side tables beside it: their DDL and their reads.

    Writes to all of them go through the unit of work (``command/unit_of_work.py``), in
    the transaction that stores the events.
    """

    # eventsourcing retries a lost database ten times, each try waiting up to the pool's
    # timeout: about a minute before a request learns that the database is gone. Here a
    # call fails after one pool timeout (the API answers 503 with Retry-After and the
    # client retries; the worker's loops retry on their own).
    select_events = PostgresAggregateRecorder.select_events.__wrapped__
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        raise NotImplementedError("events are stored by the unit of work (command/unit_of_work.py), with their"
                                  " read-table rows")

    def _one(self, query: str, params: Sequence[Any]) -> Any:
        with self.datastore.get_connection() as conn:
            return conn.execute(query, params).fetchone()

    def reservations(self, rids: list[UUID]) -> dict[UUID, tuple[UUID | None, UUID | None, bool]]:
        """(holder contact, claiming import, suppressed) of each phone reservation that exists."""
        if not rids:
            return {}
        with self.datastore.get_connection() as conn:
            rows = conn.execute("SELECT reservation_id, contact_id, import_id, suppressed FROM phone_reservations"
                                " WHERE reservation_id = ANY(%s::uuid[])", (uuid_array(rids),)).fetchall()
        return {r["reservation_id"]: (r["contact_id"], r["import_id"], r["suppressed"]) for r in rows}

    def origin(self, contact_id: UUID) -> tuple[UUID, int] | None:
        """(import id, version of its batch event) of a contact created by an import."""
        row = self._one("SELECT import_id, import_version FROM contact_keys WHERE contact_id = %s"
                        " AND import_id IS NOT NULL", (contact_id,))
        return (row["import_id"], row["import_version"]) if row else None

    def contacts_stored(self, contact_ids: list[UUID]) -> tuple[list[StoredEvent], dict[UUID, tuple[UUID, int]],
                                                                dict[UUID, bytes]]:
        """Everything loading contacts needs, in one query: their own stored events (each one's in
        order), the import batches that created those an import made (``origins``), and their keys."""
        with self.datastore.get_connection() as conn:
            rows = conn.execute(self._contacts_stored_query(), (uuid_array(contact_ids),)).fetchall()
        events, origins, keys = [], {}, {}
        for r in rows:
            cid = r["id"]
            if r["key"] is not None:
                keys[cid] = bytes(r["key"])
            if r["import_id"] is not None:
                origins[cid] = (r["import_id"], r["import_version"])
            if r["topic"] is not None:
                events.append(StoredEvent(originator_id=cid, originator_version=r["originator_version"],
                                          topic=r["topic"], state=bytes(r["state"])))
        return events, origins, keys

    @functools.cache
    def _contacts_stored_query(self) -> bytes:
        """``contacts_stored``'s query, composed and rendered once: psycopg renders a composed query
        on every execution (56 us for this one, timeit; every PATCH and list-add loads).

        The events come from a LATERAL subquery, so each id is an index look-up whatever the
        planner guesses: as a plain join, seven ids were planned as a sequential scan of the
        whole events table (EXPLAIN ANALYZE: 3.6 ms at 70,000 events, against 0.04 for one id),
        from a stale estimate of events per aggregate, and a table of millions would pay more.
        """
        return SQL(
            "SELECT i.id, k.key, k.import_id, k.import_version, e.originator_version, e.topic, e.state"
            " FROM unnest(%s::uuid[]) AS i(id) LEFT JOIN contact_keys k ON k.contact_id = i.id"
            " LEFT JOIN LATERAL (SELECT originator_version, topic, state FROM {}.{} WHERE originator_id = i.id OFFSET 0) e"
            " ON true ORDER BY i.id, e.originator_version").format(
                Identifier(self.datastore.schema), Identifier(self.events_table_name)).as_bytes(None)

    def idempotent_import(self, account_id: UUID, key: str) -> tuple[UUID, bytes | None] | None:
        """(import id, request hash) of the import first made with this Idempotency-Key."""
        row = self._one("SELECT import_id, request_hash FROM import_idempotency WHERE account_id = %s"
                        " AND idempotency_key = %s", (account_id, key))
        if row is None:
            return None
        return row["import_id"], bytes(row["request_hash"]) if row["request_hash"] is not None else None


class ContactsFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, its pool connecting with the whole database URL (``POSTGRES_CONNINFO``).

    The stock one connects with five of the URL's parts (``POSTGRES_HOST``, ...), so the
    rest of a production URL (``sslmode``, ``sslrootcert``, ``target_session_attrs``,
    ``application_name``, the network timeouts of ``service/conninfo.py``) was dropped for
    every write. Set before anything opens the pool.
    """

    POSTGRES_CONNINFO = "POSTGRES_CONNINFO"

    def __init__(self, env: Any):
        super().__init__(env)
        self.datastore.pool.conninfo = self.env.get(self.POSTGRES_CONNINFO) or ""

"""The event recorder, extended to keep write-side consistency tables in the same transaction.

``phone_reservations`` holds one row per (account, phone) — keyed by an HMAC of
account + E.164, never the phone — and the contact that holds it. Claims and
releases are written in the very transaction that appends the events, after the
events table lock, so two commands claiming one number cannot both commit: the
loser gets a unique violation and its events are not stored either.

``contact_origins`` records, for contacts created inside an import batch event,
which event holds their creation (their own stream starts at version 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from command import locks
from command.ids import uuid_array

DDL = """
CREATE TABLE IF NOT EXISTS phone_reservations (
    reservation_id  uuid PRIMARY KEY,        -- HMAC(account_id, E.164), see command/phones.py
    account_id      uuid NOT NULL,
    contact_id      uuid,                    -- NULL: free (the contact was purged or moved)
    import_id       uuid,                    -- the import that claimed it, if any
    suppressed      boolean NOT NULL DEFAULT false,  -- opted out before it was freed
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS contact_origins (
    contact_id        uuid PRIMARY KEY,
    import_id         uuid NOT NULL,
    import_version    integer NOT NULL
);
CREATE TABLE IF NOT EXISTS import_idempotency (
    account_id       uuid NOT NULL,
    idempotency_key  text NOT NULL,
    import_id        uuid NOT NULL,
    request_hash     bytea,  -- SHA-256 of what was imported: a key reused for other data is refused
    PRIMARY KEY (account_id, idempotency_key)
);
ALTER TABLE import_idempotency ADD COLUMN IF NOT EXISTS request_hash bytea;
CREATE TABLE IF NOT EXISTS import_queue (
    import_id     uuid PRIMARY KEY,
    account_id    uuid NOT NULL,
    actor         text NOT NULL,
    request_id    text NOT NULL,
    format        text NOT NULL,
    mapping       text,
    region        text,
    status        text NOT NULL DEFAULT 'queued',   -- queued | running
    heartbeat_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS import_upload_chunks (
    import_id  uuid NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (import_id, seq)
);
CREATE TABLE IF NOT EXISTS export_email_log (   -- export-email sends, for the hourly quota
    account_id  uuid NOT NULL,
    sent_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS export_email_log_account_sent ON export_email_log (account_id, sent_at);
CREATE OR REPLACE FUNCTION claim_phone_reservations(
    p_ids uuid[], p_account uuid, p_contacts uuid[], p_import uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    claimed integer;
BEGIN
    INSERT INTO phone_reservations AS r (reservation_id, account_id, contact_id, import_id)
    SELECT t.rid, p_account, t.cid, p_import FROM unnest(p_ids, p_contacts) AS t(rid, cid)
    ON CONFLICT (reservation_id) DO UPDATE
        SET contact_id = EXCLUDED.contact_id, import_id = EXCLUDED.import_id, updated_at = now()
        WHERE r.contact_id IS NULL OR r.contact_id = EXCLUDED.contact_id;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    IF claimed < coalesce(array_length(p_ids, 1), 0) THEN
        RAISE unique_violation USING MESSAGE = 'phone number already held by another contact';
    END IF;
END $$;
"""


class ContactsRecorder(PostgresApplicationRecorder):
    """Appends events and applies phone claims/releases and contact origins atomically."""

    # eventsourcing retries a lost database ten times, each try waiting up to the pool's
    # timeout: about a minute before a request learns that the database is gone. Here a
    # call fails after one pool timeout (the API answers 503 with Retry-After and the
    # client retries; the worker's loops retry on their own).
    insert_events = PostgresApplicationRecorder.insert_events.__wrapped__
    select_events = PostgresAggregateRecorder.select_events.__wrapped__
    select_notifications = PostgresApplicationRecorder.select_notifications.__wrapped__
    max_notification_id = PostgresApplicationRecorder.max_notification_id.__wrapped__

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (locks.WRITE_SCHEMA,))
            curs.execute(DDL)

    def _insert_stored_events(self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """One event (an import batch is one large event): a plain insert with binary state.

        The stock path sends an array of composites in text form, which hex-encodes
        and regex-escapes a half-megabyte batch in Python.
        """
        if len(stored_events) != 1:
            super()._insert_stored_events(curs, stored_events, **kwargs)
            return
        self._lock_table(curs)
        self._notify_channel(curs)
        event = stored_events[0]
        curs.execute(
            SQL("INSERT INTO {}.{} (originator_id, originator_version, topic, state)"
                " VALUES (%s, %s, %s, %b) RETURNING notification_id").format(
                Identifier(self.datastore.schema), Identifier(self.events_table_name)),
            (event.originator_id, event.originator_version, event.topic, event.state))

    def _insert_events(self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], *,
                       account_id: UUID | None = None, claims: Sequence[tuple[UUID, UUID]] = (),
                       releases: Sequence[tuple[UUID, UUID, bool]] = (),
                       origins: Sequence[tuple[UUID, UUID, int]] = (), import_id: UUID | None = None,
                       idempotency_key: str | None = None, request_hash: bytes | None = None,
                       **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        if idempotency_key:
            curs.execute("INSERT INTO import_idempotency (account_id, idempotency_key, import_id, request_hash)"
                         " VALUES (%s, %s, %s, %s)", (account_id, idempotency_key, import_id, request_hash))
        if not (claims or releases or origins):
            return
        # Take the events table lock first, so no transaction holds a reservation
        # row while waiting for the lock another holds (no deadlock).
        self._lock_table(curs)
        # Arrays go as literals: for a batch of 1,000 that is far cheaper than
        # psycopg's per-element list dumper.
        if releases:
            curs.execute(
                "UPDATE phone_reservations r SET contact_id = NULL, import_id = NULL, suppressed = t.sup,"
                " updated_at = now() FROM unnest(%s::uuid[], %s::uuid[], %s::boolean[]) AS t(rid, cid, sup)"
                " WHERE r.reservation_id = t.rid AND r.contact_id = t.cid",
                (uuid_array(r[0] for r in releases), uuid_array(r[1] for r in releases),
                 _literal("t" if r[2] else "f" for r in releases)))
        if claims:
            # A nested pipeline block syncs on exit, so a number claimed concurrently raises
            # UniqueViolation (→ IntegrityError) here, not a later "pipeline aborted".
            with curs.connection.pipeline():
                curs.execute("SELECT claim_phone_reservations(%s::uuid[], %s, %s::uuid[], %s)",
                             (uuid_array(c[0] for c in claims), account_id, uuid_array(c[1] for c in claims),
                              import_id))
        if origins:
            curs.execute("INSERT INTO contact_origins (contact_id, import_id, import_version)"
                         " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::integer[])",
                         (uuid_array(o[0] for o in origins), uuid_array(o[1] for o in origins),
                          _literal(o[2] for o in origins)))


def _literal(values: Any) -> str:
    """Array literal of values whose text needs no quoting (uuids, integers, booleans)."""
    return "{" + ",".join(str(v) for v in values) + "}"

-- The write side's tables, beside the event store's own (made by eventsourcing):
-- created with the read tables (projections/schema.sql) by service/schema.py, once per
-- version of these files. Their rows are written only by the unit of work
-- (command/unit_of_work.py) and read through the recorder (command/recorder.py).
CREATE TABLE IF NOT EXISTS phone_reservations (
    reservation_id  uuid PRIMARY KEY,        -- HMAC(account_id, E.164), see command/phones.py
    account_id      uuid NOT NULL,
    contact_id      uuid,                    -- NULL: free (the contact was purged or moved)
    import_id       uuid,                    -- the import that claimed it, if any
    suppressed      boolean NOT NULL DEFAULT false,  -- opted out before it was freed
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS import_idempotency (
    account_id       uuid NOT NULL,
    idempotency_key  text NOT NULL,
    import_id        uuid NOT NULL,
    request_hash     bytea,  -- SHA-256 of what was imported: a key reused for other data is refused
    PRIMARY KEY (account_id, idempotency_key)
);
ALTER TABLE import_idempotency ADD COLUMN IF NOT EXISTS request_hash bytea;  -- databases made before it
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
-- An import batch's event holds ~0.6 MB of sealed contacts (random bytes in base64):
-- pglz squeezed it to ~58 % at ~15-20 ms a batch, spent inside append_events under the
-- events table's EXCLUSIVE lock, which every writer waits for. Stored uncompressed
-- (still out of line), a batch holds the lock about half as long, for 1.7x its bytes.
-- Changed only when needed: ALTER TABLE takes an ACCESS EXCLUSIVE lock even for no change.
DO $$ BEGIN
    IF (SELECT attstorage FROM pg_attribute WHERE attrelid = 'contacts_events'::regclass
        AND attname = 'state') <> 'e' THEN
        ALTER TABLE contacts_events ALTER COLUMN state SET STORAGE EXTERNAL;
    END IF;
END $$;
-- Each event's NATS messages, encoded (and sealed) once by the unit of work: the relay
-- completes and sends them (events/outbox.py). NULL for events stored before the column,
-- which the relay decodes as it always did.
ALTER TABLE contacts_events ADD COLUMN IF NOT EXISTS messages bytea;
-- The unit of work's append (command/unit_of_work.py): the events table's lock, the
-- events with their messages, the read model's position and the relay's wake-up in one
-- statement, so the lock is taken and used without a round trip to the client in between.
DROP FUNCTION IF EXISTS append_events(uuid[], integer[], text[], bytea[], text, text);  -- before messages
CREATE OR REPLACE FUNCTION append_events(
    p_ids uuid[], p_versions integer[], p_topics text[], p_states bytea[], p_messages bytea[], p_projection text,
    p_channel text)
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
BEGIN
    -- The commit does not wait for the WAL flush here, so the lock goes as soon as the
    -- commit record is written; the unit of work waits for the flush after it, outside
    -- the lock, where concurrent writers share one flush (group commit).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Writers take turns from here to the commit (command/locks.py EVENTS_APPEND: an advisory
    -- lock, not the table's, which autovacuum's lock would hold back). A writer of an earlier
    -- version takes the table's EXCLUSIVE lock, which conflicts with this insert's ROW EXCLUSIVE.
    PERFORM pg_advisory_xact_lock(724009);
    WITH e AS (INSERT INTO contacts_events (originator_id, originator_version, topic, state, messages)
               SELECT * FROM unnest(p_ids, p_versions, p_topics, p_states, p_messages) RETURNING notification_id)
    SELECT max(notification_id) INTO last_id FROM e;
    UPDATE projection_tracking SET position = last_id, updated_at = now() WHERE name = p_projection;
    PERFORM pg_notify(p_channel, '');
    RETURN last_id;
END $$;
-- A create's claim (create_contacts, below): the number is taken if it is free (or already
-- this contact's), and the answer says who holds it and whether it carries an opt-out, so
-- no look-up goes before it. A number that carries an opt-out (``suppressed``: opted out
-- before it was freed) is taken only by a contact that is opted out too (p_opted); for any
-- other nothing is written and the answer is no holder and ``suppressed``. A concurrent
-- claim of the same number waits here for the other transaction, then sees its holder.
DROP FUNCTION IF EXISTS create_contact(uuid, uuid, uuid, bytea, boolean, uuid[], integer[], text[], bytea[],
                                       bytea[], text, text, jsonb, uuid[]);
DROP FUNCTION IF EXISTS claim_phone(uuid, uuid, uuid);
CREATE OR REPLACE FUNCTION claim_phone(p_id uuid, p_account uuid, p_contact uuid, p_opted boolean,
                                       OUT holder uuid, OUT suppressed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO phone_reservations AS r (reservation_id, account_id, contact_id)
    VALUES (p_id, p_account, p_contact)
    ON CONFLICT (reservation_id) DO UPDATE SET contact_id = EXCLUDED.contact_id, import_id = NULL, updated_at = now()
        WHERE (r.contact_id IS NULL AND (p_opted OR NOT r.suppressed)) OR r.contact_id = EXCLUDED.contact_id
    RETURNING r.contact_id, r.suppressed INTO holder, suppressed;
    IF NOT FOUND THEN
        SELECT r.contact_id, r.suppressed INTO holder, suppressed FROM phone_reservations r
        WHERE r.reservation_id = p_id;
    END IF;
END $$;
-- New contacts in one statement (UnitOfWork.create, a group commit of the creates that
-- arrived together): each one's claim, key and read row, then one append_events for them
-- all (the lock, the position, the relay's wake-up), then the rows every writer of an
-- account shares (project_contacts_created_counts, under the lock). The items come in the
-- order of their claims (reservation ids), so two such statements never deadlock on
-- each other's numbers. Each item's answer is its number's holder: the item's own contact
-- (stored), another contact (nothing of the item stored: the number is taken), or NULL
-- (nothing stored: the number carries an opt-out the contact does not have; the caller
-- builds it again, opted out). Each contact has exactly one event (contact.created).
CREATE OR REPLACE FUNCTION create_contacts(
    p_rids uuid[], p_accounts uuid[], p_contacts uuid[], p_keys bytea[], p_opted boolean[],
    p_versions integer[], p_topics text[], p_states bytea[], p_messages bytea[], p_projection text,
    p_channel text, p_rows jsonb, p_lists jsonb) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    holders uuid[] := '{}';
    stored boolean[] := '{}';
    claimed record;
    ids uuid[];
    versions integer[];
    topics text[];
    states bytea[];
    messages bytea[];
    stored_rows jsonb;   -- the stored contacts' read rows, and their lists, in order
    stored_lists jsonb;
BEGIN
    FOR i IN 1 .. cardinality(p_contacts) LOOP
        SELECT * INTO claimed FROM claim_phone(p_rids[i], p_accounts[i], p_contacts[i], p_opted[i]);
        holders[i] := claimed.holder;
        stored[i] := claimed.holder IS NOT DISTINCT FROM p_contacts[i];
    END LOOP;
    -- The stored contacts' keys, and their new rows before the lock (their index entries are
    -- the projection's dearest part): no other writer can touch a row that is not committed
    -- yet. One statement each for the group.
    INSERT INTO contact_keys (contact_id, key)
    SELECT c, k FROM unnest(p_contacts, p_keys) WITH ORDINALITY AS e(c, k, n) WHERE stored[n];
    SELECT jsonb_agg(p_rows->(n - 1) ORDER BY n), jsonb_agg(p_lists->(n - 1) ORDER BY n)
    INTO stored_rows, stored_lists FROM generate_series(1, cardinality(p_contacts)) AS n WHERE stored[n];
    PERFORM project_contacts_created_rows(stored_rows);
    SELECT array_agg(c ORDER BY n), array_agg(v ORDER BY n), array_agg(t ORDER BY n), array_agg(s ORDER BY n),
           array_agg(m ORDER BY n)
    INTO ids, versions, topics, states, messages
    FROM unnest(p_contacts, p_versions, p_topics, p_states, p_messages) WITH ORDINALITY AS e(c, v, t, s, m, n)
    WHERE stored[n];
    IF ids IS NOT NULL THEN
        PERFORM append_events(ids, versions, topics, states, messages, p_projection, p_channel);
        -- The stored contacts' counts in one call, each count row moved once by the group's sum.
        PERFORM project_contacts_created_counts(stored_rows, stored_lists);
    END IF;
    RETURN holders;
END $$;
-- Claims of numbers the caller found free (a number changed by PATCH, an import batch's):
-- raises unique_violation if one is held by another contact meanwhile. Most are numbers
-- never reserved, so a plain INSERT goes first: ON CONFLICT's speculative insertion (an
-- index probe before each row, a confirmation after) cost 4.5-5.1 us of backend CPU a
-- number against 2.6-3.4 (1,000 new numbers a statement into 192,000, three runs). If a
-- number has a row (freed by a purge, or taken meanwhile) the INSERT fails, its
-- subtransaction is undone, and the claim is made as before.
CREATE OR REPLACE FUNCTION claim_phone_reservations(
    p_ids uuid[], p_account uuid, p_contacts uuid[], p_import uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    claimed integer;
BEGIN
    BEGIN
        INSERT INTO phone_reservations (reservation_id, account_id, contact_id, import_id)
        SELECT t.rid, p_account, t.cid, p_import FROM unnest(p_ids, p_contacts) AS t(rid, cid);
        RETURN;
    EXCEPTION WHEN unique_violation THEN
        NULL;  -- some number has a row: claim each as below
    END;
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

-- Per-contact data keys (crypto-shredding, command/crypto.py): erasing one (NULL) erases the contact.
-- An imported contact's row also names the batch event that holds its creation (its own
-- stream starts at version 2): written with the key, in the batch's one COPY, and kept
-- when the key is erased, so a purged contact's history still starts with its creation.
CREATE TABLE IF NOT EXISTS contact_keys (
    contact_id      uuid PRIMARY KEY,
    key             bytea,                   -- NULL: erased (the contact was purged)
    created_at      timestamptz NOT NULL DEFAULT now(),
    import_id       uuid,                    -- the import whose batch event created the contact, if any
    import_version  integer                  -- that batch event's version
);
-- Databases made before the origins moved here from their own table (contact_origins): one
-- table and one COPY fewer per import batch (about 4 us of PostgreSQL CPU a contact).
-- Changed only when needed: ALTER TABLE takes an ACCESS EXCLUSIVE lock even for no change.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_keys' AND column_name = 'import_id') THEN
        ALTER TABLE contact_keys ADD COLUMN import_id uuid, ADD COLUMN import_version integer,
                                 ALTER COLUMN key DROP NOT NULL;
    END IF;
    IF to_regclass('contact_origins') IS NOT NULL THEN
        -- A purged contact has no key row left: it gets one, erased, holding its origin.
        INSERT INTO contact_keys (contact_id, key, import_id, import_version)
        SELECT contact_id, NULL, import_id, import_version FROM contact_origins
        ON CONFLICT (contact_id) DO UPDATE SET import_id = EXCLUDED.import_id,
                                               import_version = EXCLUDED.import_version;
        DROP TABLE contact_origins;
    END IF;
END $$;

-- The operator directory (command/operator_prefixes.py), seeded from phonenumbers on first start.
CREATE TABLE IF NOT EXISTS mno_prefixes (
    country   text NOT NULL,
    prefix    text PRIMARY KEY,   -- digits after '+', country code included
    operator  text NOT NULL
);
CREATE TABLE IF NOT EXISTS mno_prefixes_source (
    id        integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    source    text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

-- Secrets made once per database (the phone reservations' HMAC key, service/bootstrap.py).
CREATE TABLE IF NOT EXISTS service_secrets (name text PRIMARY KEY, value bytea NOT NULL);

-- The NATS relay's checkpoint (events/relay.py): the last notification id whose messages are acknowledged.
CREATE TABLE IF NOT EXISTS relay_tracking (
    name        text PRIMARY KEY,
    position    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Purged contacts whose messages the eraser still has to delete from the NATS stream
-- (events/erasure.py): the relay queues them in order, the eraser drains them beside it.
CREATE TABLE IF NOT EXISTS pending_erasures (
    position    bigint NOT NULL,       -- the Purged event's notification id: drained in this order
    stem        text PRIMARY KEY,      -- <prefix>.<account>.contact.<id>: the subjects to erase
    subject     text NOT NULL,         -- of the contact.purged message, published when erased
    msg_id      text NOT NULL,
    payload     bytea NOT NULL,        -- the message itself (no personal field: a purge has none)
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pending_erasures_position ON pending_erasures (position);
-- A write whose events' projections are all server-side calls and which has no write-side
-- rows (a PATCH of a contact's fields or lists, adding contacts to a list) in one statement,
-- its own transaction, like a create: the append (the lock, the position, the relay's
-- wake-up), then each event's projection in order (projections/schema.sql, the projector's
-- own definitions, ReadModelProjector.server_call names them). No BEGIN, no COMMIT, no
-- pipeline: one round trip, then the flush wait.
CREATE OR REPLACE FUNCTION commit_contact_events(
    p_ids uuid[], p_versions integer[], p_topics text[], p_states bytea[], p_messages bytea[], p_projection text,
    p_channel text, p_accounts uuid[], p_times timestamptz[], p_kinds text[], p_args jsonb[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
    i integer := 1;
    j integer;
BEGIN
    last_id := append_events(p_ids, p_versions, p_topics, p_states, p_messages, p_projection, p_channel);
    WHILE i <= cardinality(p_ids) LOOP
        IF p_kinds[i] = 'contact.added-to-lists' THEN
            -- A run of list-adds (a group of clients adding contacts to a list) in one statement.
            j := i;
            WHILE j < cardinality(p_ids) AND p_kinds[j + 1] = 'contact.added-to-lists' LOOP
                j := j + 1;
            END LOOP;
            PERFORM project_contacts_added_to_lists(p_ids[i:j], p_accounts[i:j], p_args[i:j], p_times[i:j],
                                                    p_versions[i:j]);
            i := j + 1;
        ELSE
            PERFORM project_contact_event(p_kinds[i], p_ids[i], p_accounts[i], p_args[i], p_times[i], p_versions[i]);
            i := i + 1;
        END IF;
    END LOOP;
    RETURN last_id;
END $$;

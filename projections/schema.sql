-- Read tables built by projections/read_model.py. Disposable: `contacts projections
-- rebuild` recreates them from the event store.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;  -- a list's members by tag (below)

CREATE TABLE IF NOT EXISTS projection_tracking (
    name        text PRIMARY KEY,
    position    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Events the projector could not apply (a bug or bad data, not a lost database): kept
-- here so one bad event cannot stop the read tables of every account. Each row needs a
-- fix and `contacts projections rebuild`; `contacts_projection_quarantined_events`
-- counts them.
CREATE TABLE IF NOT EXISTS projection_quarantine (
    name             text NOT NULL,
    notification_id  bigint NOT NULL,
    topic            text NOT NULL,
    error            text NOT NULL,
    quarantined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, notification_id)
);

CREATE TABLE IF NOT EXISTS contact_lists (
    id             uuid PRIMARY KEY,
    account_id     uuid NOT NULL,
    name           text NOT NULL,
    description    text,
    version        integer NOT NULL DEFAULT 1,  -- the aggregate's version: its last event's (ETag, If-Match)
    contact_count  integer NOT NULL DEFAULT 0,  -- active (non-trashed) members
    opted_out_count integer NOT NULL DEFAULT 0, -- of those, the opted-out ones (totals of listId + isOptedOut)
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS contact_lists_account ON contact_lists (account_id, created_at, id);

CREATE TABLE IF NOT EXISTS contacts (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL,
    first_name      text,
    last_name       text,
    phone           text NOT NULL,
    email           text,
    notes           text,
    tags            text[] NOT NULL DEFAULT '{}',
    is_opted_out    boolean NOT NULL DEFAULT false,
    status          text NOT NULL,
    invalid_reason  text,
    operator        text,
    country         text,
    list_ids        uuid[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    search_name     text NOT NULL DEFAULT '',   -- lower(first last)
    search_phone    text NOT NULL DEFAULT '',   -- E.164 digits and national digits
    version         integer NOT NULL DEFAULT 1  -- the aggregate's version: its last event's (ETag, If-Match)
);
-- Tables made before the version column: add it, filled from the event store once (an
-- imported contact's own stream starts at version 2; without one it is at version 1).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contacts' AND column_name = 'version') THEN
        ALTER TABLE contacts ADD COLUMN version integer NOT NULL DEFAULT 1;
        ALTER TABLE contact_lists ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
        IF to_regclass('contacts_events') IS NOT NULL THEN
            UPDATE contacts c SET version = e.version FROM (SELECT originator_id, max(originator_version) AS version
                FROM contacts_events GROUP BY originator_id) e WHERE e.originator_id = c.id;
            UPDATE contact_lists l SET version = e.version FROM (SELECT originator_id, max(originator_version) AS version
                FROM contacts_events GROUP BY originator_id) e WHERE e.originator_id = l.id;
        END IF;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS contacts_account_active ON contacts (account_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- Keyset pages of GET /contacts in the other sort orders (query/keyset.py): per account, the
-- sort key, then the id to break ties; each read forwards or backwards for either direction.
-- Names sort case-insensitively; contacts without one come last, read from the same index's NULLs.
CREATE INDEX IF NOT EXISTS contacts_account_updated ON contacts (account_id, updated_at, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_account_first_name
    ON contacts (account_id, lower(first_name), id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_account_last_name
    ON contacts (account_id, lower(last_name), id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_account_phone ON contacts (account_id, phone, id) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS contacts_account_trash ON contacts (account_id, deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS contacts_tags ON contacts USING gin (tags);
CREATE INDEX IF NOT EXISTS contacts_search_name ON contacts USING gin (search_name gin_trgm_ops);
CREATE INDEX IF NOT EXISTS contacts_search_phone ON contacts USING gin (search_phone gin_trgm_ops);
-- The GIN indexes' pending lists are merged every half second by the worker, off the write
-- path (service/pending_lists.py); the larger limit (16 MB, 4 by default) leaves it room, so
-- that a write, which would merge the list under the events table's lock, almost never does.
ALTER INDEX contacts_tags SET (gin_pending_list_limit = 16384);
ALTER INDEX contacts_search_name SET (gin_pending_list_limit = 16384);
ALTER INDEX contacts_search_phone SET (gin_pending_list_limit = 16384);
-- A finer sample of the search columns: with the default (100), how many contacts a
-- term matches was guessed from a hundred histogram bounds, and one ANALYZE guessed
-- 98 for a name 40,096 contacts have, which turned its page into a 200 ms plan. At
-- 1,000 the guess was 39,653 (docs/benchmarks.md). Set once, not on every start.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = format('%I.contacts', current_schema())::regclass
               AND attname IN ('search_name', 'search_phone') AND attstattarget IS DISTINCT FROM 1000) THEN
        ALTER TABLE contacts ALTER COLUMN search_name SET STATISTICS 1000,
                             ALTER COLUMN search_phone SET STATISTICS 1000;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS contact_list_memberships (
    list_id             uuid NOT NULL,
    contact_id          uuid NOT NULL,
    account_id          uuid NOT NULL,
    added_at            timestamptz NOT NULL,
    -- The contact's sort key and state, copied here so a list's page is read from this
    -- table's own index in list order (query/contacts.py), not by walking every contact.
    contact_created_at  timestamptz NOT NULL,
    contact_active      boolean NOT NULL,     -- the contact is not trashed
    contact_opted_out   boolean NOT NULL,     -- the contact is opted out (pages of listId + isOptedOut)
    contact_tags        text[] NOT NULL,      -- the contact's tags (pages of listId + tags)
    PRIMARY KEY (list_id, contact_id)
);
-- Tables made before those two columns: add and fill them once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_list_memberships' AND column_name = 'contact_created_at') THEN
        ALTER TABLE contact_list_memberships ADD COLUMN contact_created_at timestamptz,
                                             ADD COLUMN contact_active boolean;
        UPDATE contact_list_memberships m SET contact_created_at = c.created_at, contact_active = c.deleted_at IS NULL
        FROM contacts c WHERE c.id = m.contact_id;
        ALTER TABLE contact_list_memberships ALTER COLUMN contact_created_at SET NOT NULL,
                                             ALTER COLUMN contact_active SET NOT NULL;
    END IF;
END $$;
-- ... and before the opted-out flag, the tags and the lists' opted-out count: add and fill them once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_list_memberships' AND column_name = 'contact_opted_out') THEN
        ALTER TABLE contact_list_memberships ADD COLUMN contact_opted_out boolean;
        UPDATE contact_list_memberships m SET contact_opted_out = c.is_opted_out FROM contacts c WHERE c.id = m.contact_id;
        UPDATE contact_list_memberships SET contact_opted_out = false WHERE contact_opted_out IS NULL;
        ALTER TABLE contact_list_memberships ALTER COLUMN contact_opted_out SET NOT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_list_memberships' AND column_name = 'contact_tags') THEN
        ALTER TABLE contact_list_memberships ADD COLUMN contact_tags text[];
        UPDATE contact_list_memberships m SET contact_tags = c.tags FROM contacts c WHERE c.id = m.contact_id;
        UPDATE contact_list_memberships SET contact_tags = '{}' WHERE contact_tags IS NULL;
        ALTER TABLE contact_list_memberships ALTER COLUMN contact_tags SET NOT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_lists' AND column_name = 'opted_out_count') THEN
        ALTER TABLE contact_lists ADD COLUMN opted_out_count integer NOT NULL DEFAULT 0;
        UPDATE contact_lists l SET opted_out_count = n FROM (
            SELECT list_id, count(*) AS n FROM contact_list_memberships
            WHERE contact_active AND contact_opted_out GROUP BY list_id) m WHERE m.list_id = l.id;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS contact_list_memberships_contact ON contact_list_memberships (contact_id);
-- account_id is INCLUDEd in the two list-order indexes so that a list's pages stay
-- index-only under row-level security, whose policy tests account_id on every row walked
-- (without it a middle page of a 20,000-member list fetched each skipped row: 8 -> 24 ms).
DROP INDEX IF EXISTS contact_list_memberships_order;
DROP INDEX IF EXISTS contact_list_memberships_opted_order;
CREATE INDEX IF NOT EXISTS contact_list_memberships_order_v2
    ON contact_list_memberships (list_id, contact_created_at DESC, contact_id DESC) INCLUDE (account_id)
    WHERE contact_active;
-- A list's members with given tags, found without walking the whole list (counts of listId + tags).
CREATE INDEX IF NOT EXISTS contact_list_memberships_tags
    ON contact_list_memberships USING gin (list_id, contact_tags) WHERE contact_active;
ALTER INDEX contact_list_memberships_tags SET (gin_pending_list_limit = 16384);  -- as contacts_tags
-- A list's pages filtered by isOptedOut, in list order.
CREATE INDEX IF NOT EXISTS contact_list_memberships_opted_order_v2
    ON contact_list_memberships (list_id, contact_opted_out, contact_created_at DESC, contact_id DESC)
    INCLUDE (account_id) WHERE contact_active;

-- Tag index: distinct tags of each account's active contacts, with how many use each.
CREATE TABLE IF NOT EXISTS contact_tags (
    account_id       uuid NOT NULL,
    tag              text NOT NULL,
    contact_count    integer NOT NULL,
    opted_out_count  integer NOT NULL DEFAULT 0,  -- of those, the opted-out ones (totals of tags + isOptedOut)
    PRIMARY KEY (account_id, tag)
);
-- Tables made before the opted-out count: add and fill it once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'contact_tags' AND column_name = 'opted_out_count') THEN
        ALTER TABLE contact_tags ADD COLUMN opted_out_count integer NOT NULL DEFAULT 0;
        UPDATE contact_tags ct SET opted_out_count = n FROM (
            SELECT account_id, t.tag, count(*) AS n FROM contacts CROSS JOIN LATERAL unnest(tags) AS t(tag)
            WHERE deleted_at IS NULL AND is_opted_out GROUP BY 1, 2) x
        WHERE x.account_id = ct.account_id AND x.tag = ct.tag;
    END IF;
END $$;

-- Totals of each account's active contacts, read as GET /contacts totals when the filter allows.
CREATE TABLE IF NOT EXISTS account_contact_counts (
    account_id  uuid PRIMARY KEY,
    active      integer NOT NULL DEFAULT 0,   -- not trashed
    opted_out   integer NOT NULL DEFAULT 0    -- not trashed and opted out
);

-- Active contacts per hour and per second of created_at (UTC), for each account, all of
-- them (tag '') and those with each tag: where a deep page of GET /contacts starts,
-- found by summing these instead of skipping half a million index entries
-- (query/contacts.py), and how many of those are opted out. Kept by the projector with
-- the totals above; filled from the contacts when the table is created, or made again
-- when it is of an older version (it is derived data): the table's comment names the
-- version ('v2': opted-out counts on every tag's rows, not only on '').
DO $$
BEGIN
    -- Looked up in the schema being created only (a rebuild creates its tables in a
    -- schema of its own, with public still on the search path).
    IF obj_description(to_regclass(format('%I.contact_time_counts', current_schema())), 'pg_class')
            IS DISTINCT FROM 'v2' THEN
        EXECUTE format('DROP TABLE IF EXISTS %I.contact_time_counts', current_schema());
        CREATE TABLE contact_time_counts (
            account_id  uuid NOT NULL,
            tag         text NOT NULL,           -- '' for all contacts
            unit        text NOT NULL,           -- 'hour' | 'second'
            bucket      timestamptz NOT NULL,    -- created_at truncated to the unit, in UTC
            active      integer NOT NULL,        -- not trashed
            opted_out   integer NOT NULL,        -- not trashed and opted out
            PRIMARY KEY (account_id, tag, unit, bucket)
        );
        COMMENT ON TABLE contact_time_counts IS 'v2';
        INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
        SELECT account_id, t.tag, u.unit, date_trunc(u.unit, created_at, 'UTC'), count(*),
               count(*) FILTER (WHERE is_opted_out)
        FROM contacts CROSS JOIN LATERAL unnest(array_append(tags, '')) AS t(tag)
             CROSS JOIN (VALUES ('hour'), ('second')) AS u(unit)
        WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4;
    END IF;
END $$;

-- Select-all bulk actions run as jobs (POST /contacts/bulk-*, list add / remove with a filter).
CREATE TABLE IF NOT EXISTS bulk_actions (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL,
    action       text NOT NULL,             -- delete | add_to_list | remove_from_list | tag | untag | opt_out | opt_in
    params       jsonb NOT NULL,
    status       text NOT NULL,             -- queued | running | completed | failed
    matched      integer NOT NULL,
    processed    integer NOT NULL DEFAULT 0,
    changed      integer NOT NULL DEFAULT 0,
    error        text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz
);

-- Import jobs and their row-by-row report (row numbers and reasons, never values).
CREATE TABLE IF NOT EXISTS imports (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL,
    status        text NOT NULL,             -- running | completed | failed
    source        text NOT NULL,             -- csv | xlsx | json
    filename      text,
    list_id       uuid,
    rows_read     integer NOT NULL DEFAULT 0,
    imported      integer NOT NULL DEFAULT 0,
    valid         integer NOT NULL DEFAULT 0,
    invalid       integer NOT NULL DEFAULT 0,
    skipped       integer NOT NULL DEFAULT 0,
    error         text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS imports_account ON imports (account_id, created_at DESC);
-- The worker's look for synchronous imports abandoned mid-import (service/import_jobs.py ABANDONED_JOBS).
CREATE INDEX IF NOT EXISTS imports_running ON imports (updated_at) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS import_report_rows (
    import_id   uuid NOT NULL,
    row         integer NOT NULL,
    outcome     text NOT NULL,               -- skipped | imported
    reason      text NOT NULL,
    detail      text,
    contact_id  uuid,
    line        integer,                     -- as a spreadsheet numbers it (header = 1); NULL for JSON and old events
    PRIMARY KEY (import_id, row, reason)
);
DO $$
BEGIN
    -- Only when missing: ALTER TABLE takes an ACCESS EXCLUSIVE lock even when it changes nothing.
    IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'import_report_rows' AND column_name = 'line') THEN
        ALTER TABLE import_report_rows ADD COLUMN line integer;
    END IF;
END $$;

-- The read model's position: moved by every write in its own transaction (inline projection).
INSERT INTO projection_tracking (name) VALUES ('read_model') ON CONFLICT (name) DO NOTHING;

-- Row-level security: defence in depth for tenancy. Every query of the API filters by
-- account already; the read side also runs as the role contacts_reader (no BYPASSRLS,
-- SELECT only), with the account set for its transaction (query/tenancy.py), so a query
-- that forgets its filter sees no other account's rows. The service's own role owns
-- these tables: owners bypass RLS (none is FORCEd), so the projector and the writers
-- keep writing every account's rows. The role is cluster-wide; creating it needs
-- CREATEROLE (the embedded server creates it as superuser).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'contacts_reader') THEN
        BEGIN
            CREATE ROLE contacts_reader NOLOGIN NOSUPERUSER NOBYPASSRLS;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- another database's start made it
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'the role contacts_reader is missing and % may not create it', current_user
                    USING HINT = format('As a superuser: CREATE ROLE contacts_reader NOLOGIN; GRANT contacts_reader TO %I;',
                                        current_user);
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'contacts_reader', 'MEMBER') THEN
        EXECUTE format('GRANT contacts_reader TO %I', current_user);
    END IF;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['contacts', 'contact_list_memberships', 'contact_lists', 'contact_tags',
                             'account_contact_counts', 'contact_time_counts', 'imports', 'bulk_actions'] LOOP
        -- Only when not done yet: ALTER TABLE takes an ACCESS EXCLUSIVE lock, and a process
        -- starting beside busy writers deadlocked with them when it ran on every start.
        IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass(quote_ident(t))) THEN
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        END IF;
        IF NOT has_table_privilege('contacts_reader', to_regclass(quote_ident(t)), 'SELECT') THEN
            EXECUTE format('GRANT SELECT ON %I TO contacts_reader', t);
        END IF;
        -- Unset (or reset) means no account: NULL, which matches no row. The scalar subquery
        -- is evaluated once per statement (an InitPlan); written bare, current_setting and
        -- the cast ran for every row a scan walked: a list's middle page, walking 10,000
        -- index entries, took 5.5 ms instead of 0.7.
        IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema() AND tablename = t
                       AND policyname = 'tenant_reads') THEN
            EXECUTE format('CREATE POLICY tenant_reads ON %I FOR SELECT TO contacts_reader'
                           ' USING (account_id = (SELECT nullif(current_setting(''app.account_id'', true), '''')::uuid))', t);
        ELSIF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema() AND tablename = t
                          AND policyname = 'tenant_reads' AND qual LIKE '%SELECT%') THEN
            EXECUTE format('ALTER POLICY tenant_reads ON %I'
                           ' USING (account_id = (SELECT nullif(current_setting(''app.account_id'', true), '''')::uuid))', t);
        END IF;
    END LOOP;
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass('import_report_rows')) THEN
        ALTER TABLE import_report_rows ENABLE ROW LEVEL SECURITY;
    END IF;
    IF NOT has_table_privilege('contacts_reader', to_regclass('import_report_rows'), 'SELECT') THEN
        GRANT SELECT ON import_report_rows TO contacts_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema() AND tablename = 'import_report_rows'
                   AND policyname = 'tenant_reads') THEN
        -- Report rows carry no account: theirs is their import's (itself filtered by its policy).
        CREATE POLICY tenant_reads ON import_report_rows FOR SELECT TO contacts_reader
            USING (EXISTS (SELECT 1 FROM imports i WHERE i.id = import_id));
    END IF;
END $$;

-- Searches (LIKE) and tag filters (@>) use their indexes under row-level security only
-- if those operators are LEAKPROOF, which only a superuser may declare (the embedded
-- server does, as does a service connecting as a superuser, here). Elsewhere the service
-- logs a warning at start naming the two statements to run (projections/read_model.py).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AND EXISTS (
            SELECT FROM pg_proc WHERE proname IN ('textlike', 'arraycontains')
            AND pronamespace = 'pg_catalog'::regnamespace AND NOT proleakproof) THEN
        ALTER FUNCTION pg_catalog.textlike(text, text) LEAKPROOF;
        ALTER FUNCTION pg_catalog.arraycontains(anyarray, anyarray) LEAKPROOF;
    END IF;
END $$;

-- The functions live in public, once, like the events table: a rebuild's schema holds
-- only tables, and a function finds the tables of its caller's search_path.
-- The time counts' units for a contact created at p_ts (projections/counters.py): its hour
-- and its second, and its millisecond if an import counted that second per millisecond
-- (such a second has them complete, so every later change counts its millisecond too).
CREATE OR REPLACE FUNCTION public.split_second(p_account uuid, p_ts timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM contact_time_counts m WHERE m.account_id = p_account AND m.tag = ''
                   AND m.unit = 'millisecond' AND m.bucket >= date_trunc('second', p_ts, 'UTC')
                   AND m.bucket < date_trunc('second', p_ts, 'UTC') + interval '1 second')
$$;
CREATE OR REPLACE FUNCTION public.time_units(p_account uuid, p_ts timestamptz) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN split_second(p_account, p_ts) THEN ARRAY['hour', 'second', 'millisecond']
                ELSE ARRAY['hour', 'second'] END
$$;

-- A contact's new memberships were add_memberships, one contact at a time: a new contact's
-- lists now go through project_contacts_added_to_lists, as a list-add's do (one definition).
DROP FUNCTION IF EXISTS public.add_memberships(uuid, uuid, timestamptz, timestamptz, boolean, boolean, text[], uuid[]);
DROP FUNCTION IF EXISTS public.add_memberships(uuid, uuid, timestamptz, timestamptz, boolean, boolean, text[], uuid[],
                                               integer);

-- The projection of contact.created (ReadModelProjector): the new contact's row (JSON named
-- after the columns, ReadModelProjector.created_row), its account's totals, its tags'
-- counts, its time counts and its memberships. One definition, run by the projector and by
-- create_contacts (command/schema.sql) inside a group of creates' single statement, in two parts:
-- the row, which no other writer can touch yet, goes before the events table's lock; the
-- counts and memberships, rows every writer of the account shares, go under it.
CREATE OR REPLACE FUNCTION public.project_contact_created(p_row jsonb, p_lists uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM project_contacts_created_rows(jsonb_build_array(p_row));
    PERFORM project_contacts_created_counts(jsonb_build_array(p_row), jsonb_build_array(to_jsonb(p_lists)));
END $$;
-- New contacts' rows (a JSON array of rows named after the columns; NULL: none).
DROP FUNCTION IF EXISTS public.project_contact_created_row(jsonb);
CREATE OR REPLACE FUNCTION public.project_contacts_created_rows(p_rows jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO contacts SELECT * FROM jsonb_populate_recordset(NULL::contacts, p_rows) ON CONFLICT (id) DO NOTHING
$$;
DROP FUNCTION IF EXISTS public.project_contact_created_counts(jsonb, uuid[]);
-- The counts of new contacts (contact.created), for the contacts a group of creates stored
-- (create_contacts, command/schema.sql) or one on replay (project_contact_created): the
-- accounts' totals, the tag index and the time counts, each row moved once by the group's
-- sum (a group of creates into one account updated its totals' row, its hour's and its
-- second's time counts once per contact, under the events table's lock); then the
-- memberships. Creates add no millisecond counts to a second that has none
-- (split_second), so the units read once for the group are what each contact's would be.
-- p_rows: the contacts' rows as a JSON array (ReadModelProjector.created_row); p_lists: their
-- lists, a JSON array of arrays in the same order.
CREATE OR REPLACE FUNCTION public.project_contacts_created_counts(p_rows jsonb, p_lists jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- Read from the JSON, not as contacts rows: a function compiled once must not keep
    -- the row type of a table a rebuild swaps out (projections/rebuild.py).
    WITH made AS (
        SELECT (r->>'account_id')::uuid AS account, (r->>'is_opted_out')::boolean::int AS opted,
               (r->>'created_at')::timestamptz AS created, ARRAY(SELECT jsonb_array_elements_text(r->'tags')) AS tags
        FROM jsonb_array_elements(p_rows) AS r
    ), totals AS (
        INSERT INTO account_contact_counts (account_id, active, opted_out)
        SELECT account, count(*), sum(opted) FROM made GROUP BY account
        ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active + EXCLUDED.active,
            opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out
    ), tagged AS (
        INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)
        SELECT account, tag, count(*), sum(opted) FROM made, unnest(made.tags) AS tag GROUP BY account, tag
        ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = contact_tags.contact_count + EXCLUDED.contact_count,
            opted_out_count = contact_tags.opted_out_count + EXCLUDED.opted_out_count
    )
    INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
    SELECT account, tag, unit, date_trunc(unit, created, 'UTC'), count(*), sum(opted)
    FROM made, unnest(array_append(made.tags, '')) AS tag, unnest(time_units(account, created)) AS unit
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE SET active = contact_time_counts.active + EXCLUDED.active,
        opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out;
    -- The memberships of those created in lists, as a list-add of those lists at their
    -- creation adds them (the row's time and version stay the creation's).
    PERFORM project_contacts_added_to_lists(
        array_agg((r->>'id')::uuid ORDER BY n), array_agg((r->>'account_id')::uuid ORDER BY n),
        array_agg(l ORDER BY n), array_agg((r->>'created_at')::timestamptz ORDER BY n),
        array_agg((r->>'version')::integer ORDER BY n))
    FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS x(r, n)
    JOIN jsonb_array_elements(p_lists) WITH ORDINALITY AS y(l, m) ON m = n
    WHERE jsonb_array_length(l) > 0
    HAVING count(*) > 0;
END $$;

-- The projection of contact.updated (ReadModelProjector): the contact's changed columns
-- (p_values: JSON named after the columns, only those the event changed) and its search
-- columns; then, if its tags changed, its memberships' tags, and if it is active, the tag
-- index and the tags' time counts. One definition, run live and on replay, with nothing to
-- wait for under the events table's lock, in two statements where it was nine: the row's
-- UPDATE gives back the old tags and state (RETURNING OLD, PostgreSQL 18), so no read goes
-- before it, and a PATCH that keeps the tags stops there; one statement then keeps the
-- memberships, the tag index and the time counts, and a third deletes the counts that fell
-- to zero, only when one did (docs/architecture.md, "The unit of work").
-- The search name is lower-cased under PG_UNICODE_FAST (PostgreSQL 18: full Unicode case
-- mapping), which gives what Python's str.lower gives a new contact's row
-- (ReadModelProjector.created_row): equal on every code point Python 3.11 knows, final
-- sigma included (tests/integration/test_contacts.py).
CREATE OR REPLACE FUNCTION public.project_contact_updated(p_id uuid, p_account uuid, p_values jsonb,
                                                          p_ts timestamptz, p_version integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- Columns read one by one, not as a contacts row: a function compiled once must not keep
    -- the row type of a table a rebuild swaps out (projections/rebuild.py).
    old_tags text[];
    new_tags text[];
    counted boolean;  -- active (not trashed): its tags are counted
    opted boolean;
    created timestamptz;
    zero_times boolean;
    zero_tags boolean;
BEGIN
    UPDATE contacts c SET
        first_name = CASE WHEN p_values ? 'first_name' THEN p_values->>'first_name' ELSE c.first_name END,
        last_name = CASE WHEN p_values ? 'last_name' THEN p_values->>'last_name' ELSE c.last_name END,
        phone = CASE WHEN p_values ? 'phone' THEN p_values->>'phone' ELSE c.phone END,
        email = CASE WHEN p_values ? 'email' THEN p_values->>'email' ELSE c.email END,
        notes = CASE WHEN p_values ? 'notes' THEN p_values->>'notes' ELSE c.notes END,
        tags = CASE WHEN p_values ? 'tags' THEN ARRAY(SELECT jsonb_array_elements_text(p_values->'tags'))
                    ELSE c.tags END,
        status = CASE WHEN p_values ? 'status' THEN p_values->>'status' ELSE c.status END,
        invalid_reason = CASE WHEN p_values ? 'invalid_reason' THEN p_values->>'invalid_reason'
                              ELSE c.invalid_reason END,
        operator = CASE WHEN p_values ? 'operator' THEN p_values->>'operator' ELSE c.operator END,
        country = CASE WHEN p_values ? 'country' THEN p_values->>'country' ELSE c.country END,
        -- projections/read_model.py's search_name and search_phone, in SQL.
        search_name = lower(concat_ws(' ',
            nullif(CASE WHEN p_values ? 'first_name' THEN p_values->>'first_name' ELSE c.first_name END, ''),
            nullif(CASE WHEN p_values ? 'last_name' THEN p_values->>'last_name' ELSE c.last_name END, ''))
            COLLATE pg_unicode_fast),
        search_phone = CASE WHEN p_values ? 'phone' THEN ltrim(p_values->>'phone', '+') ELSE c.search_phone END,
        updated_at = p_ts,
        version = p_version
    WHERE c.id = p_id
    RETURNING old.tags, new.tags, old.deleted_at IS NULL, old.is_opted_out, old.created_at
    INTO old_tags, new_tags, counted, opted, created;
    -- No such contact, or its tags as they were (most PATCHes): nothing else changes.
    IF NOT FOUND OR new_tags = old_tags THEN
        RETURN;
    END IF;
    -- The tags it lost (-1) and those it gained (+1), counted only while it is active; the
    -- counts are added to with INSERT … ON CONFLICT (an index probe per row whatever the
    -- plan: a MERGE's join, in the generic plan a function's statement keeps, was a hash
    -- join over the account's whole time counts), which says whether any fell to zero.
    WITH delta AS (
        (SELECT tag, -1 AS n FROM unnest(old_tags) AS tag WHERE counted EXCEPT SELECT unnest(new_tags), -1)
        UNION ALL
        (SELECT tag, 1 FROM unnest(new_tags) AS tag WHERE counted EXCEPT SELECT unnest(old_tags), 1)
    ), members AS (
        UPDATE contact_list_memberships SET contact_tags = new_tags WHERE contact_id = p_id
    ), timed AS (
        INSERT INTO contact_time_counts AS t (account_id, tag, unit, bucket, active, opted_out)
        SELECT p_account, d.tag, u, date_trunc(u, created, 'UTC'), d.n, CASE WHEN opted THEN d.n ELSE 0 END
        FROM delta d, unnest(time_units(p_account, created)) AS u
        ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE
            SET active = t.active + EXCLUDED.active, opted_out = t.opted_out + EXCLUDED.opted_out
        RETURNING t.active <= 0 AND t.opted_out <= 0 AS zero
    ), tagged AS (
        INSERT INTO contact_tags AS t (account_id, tag, contact_count, opted_out_count)
        SELECT p_account, d.tag, d.n, CASE WHEN opted THEN d.n ELSE 0 END FROM delta d
        ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = t.contact_count + EXCLUDED.contact_count,
            opted_out_count = t.opted_out_count + EXCLUDED.opted_out_count
        RETURNING t.contact_count <= 0 AS zero
    )
    SELECT coalesce((SELECT bool_or(zero) FROM timed), false), coalesce((SELECT bool_or(zero) FROM tagged), false)
    INTO zero_times, zero_tags;
    -- Rows fallen to zero go (tags are personal data, docs/privacy.md), as in
    -- projections/counters.py: a statement more, only when one did.
    IF zero_times THEN
        DELETE FROM contact_time_counts WHERE account_id = p_account AND tag = ANY(old_tags)
            AND bucket IN (date_trunc('hour', created, 'UTC'), date_trunc('second', created, 'UTC'),
                           date_trunc('millisecond', created, 'UTC'))
            AND active <= 0 AND opted_out <= 0;
    END IF;
    IF zero_tags THEN
        DELETE FROM contact_tags WHERE account_id = p_account AND tag = ANY(old_tags) AND contact_count <= 0;
    END IF;
END $$;

-- One contact event's projection by its kind and JSON argument (ReadModelProjector.server_call
-- names both): the one dispatch that a write's single statement (commit_contact_events,
-- command/schema.sql) and the projector's replay (ReadModelProjector.apply) both go through.
CREATE OR REPLACE FUNCTION public.project_contact_event(p_kind text, p_id uuid, p_account uuid, p_arg jsonb,
                                                       p_ts timestamptz, p_version integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_kind
        WHEN 'contact.updated' THEN
            PERFORM project_contact_updated(p_id, p_account, p_arg, p_ts, p_version);
        WHEN 'contact.added-to-lists' THEN
            PERFORM project_contacts_added_to_lists(ARRAY[p_id], ARRAY[p_account], ARRAY[p_arg], ARRAY[p_ts],
                                                    ARRAY[p_version]);
        WHEN 'contact.removed-from-lists' THEN
            PERFORM project_contact_removed_from_lists(p_id, p_account,
                ARRAY(SELECT x::uuid FROM jsonb_array_elements_text(p_arg) WITH ORDINALITY AS t(x, n) ORDER BY n),
                p_ts, p_version);
        WHEN 'contact.opted-out' THEN
            PERFORM project_contact_opted(p_id, p_account, true, p_ts, p_version);
        WHEN 'contact.opted-in' THEN
            PERFORM project_contact_opted(p_id, p_account, false, p_ts, p_version);
    END CASE;  -- an unknown kind raises CASE_NOT_FOUND: nothing is stored
END $$;

-- The projection of contact.added-to-lists, for a run of such events in log order (a group
-- of list-adds committed together: commit_contact_events, command/schema.sql; one event on
-- replay: project_contact_event): the memberships, the lists' counts, and each contact's
-- listIds, time and version, from the contacts' rows read here. One statement for the run:
-- each list's count moves once by the run's sum (a list-add into one list from many clients
-- updated its row once per list-add, under the events table's lock), and each contact's row
-- is updated once, to its last event's time and version, its new lists in the order its
-- events named them. The events of a run change no contact's state, tags or creation time,
-- so reading each row once gives what reading it before each event would.
DROP FUNCTION IF EXISTS public.project_contact_added_to_lists(uuid, uuid, uuid[], timestamptz, integer);
CREATE OR REPLACE FUNCTION public.project_contacts_added_to_lists(
    p_ids uuid[], p_accounts uuid[], p_lists jsonb[], p_ts timestamptz[], p_versions integer[]) RETURNS void
LANGUAGE sql AS $$
    -- Every look-up below is by a key, one row at a time (LATERAL ... OFFSET 0, = ANY): planned
    -- from the arrays' unknown lengths (a hundred rows for each set-returning call, so ten
    -- thousand), plain joins scanned the whole contacts table by hash, 7 ms a group of ten.
    WITH asked AS (  -- one row per event and list it names (a row with no list for an event naming none)
        SELECT e.n, e.id AS contact_id, e.account AS account_id, e.ts, e.version, l.id::uuid AS list_id, l.k
        FROM unnest(p_ids, p_accounts, p_lists, p_ts, p_versions) WITH ORDINALITY AS e(id, account, lists, ts, version, n)
        LEFT JOIN LATERAL jsonb_array_elements_text(e.lists) WITH ORDINALITY AS l(id, k) ON true
    ), added AS (
        INSERT INTO contact_list_memberships (list_id, contact_id, account_id, added_at, contact_created_at,
                                              contact_active, contact_opted_out, contact_tags)
        SELECT a.list_id, a.contact_id, a.account_id, a.ts, c.created_at, c.deleted_at IS NULL, c.is_opted_out, c.tags
        FROM asked a
        CROSS JOIN LATERAL (SELECT created_at, deleted_at, is_opted_out, tags FROM contacts
                            WHERE id = a.contact_id OFFSET 0) c
        CROSS JOIN LATERAL (SELECT 1 FROM contact_lists WHERE id = a.list_id AND account_id = a.account_id
                            OFFSET 0) l
        ORDER BY a.n, a.k
        ON CONFLICT DO NOTHING RETURNING list_id, contact_id, contact_active, contact_opted_out
    ), counted AS (
        UPDATE contact_lists l
        SET contact_count = l.contact_count + (SELECT count(*) FROM added d WHERE d.list_id = l.id AND d.contact_active),
            opted_out_count = l.opted_out_count + (SELECT count(*) FROM added d WHERE d.list_id = l.id
                                                   AND d.contact_active AND d.contact_opted_out)
        WHERE l.id = ANY(ARRAY(SELECT list_id FROM added WHERE contact_active))
    ), firsts AS (  -- where each new membership was first asked for: listIds in the events' order
        SELECT DISTINCT ON (a.contact_id, a.list_id) a.contact_id, a.list_id, a.n, a.k
        FROM asked a JOIN added d ON d.contact_id = a.contact_id AND d.list_id = a.list_id
        ORDER BY a.contact_id, a.list_id, a.n, a.k
    )
    UPDATE contacts c SET list_ids = c.list_ids || coalesce(
            (SELECT array_agg(f.list_id ORDER BY f.n, f.k) FROM firsts f WHERE f.contact_id = c.id), '{}'),
        updated_at = (SELECT a.ts FROM asked a WHERE a.contact_id = c.id ORDER BY a.n DESC LIMIT 1),
        version = (SELECT a.version FROM asked a WHERE a.contact_id = c.id ORDER BY a.n DESC LIMIT 1)
    WHERE c.id = ANY(p_ids)
$$;

-- The projection of contact.removed-from-lists: the memberships it had among p_lists go,
-- with their lists' counts if the contact is active, and its listIds keep their order;
-- one statement, from the contact's row read here.
CREATE OR REPLACE FUNCTION public.project_contact_removed_from_lists(p_id uuid, p_account uuid, p_lists uuid[],
                                                                    p_ts timestamptz, p_version integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    deleted timestamptz;
    opted boolean;
    removed uuid[];
BEGIN
    SELECT c.deleted_at, c.is_opted_out INTO deleted, opted FROM contacts c WHERE c.id = p_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    WITH gone AS (DELETE FROM contact_list_memberships WHERE contact_id = p_id AND list_id = ANY(p_lists)
                  RETURNING list_id)
    SELECT coalesce(array_agg(list_id), '{}') INTO removed FROM gone;
    IF cardinality(removed) > 0 AND deleted IS NULL THEN
        UPDATE contact_lists SET contact_count = contact_count - 1, opted_out_count = opted_out_count - opted::int
        WHERE id = ANY(removed);
    END IF;
    -- The remaining lists keep their order (EXCEPT, a set operation, gave them in any order).
    UPDATE contacts SET list_ids = ARRAY(SELECT id FROM unnest(list_ids) WITH ORDINALITY AS kept (id, n)
                                         WHERE id <> ALL(removed) ORDER BY n),
        updated_at = p_ts, version = p_version
    WHERE id = p_id;
END $$;

-- The projection of contact.opted-out (p_opted) and contact.opted-in: if that changes the
-- contact, its memberships' flag, and if it is active, the opted-out counts of its account,
-- its tags, their time counts and its lists; then its row. One statement, from its row.
CREATE OR REPLACE FUNCTION public.project_contact_opted(p_id uuid, p_account uuid, p_opted boolean,
                                                        p_ts timestamptz, p_version integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    was boolean;
    deleted timestamptz;
    created timestamptz;
    tags text[];
    lists uuid[];
    delta integer := CASE WHEN p_opted THEN 1 ELSE -1 END;
BEGIN
    SELECT c.is_opted_out, c.deleted_at, c.created_at, c.tags, c.list_ids INTO was, deleted, created, tags, lists
    FROM contacts c WHERE c.id = p_id;
    IF FOUND AND was <> p_opted THEN
        UPDATE contact_list_memberships SET contact_opted_out = p_opted WHERE contact_id = p_id;
        IF deleted IS NULL THEN
            INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (p_account, 0, delta)
            ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active + EXCLUDED.active,
                opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out;
            -- Every contact ('') and each of its tags, in its hour, second (and millisecond).
            INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
            SELECT p_account, t, u, date_trunc(u, created, 'UTC'), 0, delta
            FROM unnest(array_prepend('', tags)) AS t, unnest(time_units(p_account, created)) AS u
            ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE
                SET active = contact_time_counts.active + EXCLUDED.active,
                    opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out;
            INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)
            SELECT p_account, t, 0, delta FROM unnest(tags) AS t
            ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = contact_tags.contact_count
                + EXCLUDED.contact_count, opted_out_count = contact_tags.opted_out_count + EXCLUDED.opted_out_count;
            IF cardinality(lists) > 0 THEN
                UPDATE contact_lists SET opted_out_count = opted_out_count + delta WHERE id = ANY(lists);
            END IF;
        END IF;
    END IF;
    UPDATE contacts SET is_opted_out = p_opted, updated_at = p_ts, version = p_version WHERE id = p_id;
END $$;

"""Row-level security: a read that forgets its account filter still sees only its own account."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from query.tenancy import READER_ROLE, tenant_transaction
from tests.support import Service


def test_a_read_without_its_account_filter_sees_only_the_tenants_rows(service: Service) -> None:
    mine, theirs = service.client(), service.client()
    my_list = mine.create_list("mine")
    mine.create_contact("0712000001", tags=["rls-mine"], listIds=[my_list["id"]])
    their_list = theirs.create_list("theirs")
    their_contact = theirs.create_contact("0712000002", tags=["rls-theirs"], listIds=[their_list["id"]])
    pool = service.container.pool
    # The service's own role (the projector's and writers') sees both accounts: it owns the tables.
    with pool.connection() as conn:
        accounts = {r[0] for r in conn.execute("SELECT account_id FROM contacts")}
    assert {mine.account_id, theirs.account_id} <= accounts
    unfiltered = {  # the read queries' tables, each read with its account filter removed
        "contacts": "SELECT account_id FROM contacts",
        "contact_list_memberships": "SELECT account_id FROM contact_list_memberships",
        "contact_lists": "SELECT account_id FROM contact_lists",
        "contact_tags": "SELECT account_id FROM contact_tags",
        "account_contact_counts": "SELECT account_id FROM account_contact_counts",
        "contact_time_counts": "SELECT account_id FROM contact_time_counts",
    }
    with tenant_transaction(pool, mine.account_id) as conn:
        for table, query in unfiltered.items():
            seen = {r[0] for r in conn.execute(query)}
            assert seen == {mine.account_id}, (table, seen)
        # The very query GET /contacts/:id runs, without its account condition.
        assert conn.execute("SELECT count(*) FROM contacts c WHERE c.id = %s",
                            (uuid.UUID(their_contact["id"]),)).fetchone()[0] == 0
        assert conn.execute("SELECT current_user").fetchone()[0] == READER_ROLE
    # With no account set, the reader sees nothing at all; it cannot write either.
    with pool.connection() as conn, conn.transaction():
        conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM contacts")
    with pool.connection() as conn:
        bypass, superuser = conn.execute("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = %s",
                                         (READER_ROLE,)).fetchone()
        assert (bypass, superuser) == (False, False)
        # Searches and tag filters keep their indexes under RLS only with these marked (service/embedded.py).
        assert conn.execute("SELECT bool_and(proleakproof) FROM pg_proc WHERE proname IN ('textlike', 'arraycontains')"
                            " AND pronamespace = 'pg_catalog'::regnamespace").fetchone()[0] is True
        assert conn.execute("SELECT current_user").fetchone()[0] != READER_ROLE  # LOCAL: back to the owner
    # The API itself still answers each account with its own data.
    assert [c["tags"] for c in mine.get("/api/v1/contacts").json()["contacts"]] == [["rls-mine"]]
    assert mine.get("/api/v1/contacts/tags").json() == ["rls-mine"]
    assert mine.get(f"/api/v1/contacts/{their_contact['id']}").status_code == 404
    assert [x["name"] for x in mine.get("/api/v1/contact-lists").json()] == ["mine"]


def test_starting_a_process_again_takes_no_exclusive_lock_on_the_read_tables(service: Service) -> None:
    """The schema runs at every start: once RLS is set up it must not ALTER the tables again.

    It did (ACCESS EXCLUSIVE on each read table), and a worker restarted under a write
    load deadlocked with the writers and died at start (tests/e2e/test_nats_cluster.py).
    """
    from projections.read_model import READ_TABLES, create_tables

    with psycopg.connect(service.container.database_url) as conn:  # one transaction: its locks stay to be seen
        create_tables(conn)
        exclusive = conn.execute(
            "SELECT relation::regclass::text FROM pg_locks WHERE pid = pg_backend_pid()"
            " AND mode = 'AccessExclusiveLock' AND relation::regclass::text = ANY(%s)", (list(READ_TABLES),)).fetchall()
        conn.rollback()
    assert exclusive == []

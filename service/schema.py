"""Every table of the service, created from one place, once per version of the DDL.

The event store's table comes from eventsourcing; the write side's tables and
functions from ``command/schema.sql``; the read tables from ``projections/schema.sql``.
A process that starts finds the fingerprint of these files in ``schema_version`` and
runs no DDL when it matches: DDL on every start took locks on tables that live
writes were using, and a second ``contacts api`` starting under load deadlocked
with them.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import psycopg

from command import operator_prefixes

FILES = (("command", "schema.sql"), ("projections", "schema.sql"))


def _ddl() -> list[str]:
    return [resources.files(package).joinpath(name).read_text() for package, name in FILES]


def fingerprint() -> str:
    digest = hashlib.sha256()
    for text in _ddl():
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def ensure_schema(conn: psycopg.Connection[Any], recorder: Any) -> None:
    """Create or bring up to date every table if this version of the DDL has not yet (call it holding
    the advisory lock ``locks.SCHEMA``, so that one process at a time does)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (name text PRIMARY KEY, fingerprint text NOT NULL,"
                 " updated_at timestamptz NOT NULL DEFAULT now())")
    current = fingerprint()
    row = conn.execute("SELECT fingerprint FROM schema_version WHERE name = 'contacts'").fetchone()
    if row is None or row[0] != current:
        recorder.create_table()  # the events table (eventsourcing's DDL)
        with conn.transaction():
            for text in _ddl():
                conn.execute(text)
            conn.execute("INSERT INTO schema_version (name, fingerprint) VALUES ('contacts', %s) ON CONFLICT"
                         " (name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, updated_at = now()", (current,))
    operator_prefixes.ensure(conn)

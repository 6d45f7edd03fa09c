"""The ``mno_prefixes`` table: the operator directory the write side classifies numbers with."""

from __future__ import annotations

from typing import Any

import phonenumbers
from psycopg import Connection

from command.phones import OperatorDirectory, african_prefixes

DDL = """
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
"""


def source_label() -> str:
    return f"phonenumbers {phonenumbers.__version__}"


def refresh(conn: Connection[Any]) -> int:
    """Replace the directory with the carrier metadata of the installed phonenumbers."""
    rows = african_prefixes()
    with conn.transaction():
        conn.execute("DELETE FROM mno_prefixes")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO mno_prefixes (country, prefix, operator) VALUES (%s, %s, %s)", rows)
        conn.execute("INSERT INTO mno_prefixes_source (id, source) VALUES (1, %s) ON CONFLICT (id)"
                     " DO UPDATE SET source = EXCLUDED.source, loaded_at = now()", (source_label(),))
    return len(rows)


def ensure(conn: Connection[Any]) -> None:
    """Create the table and seed it on first start."""
    conn.execute(DDL)
    if conn.execute("SELECT 1 FROM mno_prefixes_source").fetchone() is None:
        refresh(conn)


def load(conn: Connection[Any]) -> OperatorDirectory:
    rows = conn.execute("SELECT country, prefix, operator FROM mno_prefixes").fetchall()
    return OperatorDirectory([tuple(r) for r in rows])

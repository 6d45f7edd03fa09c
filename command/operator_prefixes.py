"""The ``mno_prefixes`` table: the operator directory the write side classifies numbers with."""

from __future__ import annotations

from typing import Any

import phonenumbers
from psycopg import Connection

from command.phones import OperatorDirectory, african_prefixes



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


def installed(conn: Connection[Any]) -> bool:
    """Whether the directory's tables exist (the schema is created by the service's first start)."""
    return conn.execute("SELECT to_regclass('mno_prefixes_source') IS NOT NULL").fetchone()[0]


def ensure(conn: Connection[Any]) -> None:
    """Seed the directory on first start (its tables are in command/schema.sql)."""
    if conn.execute("SELECT 1 FROM mno_prefixes_source").fetchone() is None:
        refresh(conn)


def load(conn: Connection[Any]) -> OperatorDirectory:
    rows = conn.execute("SELECT country, prefix, operator FROM mno_prefixes").fetchall()
    return OperatorDirectory([tuple(r) for r in rows])

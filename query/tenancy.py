"""Read transactions as the tenant: role ``contacts_reader`` and ``app.account_id`` set for the transaction.

Row-level security on the read tables (projections/schema.sql) lets that role see one
account's rows, the one set here; the queries keep their own account filters, so this
is a second wall, not the first. Both settings are ``LOCAL``: they end with the
transaction, so a pooled connection goes back to the pool as the service's own role,
and the writers that share the pool are not affected. The setup travels with the
transaction's BEGIN in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

READER_ROLE = "contacts_reader"
READ_ONLY = "BEGIN READ ONLY"
SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"  # one snapshot for several statements


def _setup(account_id: UUID) -> sql.Composed:
    return sql.SQL("SET LOCAL ROLE {}; SELECT set_config('app.account_id', {}, true)").format(
        sql.Identifier(READER_ROLE), sql.Literal(str(account_id)))


def as_tenant(conn: psycopg.Connection[Any], account_id: UUID) -> None:
    """Inside an open transaction: read as the account's tenant from here to its end."""
    conn.execute(_setup(account_id))


@contextmanager
def tenant_transaction(pool: ConnectionPool, account_id: UUID, begin: str = READ_ONLY) -> Iterator[Any]:
    """A pooled connection in a read-only transaction that sees ``account_id``'s rows only."""
    with pool.connection() as conn:
        # No parameters: sent as one simple query, BEGIN and the setup in one round trip.
        conn.execute(sql.SQL("{}; ").format(sql.SQL(begin)) + _setup(account_id))
        try:
            yield conn
        except BaseException:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

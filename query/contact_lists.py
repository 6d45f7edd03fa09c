"""Queries over the ``contact_lists`` read table."""

from __future__ import annotations

from uuid import UUID

from psycopg_pool import ConnectionPool

from query.models import ContactListOut
from query.tenancy import tenant_transaction

_COLUMNS = "id, name, description, contact_count, created_at, updated_at"


def _row(row: tuple) -> ContactListOut:
    return ContactListOut(id=row[0], name=row[1], description=row[2], contact_count=row[3],
                          created_at=row[4], updated_at=row[5])


def list_contact_lists(pool: ConnectionPool, account_id: UUID) -> list[ContactListOut]:
    """Every list of the account, oldest first."""
    with tenant_transaction(pool, account_id) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM contact_lists WHERE account_id = %s"
                            " ORDER BY created_at, id", (account_id,)).fetchall()
    return [_row(r) for r in rows]


def get_contact_list(pool: ConnectionPool, account_id: UUID, list_id: UUID) -> ContactListOut | None:
    with tenant_transaction(pool, account_id) as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM contact_lists WHERE account_id = %s AND id = %s",
                           (account_id, list_id)).fetchone()
    return _row(row) if row else None


def get_contact_list_versioned(pool: ConnectionPool, account_id: UUID,
                               list_id: UUID) -> tuple[ContactListOut, int] | None:
    """A list and its aggregate version (its ETag), read together."""
    with tenant_transaction(pool, account_id) as conn:
        row = conn.execute(f"SELECT {_COLUMNS}, version FROM contact_lists WHERE account_id = %s AND id = %s",
                           (account_id, list_id)).fetchone()
    return (_row(row[:-1]), row[-1]) if row else None

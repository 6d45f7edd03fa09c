"""The contacts a select-all bulk action applies to: the ids matching a filter when the request arrives."""

from __future__ import annotations

from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from query.contacts import ContactFilter
from query.tenancy import tenant_transaction


def matching_ids(pool: ConnectionPool, account_id: UUID, flt: ContactFilter, limit: int) -> list[UUID] | None:
    """The ids of the active contacts matching ``flt``, newest first; None when more than ``limit`` match."""
    where, params = flt.where(account_id)
    with tenant_transaction(pool, account_id) as conn:
        rows = conn.execute(sql.SQL("SELECT c.id FROM contacts c WHERE {} ORDER BY c.created_at DESC, c.id DESC"
                                    " LIMIT %(limit)s").format(where), {**params, "limit": limit + 1}).fetchall()
    return [r[0] for r in rows] if len(rows) <= limit else None

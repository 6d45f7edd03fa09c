"""Retention: contacts trashed longer than CONTACTS_TRASH_RETENTION_DAYS are purged by "system"."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from command.context import Actor
from service import logs
from service.bootstrap import Container

log = logging.getLogger(__name__)
BATCH = 500


def purge_expired(container: Container, now: datetime) -> int:
    """Purge every contact trashed before ``now - retention``, through the Purge command."""
    cutoff = now - timedelta(days=container.settings.trash_retention_days)
    total = 0
    while True:
        with container.pool.connection() as conn:
            rows = conn.execute("SELECT account_id, id FROM contacts WHERE deleted_at IS NOT NULL"
                                " AND deleted_at < %s ORDER BY account_id LIMIT %s", (cutoff, BATCH)).fetchall()
        if not rows:
            return total
        by_account: dict[UUID, list[UUID]] = {}
        for account_id, contact_id in rows:
            by_account.setdefault(account_id, []).append(contact_id)
        for account_id, ids in by_account.items():
            actor = Actor.system(account_id, request_id=f"retention:{now.date().isoformat()}")
            with logs.bound(request_id=actor.request_id, account_id=account_id, actor=actor.sub):
                total += container.app.purge(actor, ids)
        log.info("retention: purged %d contacts trashed before %s", total, cutoff.isoformat())

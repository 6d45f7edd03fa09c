"""Select-all bulk actions too large for one request, run as jobs on the import queue.

A job is a ``BulkAction`` aggregate plus a row of ``import_queue`` (format ``bulk``)
whose "upload" is the snapshot of the matched ids (16 bytes each, in
``import_upload_chunks``), taken when the request arrived. The worker claims it as it
claims imports (advisory lock, resumed after a crash) and runs it in steps of
``STEP`` contacts: each step's contact events and the job's ``Progressed`` commit in
one transaction, so the counts are exact and a resumed job carries on after the last
step. Its ``Completed`` (or ``Failed``) event reaches NATS like every event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from psycopg import sql

from command.context import Actor
from command.errors import DomainError
from query.contacts import ContactFilter
from service.bootstrap import Container

log = logging.getLogger(__name__)
BULK_FORMAT = "bulk"
#: Contacts per step: each changes one event, so a step (plus the job's event) stays in one
#: save chunk (command/application.py SAVE_CHUNK = 500), one transaction.
STEP = 400
#: Ids per stored chunk of the snapshot (800 kB).
SNAPSHOT_CHUNK = 50_000


def enqueue(container: Container, actor: Actor, job_id: UUID, flt: ContactFilter) -> int:
    """Store the ids matching ``flt`` now and queue the job (one transaction); return how many matched."""
    where, params = flt.where(actor.account_id)
    with container.pool.connection() as conn, conn.transaction():
        # Written by PostgreSQL from the query itself: a million ids never pass through Python.
        conn.execute(sql.SQL(
            "INSERT INTO import_upload_chunks (import_id, seq, data)"
            " SELECT %(job)s, n / %(chunk)s, string_agg(uuid_send(id), ''::bytea ORDER BY n)"
            " FROM (SELECT c.id, row_number() OVER (ORDER BY c.created_at DESC, c.id DESC) - 1 AS n"
            " FROM contacts c WHERE {}) matches GROUP BY n / %(chunk)s").format(where),
            {**params, "job": job_id, "chunk": SNAPSHOT_CHUNK})
        matched = conn.execute("SELECT coalesce(sum(length(data)), 0) / 16 FROM import_upload_chunks"
                               " WHERE import_id = %s", (job_id,)).fetchone()[0]
        conn.execute("INSERT INTO import_queue (import_id, account_id, actor, request_id, format)"
                     " VALUES (%s, %s, %s, %s, %s)",
                     (job_id, actor.account_id, actor.sub, actor.request_id, BULK_FORMAT))
    return int(matched)


def wake_workers(container: Container) -> None:
    """Tell the workers' job slots a job is queued (once its ``Started`` is stored)."""
    from service.import_jobs import queue_channel

    with container.pool.connection() as conn:
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(queue_channel(container))))


def discard(container: Container, job_id: UUID) -> None:
    """Drop a job's queue row and snapshot."""
    with container.pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM import_upload_chunks WHERE import_id = %s", (job_id,))
        conn.execute("DELETE FROM import_queue WHERE import_id = %s", (job_id,))


def run(container: Container, claimed: dict[str, Any]) -> None:
    """Run (or resume) one claimed bulk job to its end; its snapshot is deleted when it ends."""
    job_id = claimed["import_id"]
    actor = Actor(account_id=claimed["account_id"], sub=claimed["actor"], request_id=claimed["request_id"])
    app = container.app
    job = app.repository.get(job_id)  # not stored yet (queued a moment ago): raises, and is claimed again
    if not job.finished:
        try:
            for ids in _steps(container, job_id, skip=job.processed):
                app.bulk_step(actor, job_id, ids)
            app.end_bulk(actor, job_id)
        except DomainError as exc:  # the list was deleted meanwhile, say: the job says why it stopped
            log.warning("bulk action %s failed: %s", job_id, exc.message)
            app.end_bulk(actor, job_id, failure=exc.message)
    discard(container, job_id)


def _steps(container: Container, job_id: UUID, skip: int) -> Iterator[list[UUID]]:
    """The snapshot's ids after the first ``skip``, ``STEP`` at a time, read a chunk at a time."""
    step: list[UUID] = []
    seen = 0
    with container.pool.connection() as conn, conn.transaction(), conn.cursor(name="bulk_snapshot") as cur:
        cur.itersize = 1
        cur.execute("SELECT data FROM import_upload_chunks WHERE import_id = %s ORDER BY seq", (job_id,))
        for (data,) in cur:
            data = bytes(data)
            for at in range(0, len(data), 16):
                seen += 1
                if seen <= skip:
                    continue
                step.append(UUID(bytes=data[at:at + 16]))
                if len(step) == STEP:
                    yield step
                    step = []
    if step:
        yield step

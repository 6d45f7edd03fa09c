"""Who runs an import job: the session advisory lock that leases a job to one process at a time.

A request running a synchronous import holds its job's lock on a connection of the lease
pool (``job_lease``); a worker holds a queued job's on a connection of its own
(``claim_next``). A process that dies closes its connection, and PostgreSQL releases the
lock at once: a retry with the job's key (or the next worker) takes it and resumes the
job after its last stored row. No timing decides who runs a job, so a slow batch can
never make two processes run one. The worker also marks failed the synchronous imports
whose process died with no key to resume them (``fail_abandoned``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg

from command.context import Actor
from command.imports.service import INTERRUPTED, ImportService
from service import locks
from service.bootstrap import Container

log = logging.getLogger(__name__)


@contextmanager
def job_lease(container: Container) -> Iterator[Callable[[UUID], bool]]:
    """A hold on import jobs for as long as this request runs one: the job's advisory lock, as a worker holds
    its queued job's, on a connection of the lease pool (``held_jobs``; its process dying closes it and frees the job).

    Gives ``take(job_id)``: True once held, False if a live process holds the job or it is
    queued (a queued job is the workers': one of them resumes it if its worker dies).
    """
    with held_jobs(container) as conn:
        yield lambda job_id: take_job(conn, job_id)


@contextmanager
def held_jobs(container: Container) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the lease pool, to hold jobs' advisory locks on; given back holding none.

    A lock left on a pooled connection would hold its job for as long as the connection
    lives: a keyed retry would answer 409 for good. So every lock is released on the way
    out, and a connection that cannot say so is closed (the pool then replaces it).
    """
    with container.leases.connection() as conn:
        try:
            yield conn
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                conn.close()


# Queued jobs whose advisory lock no session holds (pg_locks shows a two-key advisory
# lock as classid = first key, objid = second key, objsubid = 2).
UNHELD_JOBS = """
    SELECT q.import_id FROM import_queue q
    WHERE NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND l.classid = %s::oid AND l.objid = hashtext(q.import_id::text)::oid)
    ORDER BY q.created_at"""


def own_connection(container: Container) -> psycopg.Connection[Any]:
    """A connection outside the pools, for a queued job's lease: the worker running the job closes it at the end.

    It gives up connecting after ``db_timeout_s``, as the pools do: unbounded, a database
    that drops packets held the caller for minutes.
    """
    return psycopg.connect(container.database_url, autocommit=True, connect_timeout=container.settings.db_timeout_s)


def take_job(conn: psycopg.Connection[Any], import_id: UUID) -> bool:
    """Hold a job that is not queued (a queued job is the workers') and that no live process holds, on ``conn``."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM import_queue WHERE import_id = %s)", (import_id,)).fetchone()[0]:
        return False
    return lock_job(conn, import_id)


def lock_job(conn: psycopg.Connection[Any], import_id: UUID) -> bool:
    """Take the job's session advisory lock on ``conn`` if no other session holds it (``UNHELD_JOBS``'s key)."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                             (locks.IMPORT_JOB, str(import_id))).fetchone()[0])


def unlock_job(conn: psycopg.Connection[Any], import_id: UUID) -> None:
    """Release the job's advisory lock taken on ``conn`` by ``lock_job``."""
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (locks.IMPORT_JOB, str(import_id)))


def claim_next(container: Container) -> dict[str, Any] | None:
    """Take the oldest job no live worker holds; the answer keeps its lock's connection open."""
    # The worker asks on every wake-up (every stored event): a pooled query answers "none"
    # without opening a connection; the lease connection is opened only for a candidate.
    with container.pool.connection() as conn:
        candidates = [row[0] for row in conn.execute(UNHELD_JOBS, (locks.IMPORT_JOB,))]
    if not candidates:
        return None
    conn = own_connection(container)
    try:
        for import_id in candidates:
            if not lock_job(conn, import_id):
                continue  # another worker took it meanwhile
            row = conn.execute(  # still queued? (it may have finished between the two statements)
                "UPDATE import_queue SET status = 'running', heartbeat_at = now() WHERE import_id = %s"
                " RETURNING import_id, account_id, actor, request_id, format, mapping, region",
                (import_id,)).fetchone()
            if row is not None:
                keys = ("import_id", "account_id", "actor", "request_id", "format", "mapping", "region")
                return {**dict(zip(keys, row)), "lease": conn}
            unlock_job(conn, import_id)
    except BaseException:
        conn.close()
        raise
    conn.close()
    return None


# Synchronous imports left running that no process holds and no retry can resume: not
# queued, sent without an Idempotency-Key, no batch stored for ``%s`` seconds (a running
# import stores one every second or so; the wait also spares a job run by an API process
# of a version that held no lease on unkeyed jobs, during a rolling upgrade).
ABANDONED_JOBS = """
    SELECT i.id, i.account_id FROM imports i
    WHERE i.status = 'running' AND i.updated_at < now() - make_interval(secs => %s)
      AND NOT EXISTS (SELECT 1 FROM import_queue q WHERE q.import_id = i.id)
      AND NOT EXISTS (SELECT 1 FROM import_idempotency k WHERE k.account_id = i.account_id AND k.import_id = i.id)
    ORDER BY i.updated_at"""
ABANDONED_AFTER_S = 120.0
ABANDONED_REASON = (f"{INTERRUPTED}: the process running the import stopped part-way; what it stored stays."
                    " Send the file again to import the rest: numbers already imported are skipped (already_exists)")


def fail_abandoned(container: Container, older_than_s: float = ABANDONED_AFTER_S) -> list[UUID]:
    """Mark failed every synchronous import whose process died mid-import with no key to resume it; their ids.

    A job whose lease (its advisory lock) a live process holds is running, and is left alone.
    """
    with container.pool.connection() as conn:
        candidates = conn.execute(ABANDONED_JOBS, (older_than_s,)).fetchall()
    if not candidates:
        return []
    failed = []
    service = ImportService(container.app)
    with held_jobs(container) as conn:
        for import_id, account_id in candidates:
            if not lock_job(conn, import_id):
                continue  # a live process runs it
            try:
                actor = Actor.system(account_id, request_id=f"abandoned-import:{import_id}")
                if service.fail_interrupted(actor, import_id, ABANDONED_REASON) is not None:
                    failed.append(import_id)
                    log.warning("import %s was abandoned mid-import by its process: marked failed", import_id)
            finally:
                unlock_job(conn, import_id)
    return failed

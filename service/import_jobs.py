"""Import jobs: run one at once (the API's synchronous imports), or queue it in PostgreSQL for the worker.

A queued job (``Prefer: respond-async``) has its header checked at once; then its upload
is stored in PostgreSQL (chunks of ``import_upload_chunks``) so any worker can run it;
it is deleted when the job ends. Whoever runs a job, a request or a worker, holds its
lease (``service/job_leases.py``): a process that dies frees it, and the next one to
take it resumes the job after the last row it stored.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg import sql

from command.context import Actor
from command.domain import ContactImport
from command.errors import NotFoundError
from command.imports.formats import detect_format
from command.imports.limits import FileLimits
from command.imports.rows import ImportRow, open_rows
from command.imports.service import (
    ImportFailedError, ImportInProgressError, ImportInterruptedError, ImportOutcome, ImportService,
    failure_reason,
)
from query import imports as import_queries
from query.imports import ImportJob
from service import logs
from service import bulk_jobs
from service.bootstrap import Container
from service.dbpool import check_after_outage
from service.job_leases import held_jobs, job_lease, take_job
from service.request_hashes import file_hash, json_hash
from service.settings import Settings

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
RESUME_AFTER_S = 5.0  # a queued job (import or bulk action) that stopped on an error is claimed again after this


def file_limits(settings: Settings) -> FileLimits:
    """The import file limits chosen by the settings (the others keep their defaults)."""
    return FileLimits(max_record_chars=settings.import_max_record_chars, max_columns=settings.import_max_columns,
                      max_uncompressed_bytes=settings.import_xlsx_max_uncompressed_bytes,
                      xlsx_fast_max_cells=settings.import_xlsx_fast_max_cells)


def run_import(container: Container, actor: Actor, rows: Iterator[ImportRow], *, source: str,
               filename: str | None, list_id: UUID | None, idempotency_key: str | None,
               region: str | None, request_hash: bytes | None = None) -> ImportOutcome:
    """Start (or replay, or resume) an import and run it; each batch commits with its read-table rows.

    The run holds the job's lease (``job_lease``) from before the job is stored to its end.
    With an Idempotency-Key, a retry meanwhile answers 409 import_in_progress, and a retry
    after this process died or the database failed mid-import finds the lease free and
    resumes the job after its last stored row. A job without a key has no retry to resume
    it: a fault marks it failed here, or, if this process died, the worker's sweep of
    abandoned jobs does (``job_leases.fail_abandoned``).
    """
    service = ImportService(container.app)
    with job_lease(container) as lease:
        job, replay = service.start(actor, source=source, filename=filename, list_id=list_id,
                                    idempotency_key=idempotency_key, request_hash=request_hash, lease=lease)
        if replay is not None:
            return replay
        try:
            return service.run(actor, job, rows, region=region)
        except ImportInterruptedError as interrupted:
            if idempotency_key:
                raise
            # The pools' connections the fault broke are replaced first (for as long as a checkout may wait).
            check_after_outage.mark(wait_s=container.settings.db_timeout_s)
            raise service.give_up(actor, interrupted) from interrupted.cause


def upload_format(upload: Any) -> str:
    """The uploaded file's format (csv or xlsx), read from its first bytes and name; the file takes its suffix."""
    fmt = detect_format(upload.head, upload.filename)
    upload.path = upload.path.rename(upload.path.with_suffix(f".{fmt}"))  # openpyxl reads the suffix
    return fmt


def import_file(container: Container, actor: Actor, upload: Any, fmt: str, list_id: UUID | None,
                mapping: dict[str, str | None] | None, region: str | None,
                idempotency_key: str | None) -> ImportOutcome:
    """Import an uploaded file now: the answer waits for the end (or replays the first one for its key)."""
    _, rows = open_rows(upload.path, fmt, mapping, limits=file_limits(container.settings))
    try:
        return run_import(container, actor, rows, source=fmt, filename=upload.filename, list_id=list_id,
                          idempotency_key=idempotency_key, region=region,
                          request_hash=file_hash(upload, list_id, mapping, region) if idempotency_key else None)
    finally:
        rows.close()


def import_json(container: Container, actor: Actor, rows: Iterator[ImportRow], content: Any, *,
                list_id: UUID | None, region: str | None, idempotency_key: str | None) -> ImportOutcome:
    """Import contacts sent as JSON (``content``, the decoded body, is what an Idempotency-Key stands for)."""
    return run_import(container, actor, rows, source="json", filename=None, list_id=list_id,
                      idempotency_key=idempotency_key, region=region,
                      request_hash=json_hash(content) if idempotency_key else None)


def get_job(container: Container, actor: Actor, import_id: UUID) -> ImportJob:
    """The job resource (404 for an unknown id or another account's)."""
    job = import_queries.get_import(container.pool, actor.account_id, import_id)
    if job is None:
        raise NotFoundError(f"import {import_id} not found", field="id")
    return job


def queue_import(container: Container, actor: Actor, upload: Any, fmt: str, list_id: UUID | None,
                 mapping: dict[str, str | None] | None, region: str | None, idempotency_key: str | None) -> ImportJob:
    """Check the header now (a bad file is a 422 at once), then queue the job for the worker."""
    _, rows = open_rows(upload.path, fmt, mapping, limits=file_limits(container.settings))
    rows.close()
    service = ImportService(container.app)
    try:
        job, replay = service.start(actor, source=fmt, filename=upload.filename, list_id=list_id,
                                    idempotency_key=idempotency_key,
                                    request_hash=file_hash(upload, list_id, mapping, region) if idempotency_key else None)
    except ImportInProgressError as running:
        return _queue_abandoned(container, actor, running, upload.path, fmt, mapping, region)
    if replay is None:
        enqueue(container, actor, job, upload.path, fmt, mapping, region)
    return get_job(container, actor, job.id)


def _queue_abandoned(container: Container, actor: Actor, running: ImportInProgressError, path: Path, fmt: str,
                     mapping: dict[str, str | None] | None, region: str | None) -> ImportJob:
    """An asynchronous retry of a keyed import left running: queued for a worker to resume if its process died.

    409 as before while a live process runs it, or while it is queued already.
    """
    import_id = UUID(running.extra["importId"])
    with held_jobs(container) as conn:
        if not take_job(conn, import_id):
            raise running
        job = container.app.repository.get(import_id)
        if job.status == "running":  # else it ended meanwhile: its result is the answer
            enqueue(container, actor, job, path, fmt, mapping, region)
    return get_job(container, actor, import_id)  # the lease went with the connection: a worker claims the job


def import_report(container: Container, actor: Actor, import_id: UUID) -> Iterator[bytes]:
    """The import's row-by-row report as CSV lines (404 at once for an unknown id or another account's)."""
    if not import_queries.import_exists(container.pool, actor.account_id, import_id):
        raise NotFoundError(f"import {import_id} not found", field="id")
    return import_queries.report_lines(container.pool, actor.account_id, import_id)


def enqueue(container: Container, actor: Actor, job: ContactImport, path: Path, fmt: str,
            mapping: dict[str, str | None] | None, region: str | None) -> None:
    """Store the upload and queue the job (one transaction)."""
    with container.pool.connection() as conn, conn.transaction():
        with path.open("rb") as source, conn.cursor() as cur:
            seq = 0
            while chunk := source.read(CHUNK):
                cur.execute("INSERT INTO import_upload_chunks (import_id, seq, data) VALUES (%s, %s, %s)",
                            (job.id, seq, chunk))
                seq += 1
        conn.execute("INSERT INTO import_queue (import_id, account_id, actor, request_id, format, mapping, region)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (job.id, actor.account_id, actor.sub, actor.request_id, fmt,
                      json.dumps(mapping) if mapping else None, region))
        # Wake the workers' import slots now (delivered when this transaction commits).
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(queue_channel(container))))


def queue_channel(container: Container) -> str:
    """The LISTEN/NOTIFY channel announcing queued import jobs (beside the event store's own)."""
    return f"{container.app.recorder.channel_name}_imports"


def _heartbeat(container: Container, import_id: UUID) -> None:
    """Progress time, for operators (the lease is the advisory lock, not this)."""
    with container.pool.connection() as conn:
        conn.execute("UPDATE import_queue SET heartbeat_at = now() WHERE import_id = %s", (import_id,))


def _finish(container: Container, import_id: UUID) -> None:
    with container.pool.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM import_upload_chunks WHERE import_id = %s", (import_id,))
        conn.execute("DELETE FROM import_queue WHERE import_id = %s", (import_id,))


def run_job(container: Container, claimed: dict[str, Any]) -> None:
    """Run (or resume) one queued import to its end; the upload is deleted either way."""
    try:
        with logs.bound(request_id=claimed["request_id"], account_id=claimed["account_id"], actor=claimed["actor"]):
            _run_job(container, claimed)
    except Exception:  # noqa: BLE001 - the lock is released below; another round resumes the job
        log.exception("import %s stopped; it will be resumed in %.0f s", claimed["import_id"], RESUME_AFTER_S)
        # Not at once: the slot that freed would claim the job again at once and, while the
        # database stays away or full, fail it again in a loop.
        time.sleep(RESUME_AFTER_S)
    finally:
        claimed["lease"].close()


def _run_job(container: Container, claimed: dict[str, Any]) -> None:
    if claimed["format"] == bulk_jobs.BULK_FORMAT:  # a select-all bulk action queued as a job
        bulk_jobs.run(container, claimed)
        return
    import_id = claimed["import_id"]
    actor = Actor(account_id=claimed["account_id"], sub=claimed["actor"], request_id=claimed["request_id"])
    with tempfile.NamedTemporaryFile(suffix=f".{claimed['format']}") as tmp:
        with container.pool.connection() as conn, conn.transaction(), conn.cursor(name="upload") as cur:
            cur.execute("SELECT data FROM import_upload_chunks WHERE import_id = %s ORDER BY seq", (import_id,))
            for (data,) in cur:
                tmp.write(data)
        tmp.flush()
        job = container.app.repository.get(import_id)
        if job.status != "running":
            _finish(container, import_id)
            return
        mapping = json.loads(claimed["mapping"]) if claimed["mapping"] else None
        service = ImportService(container.app)
        try:
            _, rows = open_rows(Path(tmp.name), claimed["format"], mapping, limits=file_limits(container.settings))
            try:
                service.run(actor, job, rows, region=claimed["region"],
                            on_batch=lambda _: _heartbeat(container, import_id))
            finally:
                rows.close()
        except ImportFailedError as failed:
            log.warning("import %s failed: %s", import_id, failed.cause)
        except ImportInterruptedError:
            raise  # the database is away or full: not the job's fault, so not failed (run_job resumes it)
        except Exception as exc:  # noqa: BLE001 - e.g. the header check: record the failure
            job = container.app.repository.get(import_id)
            job.fail(actor, failure_reason(exc))
            container.app.save_all(job)
    _finish(container, import_id)  # the job's end is stored (and shown): its upload goes

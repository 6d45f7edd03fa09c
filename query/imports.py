"""Queries of import jobs and their row-by-row reports (the ``imports`` and ``import_report_rows`` read tables)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import Meta
from psycopg_pool import ConnectionPool

from query.tenancy import as_tenant, tenant_transaction

REPORT_URL = "/api/v1/contacts/imports/{}/report.csv"


class ImportCounts(msgspec.Struct, rename="camel"):
    rows: int
    imported: int
    valid: int
    invalid: int
    skipped: int


class ImportJob(msgspec.Struct, rename="camel"):
    id: UUID
    status: Annotated[str, Meta(description="queued (an async import no worker has claimed yet), running,"
                                            " completed or failed", examples=["queued"])]
    source: str
    filename: str | None
    list_id: UUID | None
    counts: ImportCounts
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    report_url: str


def get_import(pool: ConnectionPool, account_id: UUID, import_id: UUID) -> ImportJob | None:
    """The job resource from the ``imports`` read table; None for an unknown id or another account's."""
    with tenant_transaction(pool, account_id) as conn:
        row = conn.execute(
            "SELECT id, status, source, filename, list_id, rows_read, imported, valid, invalid, skipped,"
            " error, created_at, updated_at, finished_at FROM imports WHERE id = %s AND account_id = %s",
            (import_id, account_id)).fetchone()
    if row is None:
        return None
    if row[1] == "running":
        # A job waiting in the queue for a worker is "queued", not "running": the read model
        # records the job's start, the queue (a write-side table, outside the tenant's
        # role) whether a worker has claimed it yet.
        with pool.connection() as conn:
            queued = conn.execute("SELECT status FROM import_queue WHERE import_id = %s", (import_id,)).fetchone()
        if queued is not None and queued[0] == "queued":
            row = (row[0], "queued", *row[2:])
    return ImportJob(id=row[0], status=row[1], source=row[2], filename=row[3], list_id=row[4],
                     counts=ImportCounts(*row[5:10]), error=row[10], created_at=row[11], updated_at=row[12],
                     finished_at=row[13], report_url=REPORT_URL.format(row[0]))


def import_exists(pool: ConnectionPool, account_id: UUID, import_id: UUID) -> bool:
    """Whether the account has this import job."""
    with tenant_transaction(pool, account_id) as conn:
        return conn.execute("SELECT 1 FROM imports WHERE id = %s AND account_id = %s",
                            (import_id, account_id)).fetchone() is not None


def report_lines(pool: ConnectionPool, account_id: UUID, import_id: UUID) -> Iterator[bytes]:
    """The job's report as CSV, in chunks of about 64 kB, read through a server-side cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["line", "row", "outcome", "reason", "detail", "contact_id"])
    with pool.connection() as conn, conn.transaction():
        as_tenant(conn, account_id)
        with conn.cursor(name="import_report") as cur:
            cur.execute("SELECT line, row, outcome, reason, detail, contact_id FROM import_report_rows"
                        " WHERE import_id = %s ORDER BY row, reason", (import_id,))
            for record in cur:
                writer.writerow(["" if v is None else v for v in record])
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
    yield buffer.getvalue().encode()

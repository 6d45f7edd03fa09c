"""``contacts import`` and ``contacts export``: the HTTP API's import and export, from a terminal.

They talk to a running service over HTTP (``--url`` / ``CONTACTS_URL``, ``--token`` /
``CONTACTS_TOKEN``), as any client does: nothing here touches the database. An import
runs as an async job (``Prefer: respond-async``) whose progress the command polls.
Exit status: 0 done, 1 the service refused or failed, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from service import progress

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_S = 0.5
API = "/api/v1/contacts"


class Failed(Exception):
    """The service refused or failed the request: the message is printed, the exit status is 1."""


# -- arguments ------------------------------------------------------------------------------

def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _region(text: str) -> str:
    import phonenumbers

    if text.strip().upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a region code (two letters, e.g. KE, NG)")
    return text.strip().upper()


def _mapping(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(v is None or isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError('give a JSON object of header -> field or null, e.g. {"Mobile": "phone"}')
    return text


def _file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _columns(text: str) -> str:
    from query.exports import EXTRA_COLUMNS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXTRA_COLUMNS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown column(s) {', '.join(unknown)}; choose from"
                                         f" {', '.join(EXTRA_COLUMNS)}")
    return ",".join(names)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help=f"the service's base URL (default: $CONTACTS_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="bearer token (default: $CONTACTS_TOKEN)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each HTTP answer")
    progress.add_progress_flag(parser)


def add_commands(sub: Any) -> None:
    """Register ``import`` and ``export`` on the ``contacts`` command's subparsers."""
    formatter = argparse.RawDescriptionHelpFormatter
    imp = sub.add_parser(
        "import", help="import a CSV or Excel file through the HTTP API, with a progress bar",
        formatter_class=formatter, description=(
            "Upload FILE to POST /api/v1/contacts/import as an async job and follow it to its end:\n"
            "rows read / stored / skipped, rate and time left on standard error (on a terminal),\n"
            "then the counts and where the row-by-row report is on standard output.\n\n"
            "exit status: 0 completed, 1 refused or failed (the message says why), 2 usage error"))
    imp.add_argument("file", type=_file, metavar="FILE", help=".csv or .xlsx file")
    imp.add_argument("--list", dest="list_id", type=_uuid, metavar="ID", help="add every imported contact to this list")
    imp.add_argument("--region", type=_region, metavar="KE",
                     help="region of numbers written without a country code (default: the service's)")
    imp.add_argument("--mapping", type=_mapping, metavar="JSON",
                     help='header -> field, or null to ignore a column: \'{"Mobile": "phone", "Ref": null}\'')
    imp.add_argument("--json", action="store_true", help="print the finished job as JSON instead of a summary")
    _connection_flags(imp)
    imp.set_defaults(handler=run_import)

    exp = sub.add_parser(
        "export", help="download contacts as CSV through the HTTP API",
        formatter_class=formatter, description=(
            "Stream GET /api/v1/contacts/export (the same filters as GET /contacts) to FILE or\n"
            "standard output, newest first, with a progress bar on standard error (on a terminal).\n\n"
            "exit status: 0 written, 1 refused or failed, 2 usage error"))
    exp.add_argument("--list", dest="list_id", type=_uuid, metavar="ID", help="only contacts in this list")
    exp.add_argument("--tags", nargs="+", metavar="TAG", help="only contacts with all these tags (a,b or a b)")
    opted = exp.add_mutually_exclusive_group()
    opted.add_argument("--opted-out", dest="opted_out", action="store_const", const=True, default=None,
                       help="only contacts who opted out")
    opted.add_argument("--not-opted-out", dest="opted_out", action="store_const", const=False,
                       help="only contacts who did not opt out")
    exp.add_argument("--search", help="name substring, or phone digits when the term reads as a number")
    exp.add_argument("--columns", type=_columns, metavar="A,B",
                     help="columns after the default six: isOptedOut,status,invalidReason,operator,country,"
                          "listIds,createdAt,updatedAt")
    exp.add_argument("--output", "-o", default="-", metavar="FILE", help="CSV file (default: standard output)")
    _connection_flags(exp)
    exp.set_defaults(handler=run_export)


def client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> httpx.Client:
    """An HTTP client for the service named by the flags or the environment (no token: usage error)."""
    token = args.token or os.environ.get("CONTACTS_TOKEN", "").strip()
    if not token:
        parser.error("no token: pass --token or set CONTACTS_TOKEN (contacts token --account ID mints one)")
    url = (args.url or os.environ.get("CONTACTS_URL", "").strip() or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        parser.error(f"--url {url!r} must start with http:// or https://")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout)


def _refusal(response: httpx.Response) -> Failed:
    """The service's error body as one line: its message (and fields), else the status."""
    try:
        body = response.json()
        message = body.get("message") or body.get("detail") or response.reason_phrase
    except (ValueError, AttributeError):
        message = response.text[:300] or response.reason_phrase
    return Failed(f"{response.status_code}: {message}")


# -- import ---------------------------------------------------------------------------------

def run_import(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Upload the file as an async import, follow the job, print the outcome; the exit status."""
    with client(args, parser) as http:
        show = progress.wanted(args.progress)
        total: dict[str, int | None] = {"rows": None}
        if show:  # the bar's total: the file's rows, counted here by the service's own reader
            threading.Thread(target=_count_rows, args=(args.file, args.mapping, total), daemon=True).start()
        with progress.bar(show, "stored", "skipped") as bar:
            task = bar.add_task(f"uploading {args.file.name}", total=None, stored=0, skipped=0) if bar else None
            job = _upload(http, args)
            job = _follow(http, job, bar, task, total, args.file.name)
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _summary(http, job)
    if job["status"] != "completed":
        print(f"contacts import: the import failed: {job.get('error')}", file=sys.stderr)
        return 1
    return 0


def _upload(http: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    fields = {k: v for k, v in (("listId", args.list_id), ("region", args.region), ("mapping", args.mapping)) if v}
    with args.file.open("rb") as source:
        response = _request(http, "POST", f"{API}/import", files={"file": (args.file.name, source)}, data=fields,
                            headers={"Prefer": "respond-async"})
    if response.status_code not in (200, 201, 202):
        raise _refusal(response)
    body = response.json()
    if response.status_code != 202:  # the service ran it inline (an older one): the result is final
        return {"id": body["importId"], "status": body["status"], "reportUrl": body["reportUrl"],
                "counts": {k: body[k] for k in ("rows", "imported", "valid", "invalid", "skipped")}}
    return body


def _follow(http: httpx.Client, job: dict[str, Any], bar: Any, task: Any, total: dict[str, int | None],
            name: str) -> dict[str, Any]:
    """Poll the job until it ends, moving the bar with its counts."""
    while job["status"] in ("queued", "running"):
        if bar is not None:
            counts = job["counts"]
            waiting = job["status"] == "queued"  # no worker has claimed it yet: say so, not 0 rows/s
            bar.update(task, description=f"{name}: waiting for a worker" if waiting else f"importing {name}",
                       completed=counts["rows"], total=total["rows"], stored=counts["imported"],
                       skipped=counts["skipped"])
        time.sleep(POLL_S)
        response = _request(http, "GET", f"{API}/imports/{job['id']}")
        if response.status_code != 200:
            raise _refusal(response)
        job = response.json()
    if bar is not None:
        rows = job["counts"]["rows"]
        bar.update(task, description=f"imported {name}" if job["status"] == "completed" else f"{name} failed",
                   completed=rows, total=rows, stored=job["counts"]["imported"], skipped=job["counts"]["skipped"])
    return job


def _count_rows(path: Path, mapping: str | None, total: dict[str, int | None]) -> None:
    """The file's data rows, read as the service reads them (so the bar ends at 100 %); None if unreadable."""
    from command.imports.formats import detect_format
    from command.imports.rows import open_rows

    try:
        with path.open("rb") as source:
            fmt = detect_format(source.read(64 * 1024), path.name)
        _, rows = open_rows(path, fmt, json.loads(mapping) if mapping else None)
        total["rows"] = sum(1 for _ in rows)
    except Exception:  # noqa: BLE001 - the service reports what is wrong with the file; the bar just has no total
        total["rows"] = None


def _summary(http: httpx.Client, job: dict[str, Any]) -> None:
    c = job["counts"]
    print(f"import {job['id']}: {job['status']}")
    print(f"  rows read {c['rows']:,}: imported {c['imported']:,} (valid {c['valid']:,}, invalid {c['invalid']:,}),"
          f" skipped {c['skipped']:,}")
    print(f"  report: {http.base_url.join(job['reportUrl'])}")


# -- export ---------------------------------------------------------------------------------

def run_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Stream the CSV export to the output; the exit status."""
    params: dict[str, str] = {}
    if args.list_id:
        params["listId"] = args.list_id
    if args.tags:
        params["tags"] = ",".join(args.tags)
    if args.opted_out is not None:
        params["isOptedOut"] = "true" if args.opted_out else "false"
    if args.search:
        params["search"] = args.search
    with client(args, parser) as http:
        show = progress.wanted(args.progress)
        expected = _count_contacts(http, params) if show else None
        if args.columns:
            params["columns"] = args.columns
        out: BinaryIO = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
        try:
            written = _download(http, params, out, show, expected)
        finally:
            if out is not sys.stdout.buffer:
                out.close()
            else:
                out.flush()
    where = "standard output" if args.output == "-" else args.output
    print(f"exported {written:,} contacts to {where}", file=sys.stderr)
    return 0


def _count_contacts(http: httpx.Client, params: dict[str, str]) -> int | None:
    """How many contacts the export will hold (GET /contacts' exact total), for the bar."""
    response = _request(http, "GET", API, params={**params, "pageSize": "1"})
    if response.status_code != 200:
        raise _refusal(response)
    return response.json()["total"]


def _download(http: httpx.Client, params: dict[str, str], out: BinaryIO, show: bool,
              expected: int | None) -> int:
    counter = RecordCounter()
    with progress.bar(show, unit="contacts") as bar:
        task = bar.add_task("exporting", total=expected) if bar else None
        try:
            with http.stream("GET", f"{API}/export", params=params) as response:
                if response.status_code != 200:
                    response.read()
                    raise _refusal(response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    counter.feed(chunk)
                    if bar is not None:
                        bar.update(task, completed=counter.rows)
        except httpx.HTTPError as exc:
            raise Failed(f"the export from {http.base_url} failed: {type(exc).__name__}: {exc}") from None
        if bar is not None:
            bar.update(task, completed=counter.rows, total=counter.rows)
    return counter.rows


class RecordCounter:
    """Counts the data records of a CSV stream: line ends outside quoted cells, less the header."""

    def __init__(self) -> None:
        self.quotes = 0
        self.lines = 0

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b'"')
        # A quote toggles "inside a cell"; a doubled quote toggles twice. Parts at even
        # positions (counting every quote seen so far) are outside quotes.
        self.lines += sum(part.count(b"\n") for i, part in enumerate(parts) if (self.quotes + i) % 2 == 0)
        self.quotes += len(parts) - 1

    @property
    def rows(self) -> int:
        return max(self.lines - 1, 0)


def _request(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach {http.base_url}: {type(exc).__name__}: {exc}") from None


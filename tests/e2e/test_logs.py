"""Every process logs in one format chosen by CONTACTS_LOG_FORMAT: JSON lines (or text) with request context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from service.auth import mint_token
from service.embedded import free_port, stop_process
from tests.support import SECRET, drop_database, new_database, start_service, wait_healthy
from tests.waits import wait_until


def _contacts(command: str, database_url: str, nats_url: str, log: Path, **env: str) -> subprocess.Popen:
    full = {**os.environ, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_NATS_URL": nats_url,
            "CONTACTS_JWT_SECRET": SECRET, **env}
    return subprocess.Popen([sys.executable, "-m", "service.cli", command], env=full,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _json_lines(log: Path) -> list[dict]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_api_logs_json_lines_with_the_request_id_account_and_actor(postgres_server: str, nats_url: str,
                                                                   tmp_path: Path) -> None:
    database = new_database(postgres_server)
    start_service(database, nats_url, with_worker=False).close()  # the schema
    port, log, account = free_port(), tmp_path / "api.log", uuid.uuid4()
    api = _contacts("api", database, nats_url, log, CONTACTS_PORT=str(port), CONTACTS_LOG_FORMAT="json")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process=api)
        headers = {"Authorization": f"Bearer {mint_token(SECRET, account, 'logger-test')}"}
        assert httpx.post(f"{base}/api/v1/contact-lists", json={"name": "x"}, headers=headers).status_code == 201
        drop_database(postgres_server, database)  # an outage the API logs
        r = httpx.post(f"{base}/api/v1/contact-lists", json={"name": "y"},
                       headers={**headers, "X-Request-Id": "req-logged-1"}, timeout=30)
        assert r.status_code == 503, r.text
        read = httpx.get(f"{base}/api/v1/contacts", headers={**headers, "X-Request-Id": "req-logged-2"}, timeout=30)
        assert read.status_code == 503, read.text
    finally:
        stop_process(api)
    lines = _json_lines(log)
    for request_id in ("req-logged-1", "req-logged-2"):  # one line per failed request, a write's or a read's
        said = [line["message"].split(":")[0] for line in lines if line.get("requestId") == request_id]
        assert said == ["database unavailable"], (request_id, lines)
    line = next(line for line in lines if line.get("requestId") == "req-logged-1")
    assert line["accountId"] == str(account) and line["actor"] == "logger-test"
    assert line["level"] == "WARNING" and line["logger"] == "service.error_handlers"
    assert line["message"].startswith("database unavailable")
    assert line["time"].endswith("Z") and line["time"][:4].isdigit()
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)


def test_worker_and_its_relay_log_in_the_chosen_format(fresh_database: str, nats_url: str, tmp_path: Path) -> None:
    start_service(fresh_database, nats_url, with_worker=False).close()
    refused = f"nats://127.0.0.1:{free_port()}"  # nothing listens: the relay logs its retries
    for fmt in ("json", "text"):
        log = tmp_path / f"worker-{fmt}.log"
        worker = _contacts("worker", fresh_database, refused, log, CONTACTS_LOG_FORMAT=fmt,
                           CONTACTS_NATS_STREAM=f"LOGS_{uuid.uuid4().hex[:8]}")
        try:
            wait_until(lambda: "relay: " in log.read_text(), "the worker logged a relay line", 30, 0.2)
        finally:
            stop_process(worker)
        if fmt == "json":
            relay = [line for line in _json_lines(log) if line["message"].startswith("relay: ")]
            assert relay and relay[0]["level"] == "WARNING", log.read_text()[-2000:]  # from the relay child
        else:
            text = log.read_text()
            assert " WARNING events.nats_log: relay: " in text and not text.lstrip().startswith("{"), text[-2000:]


def test_an_unknown_log_format_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "service.cli", "token", "--account", str(uuid.uuid4())],
                          env={**os.environ, "CONTACTS_LOG_FORMAT": "yaml"}, capture_output=True, text=True)
    assert done.returncode != 0 and "CONTACTS_LOG_FORMAT must be json or text" in done.stderr

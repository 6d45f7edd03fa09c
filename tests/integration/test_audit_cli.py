"""The reference consumer (`contacts tail`) and the NDJSON audit export (`contacts events export`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from service.embedded import EmbeddedPostgres
from tests.support import SECRET, Service, read_cloudevent, read_stream, start_service


def _env(service: Service, database_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "CONTACTS_JWT_SECRET": SECRET, "CONTACTS_NATS_URL": service.nats_url,
           "CONTACTS_NATS_STREAM": service.settings.nats_stream,
           "CONTACTS_NATS_SUBJECT_PREFIX": service.settings.nats_subject_prefix}
    if database_url:
        env["CONTACTS_DATABASE_URL"] = database_url
    return env


def test_tail_prints_an_accounts_events_and_resumes_with_a_durable(service: Service) -> None:
    api = service.client(sub="tailer")
    lst = api.create_list("tail me")
    api.patch(f"/api/v1/contact-lists/{lst['id']}", json={"name": "renamed"})
    service.client().create_list("someone else's")
    service.wait_for_relay()
    cmd = [sys.executable, "-m", "service.cli", "tail", "--account", str(api.account_id), "--durable", "t1",
           "--idle-timeout", "2"]
    first = subprocess.run(cmd, env=_env(service), capture_output=True, text=True, timeout=60)
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 2, first.stdout + first.stderr
    assert "contacts.contact_list.created.v1" in lines[0] and "by tailer" in lines[0]
    assert "contacts.contact_list.updated.v1" in lines[1] and "renamed" in lines[1]
    api.delete(f"/api/v1/contact-lists/{lst['id']}")
    service.wait_for_relay()
    again = subprocess.run(cmd, env=_env(service), capture_output=True, text=True, timeout=60)
    assert [line.split()[1] for line in again.stdout.strip().splitlines()] == ["contacts.contact_list.deleted.v1"]


def test_tail_without_max_follows_past_a_hundred_messages(service: Service) -> None:
    """It fetched a negative batch (a crash) once it had printed 101 messages with no --max."""
    api = service.client(sub="many")
    api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": f"+2547120{i:05d}"} for i in range(150)]})
    service.wait_for_relay()
    cmd = [sys.executable, "-m", "service.cli", "tail", "--account", str(api.account_id), "--idle-timeout", "2"]
    done = subprocess.run(cmd, env=_env(service), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert sum(".contact.created." in line for line in lines) == 150 and len(lines) == 150 + 3  # + the import's


def test_events_export_writes_the_accounts_events_as_ndjson(service: Service, tmp_path) -> None:
    api = service.client(sub="exporter")
    c = api.create_contact("0712345678", firstName="Audit")
    api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone\n0712000009\n")})
    service.client().create_contact("0712345678")  # another account: not exported
    out = tmp_path / "events.ndjson"
    done = subprocess.run([sys.executable, "-m", "service.cli", "events", "export", "--account",
                           str(api.account_id), "--output", str(out)],
                          env=_env(service, service.container.database_url), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types.count("contacts.contact.created.v1") == 2  # the single create and the imported contact
    assert "contacts.contact_import.completed.v1" in types
    created = next(e for e in events if e["aggregateid"] == c["id"])
    assert created["data"]["firstName"] == "Audit" and created["actor"] == "exporter"
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    for line in out.read_text().splitlines():  # each line a valid CloudEvent 1.0 to the CloudEvents SDK
        assert read_cloudevent(line.encode()).get_id() == json.loads(line)["id"]
    # The stream's CloudEvent: the same attributes, the same id as the NATS message of that event.
    service.wait_for_relay()
    subject = f"{service.settings.nats_subject_prefix}.{api.account_id}.contact.{c['id']}.created"
    [published] = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream, subject))
    on_stream = json.loads(published.data)
    assert set(created) == set(on_stream) and created["id"] == on_stream["id"] == published.headers["Nats-Msg-Id"]
    assert {k: v for k, v in created.items() if k != "data"} == {k: v for k, v in on_stream.items() if k != "data"}
    completed = next(e for e in events if e["type"] == "contacts.contact_import.completed.v1")
    assert completed["data"]["counts"]["rows"] == 1
    without = subprocess.run([sys.executable, "-m", "service.cli", "events", "export", "--account",
                              str(api.account_id), "--no-personal-data"],
                             env=_env(service, service.container.database_url), capture_output=True, text=True,
                             timeout=120)
    assert without.returncode == 0, without.stderr
    assert "Audit" not in without.stdout and "712345678" not in without.stdout
    assert [json.loads(line)["id"] for line in without.stdout.splitlines()] == [e["id"] for e in events]


def test_events_export_to_standard_output_is_ndjson_with_the_embedded_servers(tmp_path: Path, nats_url: str) -> None:
    """The embedded server's banner goes to stderr: every line of stdout is one event."""
    pg = EmbeddedPostgres(tmp_path)
    svc = start_service(pg.start(), nats_url, with_worker=False)
    try:
        api = svc.client(sub="exporter")
        api.create_contact("0712345678")
        api.create_list("audited")
        env = {**_env(svc), "CONTACTS_DATABASE_URL": "", "CONTACTS_DATA_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-m", "service.cli", "events", "export", "--account",
                               str(api.account_id)], env=env, capture_output=True, text=True, timeout=120)
    finally:
        svc.close()
        pg.stop("immediate")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["contacts.contact.created.v1", "contacts.contact_list.created.v1"]
    assert "embedded PostgreSQL" in done.stderr
    assert pg.secrets["contacts"] not in done.stderr + done.stdout  # the URL is printed without its password

"""Every stored event reaches the JetStream stream once, in order, whatever fails."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from events.contract import event_id
from service.embedded import EmbeddedNats, stop_process
from tests.support import SECRET, Service, read_stream, start_service
from tests.waits import wait_until


def _stored_events(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT originator_id, originator_version, topic FROM contacts_events"
                            " WHERE topic NOT LIKE %s ORDER BY notification_id",
                            ("%ContactImport%",)).fetchall()


def test_list_event_is_published_with_subject_and_message_id(service: Service) -> None:
    api = service.client(sub="alice")
    created = api.create_list("Published", description="d")
    service.wait_for_relay()
    prefix, stream = service.settings.nats_subject_prefix, service.settings.nats_stream
    subject = f"{prefix}.{api.account_id}.list.{created['id']}.created"
    messages = asyncio.run(read_stream(service.nats_url, stream, subject))
    assert len(messages) == 1
    msg = messages[0]
    assert msg.headers["Nats-Msg-Id"] == event_id(uuid.UUID(created["id"]), 1)
    body = json.loads(msg.data)
    assert body["specversion"] == "1.0"
    assert body["type"] == "contacts.contact_list.created.v1"
    assert body["id"] == msg.headers["Nats-Msg-Id"]
    assert body["accountid"] == str(api.account_id)
    assert body["actor"] == "alice"
    assert body["data"] == {"name": "Published", "description": "d"}


def test_events_written_while_nats_is_down_arrive_once_each(postgres_server: str, fresh_database: str,
                                                             tmp_path: Path) -> None:
    nats_server = EmbeddedNats(tmp_path)
    nats_url = nats_server.start()
    svc = start_service(fresh_database, nats_url)
    try:
        api = svc.client()
        api.create_list("before")
        svc.wait_for_relay()
        nats_server.stop()
        started = time.perf_counter()
        ids = [api.create_list(f"while down {i}")["id"] for i in range(20)]
        elapsed = time.perf_counter() - started
        assert len(api.get("/api/v1/contact-lists").json()) == 21
        nats_server.start()
        svc.wait_for_relay(timeout=60)
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=21))
        msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(msg_ids) == 21 == len(set(msg_ids))
        assert {event_id(uuid.UUID(i), 1) for i in ids} <= set(msg_ids)
        print(f"20 writes with NATS down took {elapsed:.3f}s")
    finally:
        svc.close()
        nats_server.stop()


def test_relay_replaying_an_unacknowledged_batch_duplicates_nothing(postgres_server: str,
                                                                      fresh_database: str,
                                                                      nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url)
    try:
        api = svc.client()
        for i in range(10):
            api.create_list(f"L{i}")
        svc.wait_for_relay()
        # A crash after publishing but before the checkpoint: the next leader starts over from the
        # checkpoint in the table, not from the one the relay kept in memory.
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("UPDATE relay_tracking SET position = 0")
            _end_relay_leadership(conn)
        svc.wait_for_relay()
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream))
        assert len(messages) == 10
        assert len({m.headers["Nats-Msg-Id"] for m in messages}) == 10
    finally:
        svc.close()


def _end_relay_leadership(conn: psycopg.Connection) -> None:
    """Close the connection that holds the relay's advisory lock: the relay loses the lead and takes it again."""
    from events.locks import RELAY

    pids = [pid for (pid,) in conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                                           " AND classid = %s AND objid = %s", (RELAY >> 32, RELAY & 0xFFFFFFFF))]
    assert pids, "no process holds the relay's lock"
    for pid in pids:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_relay_keeps_its_checkpoint_in_memory_while_it_leads(postgres_server: str, fresh_database: str,
                                                              nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url)
    try:
        api = svc.client()
        api.create_list("first")
        svc.wait_for_relay()
        relay = svc.worker.worker.relay
        # Moved behind the leader's back: the leader neither reads it again nor republishes...
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("UPDATE relay_tracking SET position = 0")
        api.create_list("second")
        head = svc.container.head()
        wait_until(lambda: relay.position() >= head, "the relay checkpointed the second list's event")
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=2))
        assert [json.loads(m.data)["data"]["name"] for m in messages] == ["first", "second"]
        assert relay.published_total == 1  # only the new event went out in that round
    finally:
        svc.close()


def _worker_process(database_url: str, nats_url: str, settings_env: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **settings_env, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_NATS_URL": nats_url}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_killing_the_worker_mid_burst_loses_and_duplicates_nothing(postgres_server: str, fresh_database: str,
                                                                   nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    env = {"CONTACTS_JWT_SECRET": SECRET, "CONTACTS_NATS_STREAM": svc.settings.nats_stream,
           "CONTACTS_NATS_SUBJECT_PREFIX": svc.settings.nats_subject_prefix}
    worker = _worker_process(fresh_database, nats_url, env)
    try:
        api = svc.client()
        lists = [api.create_list(f"burst {i}") for i in range(60)]
        for item in lists[:30]:
            assert api.patch(f"/api/v1/contact-lists/{item['id']}", json={"name": "renamed"}).status_code == 200
            if item is lists[15]:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                worker = _worker_process(fresh_database, nats_url, env)
        expected = _stored_events(fresh_database)
        messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, expect=len(expected), timeout=60))
        msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert msg_ids == [event_id(oid, version) for oid, version, _ in expected]
        # Per aggregate, versions arrive in order.
        seen: dict[str, int] = {}
        for m in messages:
            body = json.loads(m.data)
            assert body["aggregateversion"] == seen.get(body["aggregateid"], 0) + 1
            seen[body["aggregateid"]] = body["aggregateversion"]
        assert len(api.get("/api/v1/contact-lists").json()) == 60
    finally:
        stop_process(worker)
        svc.close()


def test_killing_the_worker_while_it_publishes_an_import_loses_and_duplicates_nothing(
        postgres_server: str, fresh_database: str, nats_url: str) -> None:
    """An import's messages go out in fast-ingest batches (events/acks.py): a relay killed in the middle of one
    leaves a stream that the next relay completes from its checkpoint, each message once, in log order."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    env = {"CONTACTS_JWT_SECRET": SECRET, "CONTACTS_NATS_STREAM": svc.settings.nats_stream,
           "CONTACTS_NATS_SUBJECT_PREFIX": svc.settings.nats_subject_prefix}
    stream = svc.settings.nats_stream
    worker = None
    try:
        rows = "".join(f"07180{i:05d}\n" for i in range(20_000))
        r = svc.client().post("/api/v1/contacts/import", files={"file": ("c.csv", f"phone\n{rows}".encode())})
        assert r.status_code == 201 and r.json()["imported"] == 20_000, r.text
        expected = 20_000 + 20 + 2  # a contact.created per contact, import.progress per batch, started, completed
        worker = _worker_process(fresh_database, nats_url, env)
        wait_until(lambda: _stream_count(nats_url, stream) > 0, "the relay published part of the import")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        at_kill = _stream_count(nats_url, stream)
        assert at_kill < expected, "the import was published before the kill: nothing was interrupted"
        config = asyncio.run(_stream_config(nats_url, stream))
        assert config.allow_batched  # the relay made the stream to take fast-ingest batches
        worker = _worker_process(fresh_database, nats_url, env)
        messages = asyncio.run(read_stream(nats_url, stream, expect=expected, timeout=60))
        msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(msg_ids) == expected == len(set(msg_ids))
        with psycopg.connect(fresh_database) as conn:
            contact_ids = {str(i) for (i,) in conn.execute("SELECT id FROM contacts")}
        created = [json.loads(m.data) for m in messages if m.subject.endswith(".created")]
        assert {c["aggregateid"] for c in created} == contact_ids and len(created) == 20_000
        positions = [json.loads(m.data)["sequence"] for m in messages]
        assert positions == sorted(positions)  # the order of the event log, across the kill
    finally:
        if worker is not None:
            stop_process(worker)
        svc.close()


def test_a_stream_that_stops_taking_fast_batches_gets_an_ack_per_message(postgres_server: str,
                                                                         fresh_database: str, nats_url: str) -> None:
    """An operator turns ``allow_batched`` off (or the stream moves to an older server): the relay's next fast
    batch is refused, and it publishes from its checkpoint with an ack per message, nothing lost or doubled."""
    svc = start_service(fresh_database, nats_url)
    stream = svc.settings.nats_stream
    relay = svc.worker.worker.relay
    try:
        api = svc.client()

        def import_rows(first: int) -> None:
            rows = "".join(f"07190{i:05d}\n" for i in range(first, first + 300))
            r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", f"phone\n{rows}".encode())})
            assert r.status_code == 201 and r.json()["imported"] == 300, r.text

        import_rows(0)
        svc.wait_for_relay()
        assert relay.fast is not None and relay.batching  # the stream it made takes fast batches
        asyncio.run(_set_allow_batched(nats_url, stream, False))
        import_rows(300)
        svc.wait_for_relay(timeout=60)
        assert not relay.batching and relay.fast is None  # refused once: an ack per message from then on
        messages = asyncio.run(read_stream(nats_url, stream, expect=2 * (300 + 3), timeout=30))
        msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(msg_ids) == len(set(msg_ids)) == 2 * (300 + 3)  # created each, progress, started, completed
        positions = [json.loads(m.data)["sequence"] for m in messages]
        assert positions == sorted(positions)
    finally:
        svc.close()


async def _set_allow_batched(nats_url: str, stream: str, allowed: bool) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(stream)).config
        config.allow_batched = allowed
        await js.update_stream(config)
    finally:
        await nc.close()


def _stream_count(nats_url: str, stream: str) -> int:
    async def count() -> int:
        import nats

        nc = await nats.connect(nats_url)
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()
    return asyncio.run(count())


async def _stream_config(nats_url: str, stream: str):  # noqa: ANN202
    import nats

    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(stream)).config
    finally:
        await nc.close()


def test_order_per_aggregate_holds_under_concurrent_writes(service: Service) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api = service.client()
    lists = [api.create_list(f"c{i}") for i in range(4)]

    def rename(n: int) -> int:
        target = lists[n % 4]
        return api.patch(f"/api/v1/contact-lists/{target['id']}", json={"name": f"name {n}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(rename, range(40))) == {200}
    service.wait_for_relay()
    subject = f"{service.settings.nats_subject_prefix}.{api.account_id}.>"
    messages = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream, subject))
    versions: dict[str, list[int]] = {}
    for m in messages:
        body = json.loads(m.data)
        versions.setdefault(body["aggregateid"], []).append(body["aggregateversion"])
    assert len(versions) == 4
    for seq in versions.values():
        assert seq == list(range(1, len(seq) + 1))
    assert sum(len(seq) for seq in versions.values()) == 44


def test_the_relay_sends_the_messages_stored_with_each_event_sealed_where_personal(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event is stored with its messages (personal data sealed with the contact's key): the relay sends
    byte for byte what decoding the event builds, and no personal value lies in clear beside the event."""
    from command.domain import IMPORT_BATCH_TOPICS
    from events import outbox
    from events.contract import to_messages

    # CONTACTS_STORE_MESSAGES=1, for this test only (off by default: docs/benchmarks.md).
    monkeypatch.setattr(service.container.app.unit_of_work, "outbox", outbox.encode)
    api = service.client()
    relay = service.worker.worker.relay
    head = service.container.head()
    lst = api.create_list("outbox")
    c = api.create_contact("+254712345671", firstName="Sealedfirst", tags=["sealedtag"], listIds=[lst["id"]])
    api.patch(f"/api/v1/contacts/{c['id']}", json={"lastName": "Sealedlast", "isOptedOut": True})
    imported = api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone,firstName\n0712000071,Sealedrow\n")})
    assert imported.status_code == 201 and imported.json()["imported"] == 1, imported.text
    service.wait_for_relay()
    batch = relay._next(head, None)  # a look at the log as the relay takes it, writing no checkpoint
    rows = batch.notifications
    batches = [n for n in rows if n.topic in IMPORT_BATCH_TOPICS]  # decoded by the relay, as before
    assert len(rows) == 7 and len(batches) == 1 and batches[0].messages is None and batches[0].state is not None
    assert all(n.messages is not None and n.state is None for n in rows if n not in batches)
    stored = b"".join(n.messages or b"" for n in rows)
    for secret in (b"Sealedfirst", b"sealedtag", b"Sealedlast", b"712345671", b"Sealedrow", b"712000071"):
        assert secret not in stored
    sent = relay._messages(rows, batch.keys)
    assert [(n.id, m) for n in rows for m in batch.ready.get(n.id, [])] == [x for x in sent if x[0] != batches[0].id]
    decoded = [(n.id, m) for n, event in zip(rows, service.container.app.decode(relay._with_state(rows)))
               for m in to_messages(event, n.id, relay.prefix)]
    assert sent == decoded
    payloads = [m.payload for _, m in sent]
    assert any(b"Sealedfirst" in p for p in payloads) and any(b"Sealedrow" in p for p in payloads)
    subject = f"{service.settings.nats_subject_prefix}.{api.account_id}.>"
    stream = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream, subject))
    assert [m.data for m in stream] == payloads


def test_by_default_an_event_is_stored_without_its_messages_and_the_relay_builds_them(service: Service) -> None:
    """CONTACTS_STORE_MESSAGES is off unless set: nothing but the event is stored, and the message still goes out."""
    api = service.client()
    relay = service.worker.worker.relay
    c = api.create_contact("+254712345673", firstName="Plainpath")
    [created] = relay._next(service.container.head() - 1, None).notifications
    assert created.messages is None and created.state is not None
    service.wait_for_relay()
    subject = f"{service.settings.nats_subject_prefix}.{api.account_id}.contact.{c['id']}.>"
    [message] = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream, subject))
    assert json.loads(message.data)["data"]["firstName"] == "Plainpath"


def test_a_message_whose_contact_was_purged_before_the_relay_read_it_goes_out_erased(service: Service) -> None:
    api = service.client()
    relay = service.worker.worker.relay
    before = service.container.head()
    c = api.create_contact("+254712345672", firstName="Gonebefore", tags=["gonetag"])
    api.delete(f"/api/v1/contacts/{c['id']}")
    assert api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]}).json() == {"purged": 1}
    batch = relay._next(before, None)  # the events read with their keys: this one's is gone
    created = batch.notifications[0]
    assert created.originator_id == uuid.UUID(c["id"]) and batch.keys[created.originator_id] is None
    [message] = batch.ready[created.id]  # decoded from the event, erased
    data = json.loads(message.payload)["data"]
    assert data["erased"] is True and "firstName" not in data and data["tags"] == []
    assert b"Gonebefore" not in message.payload and b"gonetag" not in message.payload


def test_the_relays_batches_are_bounded_by_count_and_stored_size(service: Service) -> None:
    """An import batch holds a thousand contacts: each look of the relay reads no more events than fit its byte
    bound (always at least one) nor more than its count bound, in the one statement that reads them."""
    api = service.client()
    rows = "".join(f"07180{i:05d}\n" for i in range(3000))
    r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", f"phone\n{rows}".encode())})
    assert r.status_code == 201 and r.json()["imported"] == 3000, r.text
    service.wait_for_relay()
    relay = service.worker.worker.relay
    start = service.container.head() - 5  # this import's five events: started, three batches, completed
    with service.container.pool.connection() as conn:
        sizes = [s for (s,) in conn.execute("SELECT pg_column_size(state) FROM contacts_events"
                                            " WHERE notification_id > %s ORDER BY notification_id", (start + 1,))]
    assert sizes[0] > 100_000  # an import batch

    def count(after: int, limit: int, max_bytes: int) -> int:
        relay.batch_size, relay.max_bytes = limit, max_bytes
        return len(relay._next(after, None).notifications)

    bounds = relay.batch_size, relay.max_bytes
    try:
        assert count(start, 1000, 10 ** 9) == 5  # everything fits
        assert count(start, 1000, 1) == 1  # always at least one event
        assert count(start, 3, 10 ** 9) == 3  # and never more than asked
        assert count(start + 1, 1000, sizes[0] + sizes[1]) == 2
        assert count(start + 1, 1000, sizes[0] + sizes[1] - 1) == 1
    finally:
        relay.batch_size, relay.max_bytes = bounds

"""Rebuilding the read tables from the events gives identical tables, without stopping the API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from projections.read_model import READ_TABLES
from projections.rebuild import RebuildSwapError, rebuild
from tests.support import Service, start_service
from tests.waits import wait_until


def _snapshot(database_url: str) -> dict[str, list[Any]]:
    with psycopg.connect(database_url) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in READ_TABLES}


def _rebuild(svc: Service, database_url: str, **options: Any) -> dict[str, Any]:
    return rebuild(svc.container.pool, database_url, svc.container.app.recorder.select_notifications,
                   svc.container.app.decode, **options)


def _leftover_schemas(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace"
                                           " WHERE nspname LIKE 'rebuild\\_%' OR nspname LIKE 'retired\\_%'")]


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_rebuild_gives_identical_tables_and_the_api_keeps_working(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        a, b = api.create_list("a"), api.create_list("b")
        gone = api.create_list("gone")
        contacts = [api.create_contact(f"07120{i:05d}", firstName=f"N{i}", tags=["t", f"x{i % 3}"],
                                       listIds=[a["id"], gone["id"]] if i % 2 else [b["id"]]) for i in range(12)]
        api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone,tags\n0713000001,imp\n0713000002,\n12,\n")})
        api.patch(f"/api/v1/contacts/{contacts[0]['id']}", json={"lastName": "Changed", "tags": ["new"]})
        # Each event whose projection is one server-side call, replayed through the same call.
        assert api.post(f"/api/v1/contact-lists/{b['id']}/contacts",
                        json={"contactIds": [contacts[3]["id"], contacts[5]["id"]]}).status_code == 200
        assert api.delete_json(f"/api/v1/contact-lists/{a['id']}/contacts",
                               {"contactIds": [contacts[3]["id"]]}).status_code == 200
        api.patch(f"/api/v1/contacts/{contacts[4]['id']}", json={"isOptedOut": True})
        api.patch(f"/api/v1/contacts/{contacts[5]['id']}", json={"isOptedOut": True})
        api.patch(f"/api/v1/contacts/{contacts[5]['id']}", json={"isOptedOut": False})
        api.delete(f"/api/v1/contacts/{contacts[1]['id']}")
        api.delete(f"/api/v1/contacts/{contacts[2]['id']}")
        api.delete_json("/api/v1/contacts/trash", {"ids": [contacts[2]["id"]]})
        api.delete(f"/api/v1/contact-lists/{gone['id']}")
        before = _snapshot(fresh_database)
        assert before["contacts"] and before["contact_tags"] and before["import_report_rows"]
        # The import's second is counted per millisecond too (query/contacts.py's deep pages).
        assert any(row[2] == "millisecond" for row in before["contact_time_counts"])

        done = _rebuild(svc, fresh_database)
        assert done["position"] == svc.container.head()
        assert _snapshot(fresh_database) == before
        assert _leftover_schemas(fresh_database) == []
        # The API reads the new tables and projects new writes into them.
        assert api.get("/api/v1/contacts").json()["total"] == 12  # 10 of 12 left, plus 2 imported
        assert api.create_list("after")["name"] == "after"
        assert len(api.get("/api/v1/contact-lists").json()) == 3
    finally:
        svc.close()


def test_a_list_deleted_while_an_import_batch_is_stored_gets_none_of_its_contacts_and_rebuild_agrees(
        fresh_database: str, nats_url: str) -> None:
    """An import batch writes its contacts rows and memberships before the events table's lock; a
    list deleted between then and the lock ends as the log orders it: deleted first, never joined."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    projector = svc.container.app.unit_of_work.projector
    write_ahead = projector.project_ahead
    try:
        api = svc.client()
        doomed, kept = api.create_list("doomed"), api.create_list("kept")
        deleted: list[int] = []

        def delete_the_list_after_the_first_batch_wrote_ahead(events: list[Any], cur: Any) -> None:
            write_ahead(events, cur)  # the batch's rows and memberships, not committed yet
            if not deleted:  # another request deletes the list, taking the lock first
                deleted.append(api.delete(f"/api/v1/contact-lists/{doomed['id']}").status_code)

        projector.project_ahead = delete_the_list_after_the_first_batch_wrote_ahead
        content = ("phone\n" + "".join(f"07180{i:05d}\n" for i in range(1500))).encode()
        r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", content)}, data={"listId": doomed["id"]})
        assert r.status_code == 201 and r.json()["imported"] == 1500, r.text
        assert deleted == [204]
        page = api.get("/api/v1/contacts", params={"pageSize": 100}).json()
        assert page["total"] == 1500 and {tuple(c["listIds"]) for c in page["contacts"]} == {()}
        with psycopg.connect(fresh_database) as conn:
            assert conn.execute("SELECT count(*) FROM contact_list_memberships").fetchone()[0] == 0
        # A list that stays gets every contact of a batch written ahead, counted once.
        r = api.post("/api/v1/contacts/import", files={"file": ("k.csv", b"phone\n0718100001\n0718100002\n")},
                     data={"listId": kept["id"]})
        assert r.status_code == 201 and r.json()["imported"] == 2, r.text
        assert api.get(f"/api/v1/contact-lists/{kept['id']}").json()["contactCount"] == 2
        before = _snapshot(fresh_database)
        projector.project_ahead = write_ahead
        _rebuild(svc, fresh_database)
        assert _snapshot(fresh_database) == before
    finally:
        projector.project_ahead = write_ahead
        svc.close()


def test_a_rebuild_swaps_in_while_an_import_is_being_stored(fresh_database: str, nats_url: str) -> None:
    """Each import batch writes its rows before the events table's lock and the next batch starts
    within a millisecond of the last commit: the swap still gets its locks while the import runs,
    and the tables it swaps in take the rest of the import as live tables do."""
    from command.context import Actor
    from command.imports.rows import ImportRow
    from command.imports.service import ImportService

    svc = start_service(fresh_database, nats_url, with_worker=False)
    projector = svc.container.app.unit_of_work.projector
    write_ahead = projector.project_ahead

    def slowly(events: list[Any], cur: Any) -> None:  # a large batch's COPY on a busy machine
        write_ahead(events, cur)
        time.sleep(0.1)

    try:
        api = svc.client()
        actor = Actor(api.account_id, "tester", "rebuild-test")
        importer = ImportService(svc.container.app, batch_size=200)
        job, _ = importer.start(actor, source="csv", filename="c.csv", list_id=None, idempotency_key=None)
        rows = [ImportRow(row=i, phone=f"07190{i:05d}", line=i + 1, tags=[f"t{i % 7}"]) for i in range(1, 8001)]
        projector.project_ahead = slowly
        importing, outcome = _in_thread(lambda: importer.run(actor, job, rows))
        wait_until(lambda: api.get("/api/v1/contacts").json()["total"] > 0, "the first batch stored", 30, 0.02)
        _rebuild(svc, fresh_database)
        assert importing.is_alive(), "the swap waited for the import to end"
        importing.join(120)
        assert "error" not in outcome, outcome
        assert outcome["result"].counts["imported"] == 8000
        projector.project_ahead = write_ahead
        before = _snapshot(fresh_database)
        assert api.get("/api/v1/contacts").json()["total"] == 8000
        _rebuild(svc, fresh_database)
        assert _snapshot(fresh_database) == before
    finally:
        projector.project_ahead = write_ahead
        svc.close()


def test_the_swap_backs_off_from_a_reader_that_holds_a_table_it_needs(
        fresh_database: str, nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A reader's transaction has read ``contact_tags`` and then reads ``contacts``: the swap,
    holding ``contacts`` and waiting for ``contact_tags``, gives way instead of deadlocking."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    reader = psycopg.connect(fresh_database, autocommit=True)
    watch = psycopg.connect(fresh_database, autocommit=True)
    try:
        api = svc.client()
        for i in range(5):
            api.create_contact(f"07140{i:05d}", tags=["t"])
        before = _snapshot(fresh_database)
        contacts, tags = watch.execute("SELECT 'contacts'::regclass::oid, 'contact_tags'::regclass::oid").fetchone()
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        reader.execute("SELECT count(*) FROM contact_tags").fetchone()

        # The app's logging set-up replaced the root handlers, caplog's among them.
        logging.getLogger("projections.rebuild").addHandler(caplog.handler)
        with caplog.at_level("INFO", logger="projections.rebuild"):
            thread, outcome = _in_thread(lambda: _rebuild(svc, fresh_database))
            # The swap holds ``contacts`` and waits for the reader's ``contact_tags``.
            wait_until(lambda: watch.execute(
                "SELECT coalesce(bool_or(relation = %s AND mode = 'AccessExclusiveLock' AND granted)"
                " AND bool_or(relation = %s AND NOT granted), false) FROM pg_locks WHERE pid <> %s",
                (contacts, tags, reader.info.backend_pid)).fetchone()[0],
                "the swap holds contacts and waits for the reader's contact_tags", 30, 0.005)
            assert reader.execute("SELECT count(*) FROM contacts").fetchone()[0] == 5
            reader.execute("COMMIT")
            thread.join(60)
        assert "error" not in outcome, outcome
        assert outcome["result"]["position"] == svc.container.head()
        assert any("retrying" in m for m in caplog.messages), caplog.messages
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        assert _snapshot(fresh_database) == before
        assert _leftover_schemas(fresh_database) == []
    finally:
        logging.getLogger("projections.rebuild").removeHandler(caplog.handler)
        watch.close()
        reader.close()
        svc.close()


def test_a_swap_that_never_gets_its_locks_fails_and_leaves_the_old_tables(fresh_database: str,
                                                                            nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    reader = psycopg.connect(fresh_database, autocommit=True)
    try:
        api = svc.client()
        api.create_contact("0715000001", tags=["t"])
        before = _snapshot(fresh_database)
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        reader.execute("SELECT count(*) FROM contact_time_counts").fetchone()
        with pytest.raises(RebuildSwapError, match="old read tables still serve"):
            _rebuild(svc, fresh_database, attempts=3)
        reader.execute("COMMIT")
        assert _leftover_schemas(fresh_database) == []
        assert _snapshot(fresh_database) == before
        assert api.get("/api/v1/contacts").json()["total"] == 1
    finally:
        reader.close()
        svc.close()


def test_readers_over_http_all_succeed_while_the_tables_are_rebuilt(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        listed = api.create_list("l")
        ids = [api.create_contact(f"07160{i:05d}", tags=[f"t{i % 4}"], listIds=[listed["id"]])["id"]
               for i in range(30)]
        for contact_id in ids[:5]:
            api.delete(f"/api/v1/contacts/{contact_id}")
        before = _snapshot(fresh_database)
        paths = ("/api/v1/contacts?pageSize=100", "/api/v1/contact-lists", "/api/v1/contacts/tags",
                 "/api/v1/contacts/trash", f"/api/v1/contacts?listId={listed['id']}", "/api/v1/contacts?tags=t1")
        done = threading.Event()
        failures: list[str] = []
        reads = [0]

        def read_until_done(client: Any) -> None:
            while not done.is_set():
                for path in paths:
                    response = client.get(path)
                    reads[0] += 1
                    if response.status_code != 200:
                        failures.append(f"{path}: {response.status_code} {response.text}")

        readers = [_in_thread(lambda c=svc.client(api.account_id): read_until_done(c)) for _ in range(6)]
        try:
            for _ in range(3):
                _rebuild(svc, fresh_database)
        finally:
            done.set()
            for thread, _ in readers:
                thread.join(30)
        assert [o for _, o in readers if "error" in o] == []
        assert failures == []
        assert reads[0] > len(paths)
        assert _snapshot(fresh_database) == before
        assert _leftover_schemas(fresh_database) == []
    finally:
        svc.close()


def test_a_rebuild_keeps_import_report_lines_and_the_files_order(fresh_database: str, nats_url: str) -> None:
    """Lines and row order travel in the stored batch: the rebuilt tables equal the projected ones."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", (
            b"Title row\nphone\n0713000009\n\n+254201234567\n0713000009\n0713000001\n"))})
        assert r.status_code == 201, r.text
        report = api.get(f"/api/v1/contacts/imports/{r.json()['importId']}/report.csv").text
        assert [line.split(",")[:2] for line in report.splitlines()[1:]] == [["5", "2"], ["6", "3"]]
        before = _snapshot(fresh_database)
        _rebuild(svc, fresh_database)
        assert _snapshot(fresh_database) == before
        assert api.get(f"/api/v1/contacts/imports/{r.json()['importId']}/report.csv").text == report
        history = api.get(f"/api/v1/contacts/{api.get('/api/v1/contacts').json()['contacts'][0]['id']}/history")
        assert history.status_code == 200 and history.json()[0]["type"].endswith("created.v1")
    finally:
        svc.close()


def test_list_adds_committed_together_build_what_their_replay_builds(fresh_database: str, nats_url: str) -> None:
    """A group of list-adds is projected in one statement, each list's count moved once by the group's
    sum (commit_contact_events); a rebuild replays them one event at a time: the tables are identical."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        lists = [api.create_list(f"l{i}") for i in range(3)]
        contacts = [api.create_contact(f"0745{i:06d}", isOptedOut=i % 4 == 0) for i in range(24)]
        api.delete(f"/api/v1/contacts/{contacts[23]['id']}")  # trashed: added to no list
        # Each contact into a list (a list-add), some into two more at once (a PATCH of its listIds,
        # which also takes it out of the first if it is there already), others into a second list;
        # the first eight list-adds twice: one of each pair adds the contact.
        adds = [(c["id"], lists[i % 3]["id"]) for i, c in enumerate(contacts)]
        adds += [(c["id"], lists[(i + 1) % 3]["id"]) for i, c in enumerate(contacts[6:22], start=6)]
        adds += adds[:8]
        patches = [(c["id"], [lists[(i + 1) % 3]["id"], lists[(i + 2) % 3]["id"]]) for i, c in enumerate(contacts[:6])]
        jobs: list[tuple[str, Any]] = [*adds, *patches]

        def add(job: tuple[str, Any]) -> None:
            contact_id, into = job
            if isinstance(into, list):
                r = api.patch(f"/api/v1/contacts/{contact_id}", json={"listIds": into})
            else:
                r = api.post(f"/api/v1/contact-lists/{into}/contacts", json={"contactIds": [contact_id]})
            assert r.status_code == 200, r.text

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(add, jobs))
        members = {lst["id"]: 0 for lst in lists}
        for c in contacts[:23]:
            body = api.get(f"/api/v1/contacts/{c['id']}").json()
            assert len(body["listIds"]) == len(set(body["listIds"])) >= 1
            for list_id in body["listIds"]:
                members[list_id] += 1
        for lst in lists:  # exact counts: each contact counted once in each list it is in
            assert api.get(f"/api/v1/contact-lists/{lst['id']}").json()["contactCount"] == members[lst["id"]]
        before = _snapshot(fresh_database)
        _rebuild(svc, fresh_database)
        assert _snapshot(fresh_database) == before
    finally:
        svc.close()


def test_creates_committed_together_count_what_their_replay_counts(fresh_database: str, nats_url: str) -> None:
    """A group of creates moves each count row (the account's totals, each tag's, each hour's and
    second's) once by the group's sum (create_contacts); a rebuild replays them one at a time:
    the counts are exact and the tables identical."""
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        tags = [["vip", "nairobi"], ["vip"], [], ["mombasa", "vip"]]
        lists = [api.create_list("a")["id"], api.create_list("b")["id"]]
        in_lists = [[], [lists[0]], [lists[1], lists[0]]]  # created in none, one or both lists

        def create(i: int) -> tuple[str, list[str]]:
            r = api.post("/api/v1/contacts", json={"phone": f"0746{i:06d}", "firstName": f"N{i}",
                                                    "tags": tags[i % 4], "isOptedOut": i % 5 == 0,
                                                    "listIds": in_lists[i % 3]})
            assert r.status_code == 201, r.text
            return r.json()["id"], in_lists[i % 3]

        with ThreadPoolExecutor(16) as pool:
            made = list(pool.map(create, range(60)))
        for contact_id, listed in made:  # each in its own lists, in the order the request named them
            assert api.get(f"/api/v1/contacts/{contact_id}").json()["listIds"] == listed
        assert [api.get(f"/api/v1/contact-lists/{i}").json()["contactCount"] for i in lists] == [40, 20]

        def total(**params: Any) -> int:
            return api.get("/api/v1/contacts", params=params).json()["total"]

        assert total() == 60
        assert total(isOptedOut="true") == 12
        assert (total(tags="vip"), total(tags="nairobi"), total(tags="mombasa")) == (45, 15, 15)
        assert total(tags="vip", isOptedOut="true") == sum(1 for i in range(0, 60, 5) if i % 4 != 2)
        with psycopg.connect(fresh_database) as conn:  # every contact counted in its hour and its second
            hours, seconds = conn.execute(
                "SELECT sum(active) FILTER (WHERE unit = 'hour'), sum(active) FILTER (WHERE unit = 'second')"
                " FROM contact_time_counts WHERE tag = ''").fetchone()
        assert (hours, seconds) == (60, 60)
        before = _snapshot(fresh_database)
        _rebuild(svc, fresh_database)
        assert _snapshot(fresh_database) == before
    finally:
        svc.close()

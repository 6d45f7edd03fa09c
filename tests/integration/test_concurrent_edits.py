"""Safe concurrent edits: ETag on GET, If-Match on PATCH and DELETE, 412 on a stale version."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from command.context import Actor
from projections.read_model import create_tables
from tests.support import Service, start_service


def test_two_clients_editing_one_contact_the_second_gets_412_and_changes_nothing(service: Service) -> None:
    alice = service.client()
    bob = service.client(alice.account_id, sub="bob")
    contact = alice.create_contact("+254712000101", firstName="Jane")
    first = alice.get(f"/api/v1/contacts/{contact['id']}")
    assert first.headers["ETag"] == bob.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"] == '"1"'

    won = alice.patch(f"/api/v1/contacts/{contact['id']}", json={"firstName": "Janet"},
                      headers={"If-Match": first.headers["ETag"]})
    assert won.status_code == 200, won.text
    assert won.headers["ETag"] == '"2"'

    lost = bob.patch(f"/api/v1/contacts/{contact['id']}", json={"lastName": "Doe"},
                     headers={"If-Match": first.headers["ETag"]})
    assert lost.status_code == 412, lost.text
    body = lost.json()
    assert (body["status"], body["error"], body["currentEtag"]) == (412, "precondition_failed", '"2"')
    assert body["errors"][0]["field"] == "If-Match"
    assert '"2"' in body["message"]
    assert lost.headers["ETag"] == '"2"'
    now = alice.get(f"/api/v1/contacts/{contact['id']}").json()
    assert (now["firstName"], now["lastName"]) == ("Janet", None)

    retried = bob.patch(f"/api/v1/contacts/{contact['id']}", json={"lastName": "Doe"},
                        headers={"If-Match": lost.json()["currentEtag"]})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["firstName"], retried.json()["lastName"]) == ("Janet", "Doe")
    assert retried.headers["ETag"] == '"3"'


def test_simultaneous_edits_with_the_same_etag_exactly_one_wins(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("+254712000102")
    tag = api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"]
    clients = [service.client(api.account_id, sub=f"editor{i}") for i in range(4)]
    start = threading.Barrier(len(clients))
    answers: list[int] = []

    def edit(i: int) -> None:
        start.wait()
        answers.append(clients[i].patch(f"/api/v1/contacts/{contact['id']}", json={"notes": f"editor {i}"},
                                        headers={"If-Match": tag}).status_code)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200, 412, 412, 412], answers
    history = api.get(f"/api/v1/contacts/{contact['id']}/history").json()
    assert [e["type"] for e in history] == ["contacts.contact.created.v1", "contacts.contact.updated.v1"]


def test_without_if_match_edits_and_deletes_behave_as_before(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("+254712000103")
    assert api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "a"}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "b"}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "c"},
                     headers={"If-Match": "*"}).status_code == 200
    assert api.delete(f"/api/v1/contacts/{contact['id']}").status_code == 204
    assert api.delete(f"/api/v1/contacts/{contact['id']}").status_code == 404


def test_many_clients_editing_one_contact_or_list_without_if_match_all_succeed(service: Service) -> None:
    """Without If-Match nobody asked for a version check: every edit applies, none answers 409.

    They arrive together and would load the same version; this process's writers of one
    aggregate take turns (command/turns.py) instead of losing the race to each other.
    """
    api = service.client()
    contact = api.create_contact("+254712000105")
    lst = api.create_list("Busy")
    edits = 48

    def patch(n: int) -> int:
        return api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": f"edit {n}"}).status_code

    def rename(n: int) -> int:
        return api.patch(f"/api/v1/contact-lists/{lst['id']}", json={"name": f"Busy {n}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        patched = list(pool.map(patch, range(edits)))
        renamed = list(pool.map(rename, range(edits)))
    assert patched == [200] * edits and renamed == [200] * edits
    # Each applied once, on top of the one before: one new version each.
    assert api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"] == f'"{1 + edits}"'
    assert api.get(f"/api/v1/contact-lists/{lst['id']}").headers["ETag"] == f'"{1 + edits}"'
    history = api.get(f"/api/v1/contacts/{contact['id']}/history").json()
    assert sorted(e["data"]["notes"] for e in history[1:]) == sorted(f"edit {n}" for n in range(edits))


def test_delete_with_a_stale_etag_is_412_and_keeps_the_contact(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("+254712000104")
    stale = api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"]
    vip = api.create_list("VIP")
    assert api.post(f"/api/v1/contact-lists/{vip['id']}/contacts", json={"contactIds": [contact["id"]]}).json() \
        == {"added": 1}
    current = api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"]
    assert current == '"2"' != stale  # joining a list is a change of the contact

    r = api.delete(f"/api/v1/contacts/{contact['id']}", headers={"If-Match": stale})
    assert r.status_code == 412 and r.json()["currentEtag"] == current, r.text
    assert api.get(f"/api/v1/contacts/{contact['id']}").status_code == 200
    assert api.delete(f"/api/v1/contacts/{contact['id']}", headers={"If-Match": current}).status_code == 204
    assert api.get(f"/api/v1/contacts/{contact['id']}").status_code == 404


def test_lists_have_etags_and_honour_if_match(service: Service) -> None:
    api = service.client()
    created = api.post("/api/v1/contact-lists", json={"name": "News"})
    assert created.headers["ETag"] == '"1"'
    list_id = created.json()["id"]
    shown = api.get(f"/api/v1/contact-lists/{list_id}")
    assert shown.status_code == 200 and shown.json() == created.json()
    assert shown.headers["ETag"] == '"1"'

    renamed = api.patch(f"/api/v1/contact-lists/{list_id}", json={"name": "Newsletter"}, headers={"If-Match": '"1"'})
    assert renamed.status_code == 200 and renamed.headers["ETag"] == '"2"', renamed.text
    stale = api.patch(f"/api/v1/contact-lists/{list_id}", json={"name": "Old news"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["currentEtag"] == '"2"', stale.text
    assert api.get(f"/api/v1/contact-lists/{list_id}").json()["name"] == "Newsletter"

    assert api.delete(f"/api/v1/contact-lists/{list_id}", headers={"If-Match": '"1"'}).status_code == 412
    assert api.delete(f"/api/v1/contact-lists/{list_id}", headers={"If-Match": 'W/"2"'}).status_code == 204
    assert api.get(f"/api/v1/contact-lists/{list_id}").status_code == 404
    other = service.client()
    assert other.get(f"/api/v1/contact-lists/{api.create_list('Mine')['id']}").status_code == 404


def test_malformed_if_match_is_422_naming_the_header(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("+254712000105")
    for bad in ("3", "abc", '"3", "4"', '"x"'):
        r = api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "x"}, headers={"If-Match": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "If-Match"
    assert api.get(f"/api/v1/contacts/{contact['id']}").json()["notes"] is None


def test_imported_contacts_start_at_version_1(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone\n+254712000106\n", "text/csv")})
    assert r.status_code == 201, r.text
    contact = api.get("/api/v1/contacts").json()["contacts"][0]
    assert api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"] == '"1"'
    r = api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "x"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"', r.text


def test_read_tables_made_before_versions_get_them_from_the_event_store(fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False)
    try:
        api = svc.client()
        news = api.create_list("News")
        api.patch(f"/api/v1/contact-lists/{news['id']}", json={"name": "Newsletter"})
        contact = api.create_contact("+254712000107", listIds=[news["id"]])
        api.patch(f"/api/v1/contacts/{contact['id']}", json={"notes": "x"})
        api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone\n+254712000108\n", "text/csv")})
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            before = conn.execute("SELECT id, version FROM contacts UNION ALL SELECT id, version FROM contact_lists"
                                  " ORDER BY 1").fetchall()
            assert sorted(v for _, v in before) == [1, 2, 2]
            conn.execute("ALTER TABLE contacts DROP COLUMN version")
            conn.execute("ALTER TABLE contact_lists DROP COLUMN version")
            create_tables(conn)
            after = conn.execute("SELECT id, version FROM contacts UNION ALL SELECT id, version FROM contact_lists"
                                 " ORDER BY 1").fetchall()
        assert after == before
        assert api.get(f"/api/v1/contacts/{contact['id']}").headers["ETag"] == '"2"'
    finally:
        svc.close()


def test_the_openapi_document_describes_etags_and_if_match(service: Service) -> None:
    paths = service.anonymous().get("/schema/openapi.json").json()["paths"]
    for path, method in (("/api/v1/contacts/{contact_id}", "patch"), ("/api/v1/contacts/{contact_id}", "delete"),
                         ("/api/v1/contact-lists/{list_id}", "patch"), ("/api/v1/contact-lists/{list_id}", "delete")):
        operation = paths[path][method]
        header = next(p for p in operation["parameters"] if p["name"] == "If-Match")
        assert header["in"] == "header" and not header["required"] and header["description"], header
        assert header["examples"], header
        assert "412" in operation["responses"], (path, method)
    for path, method, status in (("/api/v1/contacts/{contact_id}", "get", "200"),
                                 ("/api/v1/contact-lists/{list_id}", "get", "200"),
                                 ("/api/v1/contacts/{contact_id}", "patch", "200"),
                                 ("/api/v1/contacts", "post", "201")):
        etag_header = paths[path][method]["responses"][status]["headers"]["ETag"]
        assert etag_header["description"] and etag_header["example"], (path, method)


def test_edits_committed_together_each_keep_their_answer_and_a_lost_race_is_redone(service: Service) -> None:
    """Writes that arrive while others commit share a transaction (LoopGroups on the API's event loop,
    WriteGroups for use cases in threads): answers, ETags and counts stay each write's own, and two edits of one contact in one group both land (the second is
    redone from a fresh load, as after any lost race)."""
    api = service.client()
    vip = api.create_list("VIP")
    contacts = [api.create_contact(f"0744{i:06d}") for i in range(12)]
    metrics = service.anonymous()

    def edit(job: tuple[int, str]) -> tuple[int, dict[str, Any]]:
        i, field = job
        c = contacts[i]
        if field == "list":
            r = api.post(f"/api/v1/contact-lists/{vip['id']}/contacts", json={"contactIds": [c["id"]]})
            return r.status_code, {}
        r = api.patch(f"/api/v1/contacts/{c['id']}", json={field: f"{field}-{i}", "tags": [f"t{i % 3}"]})
        return r.status_code, r.json() | {"etag": r.headers.get("etag")}

    def grouped() -> tuple[float, float]:
        text = metrics.get("/metrics").text
        return (_metric(text, "contacts_write_groups_total"), _metric(text, "contacts_grouped_writes_total"))

    before = grouped()
    jobs = [(i, f) for i in range(12) for f in ("firstName", "lastName", "list")]
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(edit, jobs))
    after = grouped()
    assert [code for code, _ in outcomes] == [200] * len(jobs)
    for i, c in enumerate(contacts):
        body = api.get(f"/api/v1/contacts/{c['id']}").json()
        assert (body["firstName"], body["lastName"], body["listIds"]) == (f"firstName-{i}", f"lastName-{i}", [vip["id"]])
    for (i, field), (_, answer) in zip(jobs, outcomes):
        if field != "list":  # each PATCH answered with its own contact, its own change in it, and an ETag
            assert (answer["id"], answer[field], bool(answer["etag"])) == (contacts[i]["id"], f"{field}-{i}", True)
    assert api.get(f"/api/v1/contact-lists/{vip['id']}").json()["contactCount"] == 12
    assert sorted(api.get("/api/v1/contacts/tags").json()) == ["t0", "t1", "t2"]
    assert after[1] - before[1] >= len(jobs) and after[0] - before[0] < after[1] - before[1]  # some went together


def test_loads_that_go_together_give_each_use_case_its_own_aggregate(service: Service) -> None:
    """PATCHes and list-adds on the event loop load in groups (one statement for the loads that arrive
    together); a contact or list two of them load is a copy for the second, so one use case's change
    never shows in another's aggregate or among its pending events."""
    api = service.client()
    listed = api.create_list("L")
    contact = api.create_contact("0744555111", firstName="Asha", tags=["vip"])
    cid, lid = uuid.UUID(contact["id"]), uuid.UUID(listed["id"])
    app = service.container.app

    async def load_together() -> list[Any]:
        return list(await asyncio.gather(*(app._load([cid, lid]) for _ in range(4))))

    groups_before = app.loads.groups
    loaded = asyncio.run(load_together())
    assert app.loads.groups - groups_before < 4  # some went together
    contacts = [found[cid] for found, _ in loaded]
    assert len({id(c) for c in contacts}) == 4 and len({id(found[lid]) for found, _ in loaded}) == 4
    assert all((c.version, c.pii["first_name"], c.tags) == (1, "Asha", ["vip"]) for c in contacts)
    assert all(keys[cid] == loaded[0][1][cid] for _, keys in loaded)
    actor = Actor(api.account_id, "tester", "t")
    contacts[0].update(actor, {"first_name": "Changed"}, {})
    assert [c.pii["first_name"] for c in contacts] == ["Changed", "Asha", "Asha", "Asha"]
    assert [len(c.collect_events()) for c in contacts] == [1, 0, 0, 0]

    async def read_list_together() -> list[Any]:  # as list-adds into one list load it: read only
        return list(await asyncio.gather(*(app._load([lid, cid], read_only=(lid,)) for _ in range(4)),
                                         app._load([lid])))

    *readers, writer = asyncio.run(read_list_together())
    assert len({id(found[lid]) for found, _ in readers[1:]}) == 1  # the readers that went together share it
    assert all(id(found[cid]) != id(readers[1][0][cid]) for found, _ in readers[2:])  # each its own contact
    assert id(writer[0][lid]) not in {id(found[lid]) for found, _ in readers}  # one that may change it: a copy


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

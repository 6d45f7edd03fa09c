"""Deep pages of GET /contacts start from the per-hour and per-second counts, and equal plain OFFSET.

(Also: a list's pages come from its memberships, and a search's deep pages from its
sorted matches; each compared with the plain query.)

(Unfiltered, filtered by ``isOptedOut`` only, and by one tag only: the filters those counts answer.)

``query.contacts.page_contacts`` finds where an unfiltered page deep in the list starts
by summing ``contact_time_counts`` (kept by the projector) instead of skipping index
entries. Any mistake in those counts would show users the wrong contacts, so: the
counts must equal the active contacts of each hour and second after every kind of
change made through the API, and every page read through them must equal the page read
by plain OFFSET, on data spread over hours and seconds (with ties), before and after
trashing.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from projections.read_model import create_tables
from query.contacts import ContactFilter, page_contacts
from tests.support import Service, new_database

PLAIN = 10 ** 12  # an anchor_min_skip no page reaches: plain OFFSET
COUNTS_MATCH = """
SELECT count(*) FROM (
    SELECT account_id, t.tag, u.unit, date_trunc(u.unit, created_at, 'UTC') AS bucket, count(*)::int AS active,
           count(*) FILTER (WHERE is_opted_out)::int AS opted_out
    FROM contacts CROSS JOIN LATERAL unnest(array_append(tags, '')) AS t(tag)
         CROSS JOIN (VALUES ('hour'), ('second')) AS u(unit)
    WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4
) expected FULL JOIN (SELECT * FROM contact_time_counts
                      WHERE unit <> 'millisecond' AND (active <> 0 OR opted_out <> 0)) kept
    USING (account_id, tag, unit, bucket)
WHERE (expected.active, expected.opted_out) IS DISTINCT FROM (kept.active, kept.opted_out)"""
#: Millisecond counts that differ from the active contacts of each millisecond (and tag), in
#: the seconds that have them (an import's); none anywhere else.
MILLISECOND_COUNTS_MATCH = """
WITH split AS (
    SELECT DISTINCT account_id, date_trunc('second', bucket, 'UTC') AS second FROM contact_time_counts
    WHERE unit = 'millisecond' AND tag = ''
)
SELECT count(*) FROM (
    SELECT c.account_id, t.tag, date_trunc('millisecond', c.created_at, 'UTC') AS bucket, count(*)::int AS active,
           count(*) FILTER (WHERE c.is_opted_out)::int AS opted_out
    FROM contacts c JOIN split s ON s.account_id = c.account_id AND s.second = date_trunc('second', c.created_at, 'UTC')
         CROSS JOIN LATERAL unnest(array_append(c.tags, '')) AS t(tag)
    WHERE c.deleted_at IS NULL GROUP BY 1, 2, 3
) expected FULL JOIN (SELECT account_id, tag, bucket, active, opted_out FROM contact_time_counts
                      WHERE unit = 'millisecond' AND (active <> 0 OR opted_out <> 0)) kept
    USING (account_id, tag, bucket)
WHERE (expected.active, expected.opted_out) IS DISTINCT FROM (kept.active, kept.opted_out)"""
#: The tag index's counts that differ from the active contacts with each tag (and opted out).
TAG_COUNTS_MATCH = """
SELECT count(*) FROM (
    SELECT account_id, t.tag, count(*)::int AS contact_count, count(*) FILTER (WHERE is_opted_out)::int AS opted_out_count
    FROM contacts CROSS JOIN LATERAL unnest(tags) AS t(tag) WHERE deleted_at IS NULL GROUP BY 1, 2
) expected FULL JOIN contact_tags kept USING (account_id, tag)
WHERE (expected.contact_count, expected.opted_out_count) IS DISTINCT FROM (kept.contact_count, kept.opted_out_count)"""
FILTERS = [ContactFilter(), ContactFilter(is_opted_out=True), ContactFilter(is_opted_out=False),
           ContactFilter(tags=["vip"]), ContactFilter(tags=["b"]), ContactFilter(tags=["vip"], is_opted_out=True),
           ContactFilter(tags=["b"], is_opted_out=False)]


def _pages(pool: ConnectionPool, account: uuid.UUID, size: int, min_skip: int,
           flt: ContactFilter = ContactFilter()) -> list[tuple[int, list]]:
    first = page_contacts(pool, account, flt, 1, size, anchor_min_skip=min_skip, search_min_skip=min_skip)
    pages = [(first.total, [c.id for c in first.contacts])]
    for page in range(2, -(-first.total // size) + 2):
        got = page_contacts(pool, account, flt, page, size, anchor_min_skip=min_skip, search_min_skip=min_skip)
        pages.append((got.total, [c.id for c in got.contacts]))
    return pages


# --- the counts the projector keeps, after every kind of change through HTTP --------------

def test_time_counts_follow_creates_imports_trash_restore_opt_out_and_purge(service: Service) -> None:
    api = service.client()
    made = [api.create_contact(f"07120000{i:02d}", firstName=f"T{i}", tags=["vip", "a"] if i % 2 else ["b"])["id"]
            for i in range(12)]
    csv = "phone,first_name,tags\n" + "".join(f"07130000{i:02d},I{i},{'vip;b' if i % 3 else ''}\n" for i in range(30))
    r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert r.status_code == 201 and r.json()["imported"] == 30
    # Numbers that opted out before they were purged come back opted out when imported again.
    gone = [api.create_contact(f"07180000{i:02d}", isOptedOut=True)["id"] for i in range(0, 9, 3)]
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": gone}).status_code == 200
    assert api.delete_json("/api/v1/contacts/trash", {"ids": gone}).status_code == 200
    r = api.post("/api/v1/contacts/bulk", json={"contacts": [
        {"phone": f"07180000{i:02d}", "tags": ["vip", "a"] if i % 2 else ["b"]} for i in range(9)]})
    assert r.status_code == 201 and r.json()["imported"] == 9
    assert api.get("/api/v1/contacts", params={"tags": "b", "isOptedOut": "true"}).json()["total"] == 2  # 0 and 6
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": made[:5]}).status_code == 200
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": made[:2]}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{made[8]}", json={"tags": ["b", "c"]}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{made[1]}", json={"tags": ["c"]}).status_code == 200  # restored above
    for contact_id in (made[6], made[7], made[0]):
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"isOptedOut": True}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{made[7]}", json={"isOptedOut": False}).status_code == 200
    assert api.delete_json("/api/v1/contacts/trash", {"ids": made[2:4]}).status_code == 200
    with psycopg.connect(service.container.database_url) as conn:
        assert conn.execute(COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(MILLISECOND_COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(TAG_COUNTS_MATCH).fetchone()[0] == 0
        # The imports' seconds have millisecond counts (the check above compared them).
        assert conn.execute("SELECT count(*) FROM contact_time_counts WHERE account_id = %s"
                            " AND unit = 'millisecond' AND tag = 'vip'", (api.account_id,)).fetchone()[0] > 0
        kept = conn.execute("SELECT sum(active) FROM contact_time_counts WHERE account_id = %s AND tag = ''"
                            " AND unit = 'hour'",
                            (api.account_id,)).fetchone()[0]
    assert kept == api.get("/api/v1/contacts").json()["total"] == 12 - 5 + 2 - 0 + 30 + 9 - 0


def test_tag_edits_keep_every_count_exact_and_leave_no_zero_rows(service: Service) -> None:
    """PATCHes of tags on imported contacts (seconds counted per millisecond), on members of a
    list and on opted-out contacts, beside a trashed one: the time counts, the tag index and
    the memberships' tags follow, and a tag no contact holds any more leaves no row behind."""
    api = service.client()
    csv = "phone,first_name,tags\n" + "".join(f"07160000{i:02d},I{i},{'vip;b' if i % 3 else 'b'}\n" for i in range(12))
    r = api.post("/api/v1/contacts/import", files={"file": ("c.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert r.status_code == 201 and r.json()["imported"] == 12
    made = [api.create_contact(f"07170000{i:02d}", tags=["vip", "a"])["id"] for i in range(4)]
    with psycopg.connect(service.container.database_url) as conn:
        imported = [str(r[0]) for r in conn.execute("SELECT id FROM contacts WHERE account_id = %s AND phone LIKE '+254716%%'"
                                               " ORDER BY phone", (api.account_id,))]
    listed = api.create_list("members")
    assert api.post(f"/api/v1/contact-lists/{listed['id']}/contacts",
                    json={"contactIds": [*imported[:6], *made[:2]]}).status_code == 200
    for contact_id in (imported[1], imported[4], made[1]):
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"isOptedOut": True}).status_code == 200
    assert api.delete(f"/api/v1/contacts/{made[3]}").status_code in (200, 204)
    edits = {imported[0]: ["solo-qzx"], imported[1]: ["b", "vip", "new"], imported[2]: [], imported[4]: ["vip"],
             imported[7]: ["b", "vip"], made[0]: ["a"], made[1]: ["vip", "solo2-qzx"], made[2]: []}
    for contact_id, tags in edits.items():
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"tags": tags, "lastName": "E"}).status_code == 200
    # The two lone tags go again: their counts fall to zero.
    assert api.patch(f"/api/v1/contacts/{imported[0]}", json={"tags": ["b"]}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{made[1]}", json={"tags": ["vip"]}).status_code == 200
    with psycopg.connect(service.container.database_url) as conn:
        assert conn.execute(COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(MILLISECOND_COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(TAG_COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM contact_time_counts WHERE account_id = %s AND unit = 'millisecond'"
                            " AND tag = 'new'", (api.account_id,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM contact_time_counts WHERE account_id = %s"
                            " AND (tag LIKE 'solo%%' OR (active <= 0 AND opted_out <= 0))",
                            (api.account_id,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM contact_list_memberships m JOIN contacts c ON c.id = m.contact_id"
                            " WHERE m.contact_tags <> c.tags").fetchone()[0] == 0
    assert api.get("/api/v1/contacts", params={"tags": "new"}).json()["total"] == 1
    assert api.get("/api/v1/contacts/tags").json() == ["a", "b", "new", "vip"]


def test_deep_pages_through_the_counts_equal_plain_offset_on_the_service(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contacts/bulk", json={"contacts": [
        {"phone": f"0714{i:06d}", "tags": ["vip"] if i % 3 else ["b", "vip"], "firstName": "Wanjiku" if i % 4 else "Amina"}
        for i in range(60)]})
    assert r.status_code == 201
    for i in range(15):
        api.create_contact(f"07150000{i:02d}")
    ids = [c["id"] for c in api.get("/api/v1/contacts", params={"pageSize": 100}).json()["contacts"]]
    for contact_id in ids[5:75:4]:
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"isOptedOut": True}).status_code == 200
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": ids[10:70:3]}).status_code == 200
    searches = [ContactFilter(search="wanjiku"), ContactFilter(search="0714"), ContactFilter(search="nobody"),
                ContactFilter(search="wanjiku", tags=["b"])]
    for flt in FILTERS + searches:
        for size in (1, 4, 25):
            assert _pages(service.container.pool, api.account_id, size, 0, flt) == \
                _pages(service.container.pool, api.account_id, size, PLAIN, flt), (flt, size)


def test_deep_pages_inside_one_big_import_start_at_its_millisecond_and_keep_file_order(service: Service) -> None:
    """An import's rows are a microsecond apart, so one import fills one second or two. Its
    deep pages start at the millisecond of their first contact (the counts imports keep per
    millisecond), and show the file's rows in order, whatever the filter; the counts stay exact
    through contacts created one by one around the import and changes to the imported ones."""
    from query.contacts import _time_anchor
    from query.tenancy import SNAPSHOT, tenant_transaction

    api = service.client()
    singles = [api.create_contact(f"07230000{i:02d}", tags=["vip"])["id"] for i in range(3)]
    rows = 2_500  # three batches of the import
    csv = "phone,tags,opted_out\n" + "".join(
        f"0722{i:06d},{'vip' if i % 3 else 'b'}{';only-qzx' if i == 1200 else ''},{'yes' if i % 7 == 0 else 'no'}\n"
        for i in range(rows))
    r = api.post("/api/v1/contacts/import", files={"file": ("big.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert r.status_code == 201 and r.json()["imported"] == rows
    # Made now, in the second the import's last rows fill (their times are the import's start
    # less a microsecond per row), as contacts are while a long import runs.
    singles += [api.create_contact(f"07230001{i:02d}", tags=["vip"])["id"] for i in range(3)]
    imported = [c["id"] for c in api.get("/api/v1/contacts", params={"pageSize": 100, "page": 2}).json()["contacts"]]
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": imported[::9] + singles[:2]}).status_code == 200
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": imported[::18]}).status_code == 200
    for contact_id in imported[1:40:5]:
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"isOptedOut": True}).status_code == 200
    for contact_id in imported[2:40:6] + singles[3:]:
        assert api.patch(f"/api/v1/contacts/{contact_id}", json={"tags": ["b", "c"]}).status_code == 200
    # A tag only a purged contact had is gone from the millisecond counts too (docs/privacy.md).
    only = [c["id"] for c in api.get("/api/v1/contacts", params={"tags": "only-qzx"}).json()["contacts"]]
    assert len(only) == 1 and api.post("/api/v1/contacts/bulk-delete", json={"ids": only}).status_code == 200
    assert api.delete_json("/api/v1/contacts/trash", {"ids": only}).status_code == 200
    with psycopg.connect(service.container.database_url) as conn:
        assert conn.execute(COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(MILLISECOND_COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM contact_time_counts WHERE account_id = %s AND tag = ''"
                            " AND unit = 'millisecond'", (api.account_id,)).fetchone()[0] >= 3
        assert conn.execute("SELECT count(*) FROM contact_time_counts WHERE tag = 'only-qzx'").fetchone()[0] == 0
    pool = service.container.pool
    for flt in FILTERS:
        pages = _pages(pool, api.account_id, 25, 0, flt)
        assert pages == _pages(pool, api.account_id, 25, PLAIN, flt), flt
        # The imported rows among them (phones 0722…), in the file's order.
        phones = {c.id: c.phone for p in range(1, len(pages) + 1)
                  for c in page_contacts(pool, api.account_id, flt, p, 25, anchor_min_skip=0).contacts}
        shown = [int(phones[i][-6:]) for _, ids in pages for i in ids if phones[i].startswith("+254722")]
        assert shown == sorted(shown) and len(shown) > 100, flt
        # Every deep page skipped at most a millisecond's contacts in the index: a thousand
        # rows of the import (a second's would be up to all 2,500) and the few made one by one.
        total = pages[0][0]
        for offset in range(1_000, total - 25, 250):
            with tenant_transaction(pool, api.account_id, SNAPSHOT) as conn:
                anchor = _time_anchor(conn, api.account_id, flt, offset, total)
            assert anchor is not None and offset - anchor[1] <= 1_000 + len(singles), (flt, offset)


# --- any spread of creation times, straight into the read tables -------------------------

@pytest.fixture(scope="module")
def tables(postgres_server: str) -> Iterator[tuple[str, ConnectionPool]]:
    url = new_database(postgres_server)
    with psycopg.connect(url, autocommit=True) as conn:
        create_tables(conn)
    with ConnectionPool(url, min_size=1, max_size=2, open=True, kwargs={"autocommit": True}) as pool:
        yield url, pool


START = datetime(2026, 3, 1, 22, 59, 58, tzinfo=UTC)


def _copy_contacts(conn: psycopg.Connection, account: uuid.UUID, rows: list[tuple]) -> None:
    """Contacts straight into the read table: (created_at, trashed, opted out, tags) each."""
    with conn.cursor().copy("COPY contacts (id, account_id, phone, status, is_opted_out, tags, created_at,"
                            " updated_at, deleted_at) FROM STDIN") as copy:
        for i, (at, trashed, out, tags) in enumerate(rows):
            copy.write_row((uuid.uuid4(), account, f"+2547{i:08d}", "valid", out, tags, at, at,
                            at if trashed else None))
# Offsets in microseconds: bunched into a few seconds around an hour boundary, plus hours
# and days later, with exact ties (same microsecond).
MOMENTS = st.sampled_from([0, 1, 999, 1_000, 1_001, 999_999, 1_000_000, 1_500_000, 2_000_000, 2_000_001,
                           3_600_000_000, 3_601_000_000, 86_400_000_000]) | st.integers(0, 4_000_000)
#: Millisecond counts for the even seconds of an account's contacts, as an import would have
#: made them there (the odd seconds keep per-second counts only: both kinds side by side).
SPLIT_EVEN_SECONDS = """
INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
SELECT account_id, t.tag, 'millisecond', date_trunc('millisecond', created_at, 'UTC'), count(*),
       count(*) FILTER (WHERE is_opted_out)
FROM contacts CROSS JOIN LATERAL unnest(array_append(tags, '')) AS t(tag)
WHERE account_id = %s AND deleted_at IS NULL AND extract(epoch FROM date_trunc('second', created_at))::bigint %% 2 = 0
GROUP BY 1, 2, 3, 4"""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(MOMENTS, st.booleans(), st.booleans(), st.sampled_from([[], ["vip"], ["b", "vip"], ["b"]])),
                min_size=1, max_size=40), st.integers(1, 7), st.sampled_from(FILTERS), st.booleans())
def test_pages_from_the_counts_equal_plain_offset_for_any_times(tables: tuple[str, ConnectionPool],
                                                                 contacts: list, size: int,
                                                                 flt: ContactFilter, split: bool) -> None:
    url, pool = tables
    account = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        _copy_contacts(conn, account, [(START + timedelta(microseconds=micros), trashed, out, tags)
                                       for micros, trashed, out, tags in contacts])
        active = sum(1 for _, trashed, _, _ in contacts if not trashed)
        opted_out = sum(1 for _, trashed, out, _ in contacts if not trashed and out)
        conn.execute("INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (%s, %s, %s)",
                     (account, active, opted_out))
        for tag in ("vip", "b"):
            conn.execute("INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)"
                         " VALUES (%s, %s, %s, %s)",
                         (account, tag, sum(1 for _, trashed, _, tags in contacts if not trashed and tag in tags),
                          sum(1 for _, trashed, out, tags in contacts if not trashed and out and tag in tags)))
        # The counts as the schema fills them for contacts that predate them.
        conn.execute("DROP TABLE contact_time_counts")
        create_tables(conn)
        if split:
            conn.execute(SPLIT_EVEN_SECONDS, (account,))
        assert conn.execute(COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute(MILLISECOND_COUNTS_MATCH).fetchone()[0] == 0
    assert _pages(pool, account, size, 0, flt) == _pages(pool, account, size, PLAIN, flt)


def test_counts_that_do_not_add_up_are_not_used(tables: tuple[str, ConnectionPool]) -> None:
    url, pool = tables
    account = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        _copy_contacts(conn, account, [(START + timedelta(seconds=i // 10), False, False, []) for i in range(30)])
        conn.execute("INSERT INTO account_contact_counts (account_id, active) VALUES (%s, 30)", (account,))
        conn.execute("DROP TABLE contact_time_counts")
        create_tables(conn)
        expected = _pages(pool, account, 4, PLAIN)
        # A second's count lost (the hour no longer matches its seconds), then every count gone.
        conn.execute("DELETE FROM contact_time_counts WHERE account_id = %s AND unit = 'second'"
                     " AND bucket = (SELECT min(bucket) FROM contact_time_counts WHERE account_id = %s)",
                     (account, account))
        assert _pages(pool, account, 4, 0) == expected
        conn.execute("DELETE FROM contact_time_counts WHERE account_id = %s", (account,))
        assert _pages(pool, account, 4, 0) == expected


# --- a list's pages, from its memberships in list order ---------------------------------

MEMBERSHIPS_MATCH = """
SELECT count(*) FROM contact_list_memberships m JOIN contacts c ON c.id = m.contact_id
WHERE (m.contact_created_at, m.contact_active, m.contact_opted_out, m.contact_tags)
      IS DISTINCT FROM (c.created_at, c.deleted_at IS NULL, c.is_opted_out, c.tags)"""
#: Lists whose member counts differ from their active (and active, opted-out) members.
LIST_COUNTS_MATCH = """
SELECT count(*) FROM contact_lists l LEFT JOIN (
    SELECT m.list_id, count(*) AS members, count(*) FILTER (WHERE c.is_opted_out) AS opted_out
    FROM contact_list_memberships m JOIN contacts c ON c.id = m.contact_id AND c.deleted_at IS NULL GROUP BY 1
) x ON x.list_id = l.id
WHERE (l.contact_count, l.opted_out_count) IS DISTINCT FROM (coalesce(x.members, 0), coalesce(x.opted_out, 0))"""


def _list_oracle(database_url: str, account: uuid.UUID, list_id: str, opted_out: bool | None = None,
                 tags: tuple[str, ...] = ()) -> list:
    """The list's active members (opted out or not, with these tags, if asked), newest first,
    by the plain query over contacts."""
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT c.id FROM contacts c WHERE c.account_id = %s AND c.deleted_at IS NULL AND EXISTS"
            " (SELECT 1 FROM contact_list_memberships m WHERE m.list_id = %s AND m.contact_id = c.id)"
            " AND (%s::boolean IS NULL OR c.is_opted_out = %s) AND c.tags @> %s::text[]"
            " ORDER BY c.created_at DESC, c.id DESC", (account, list_id, opted_out, opted_out, list(tags))).fetchall()]


def test_list_pages_walk_the_memberships_and_equal_the_plain_query(service: Service) -> None:
    api = service.client()
    big, small, other = api.create_list("big"), api.create_list("small"), api.create_list("other")
    csv = "phone,tags\n" + "".join(f"07160000{i:02d},{'vip' if i % 3 else 'vip;b'}\n" for i in range(40))
    r = api.post("/api/v1/contacts/import", data={"listId": big["id"]},
                 files={"file": ("c.csv", io.BytesIO(csv.encode()), "text/csv")})
    assert r.status_code == 201 and r.json()["imported"] == 40
    made = [api.create_contact(f"07170000{i:02d}", listIds=[big["id"], small["id"]] if i % 2 else [small["id"]],
                               tags=["b"] if i % 4 else [])["id"] for i in range(20)]
    members = [c["id"] for c in api.get("/api/v1/contacts", params={"listId": big["id"], "pageSize": 100}).json()
               ["contacts"]]
    assert api.post(f"/api/v1/contact-lists/{other['id']}/contacts", json={"contactIds": members[:30]}).status_code == 200
    assert api.delete_json(f"/api/v1/contact-lists/{big['id']}/contacts", {"contactIds": members[5:9]}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{made[0]}", json={"listIds": [big["id"], other["id"]]}).status_code == 200
    # Opt-outs (and one opt-in) before the trashing, restoring and purging below touch some of them.
    for cid in members[0:40:3] + made[1:9:2]:
        assert api.patch(f"/api/v1/contacts/{cid}", json={"isOptedOut": True}).status_code == 200
    assert api.patch(f"/api/v1/contacts/{members[3]}", json={"isOptedOut": False}).status_code == 200
    for cid in members[1:40:5] + made[2:12:3]:  # tags changed, of members and of contacts added later
        assert api.patch(f"/api/v1/contacts/{cid}", json={"tags": ["b", "new"]}).status_code == 200
    assert api.post("/api/v1/contacts/bulk-delete", json={"ids": members[10:40:3] + made[1:6]}).status_code == 200
    assert api.post("/api/v1/contacts/trash/restore", json={"ids": members[10:20:3]}).status_code == 200
    assert api.delete_json("/api/v1/contacts/trash", {"ids": made[1:3]}).status_code == 200
    assert api.post(f"/api/v1/contact-lists/{other['id']}/contacts", json={"contactIds": made[6:12]}).status_code == 200
    assert api.delete(f"/api/v1/contact-lists/{small['id']}").status_code == 204
    database = service.container.database_url
    with psycopg.connect(database) as conn:
        assert conn.execute(MEMBERSHIPS_MATCH).fetchone()[0] == 0
        assert conn.execute(LIST_COUNTS_MATCH).fetchone()[0] == 0
    for lst in (big, other, small):
        for opted_out in (None, True, False):
            for tags in ((), ("b",), ("vip",), ("b", "new"), ("nobody",)):
                expected = _list_oracle(database, api.account_id, lst["id"], opted_out, tags)
                if lst is big and tags in ((), ("b",)):
                    assert expected, "the test should page through these members"
                flt = ContactFilter(list_id=uuid.UUID(lst["id"]), is_opted_out=opted_out, tags=list(tags))
                for size in (1, 4, 25):
                    pages = _pages(service.container.pool, api.account_id, size, PLAIN, flt)
                    case = (lst["name"], opted_out, tags, size)
                    assert [p[0] for p in pages] == [len(expected)] * len(pages), case
                    assert [i for _, ids in pages for i in ids] == expected, case
                http = api.get("/api/v1/contacts", params={
                    "listId": lst["id"], "pageSize": 100, **({"tags": ",".join(tags)} if tags else {}),
                    **({} if opted_out is None else {"isOptedOut": str(opted_out).lower()})})
                assert http.json()["total"] == len(expected)
                assert [uuid.UUID(c["id"]) for c in http.json()["contacts"]] == expected[:100]
    # Another account naming the list sees nothing, whatever the other filters.
    stranger = service.client()
    for extra in ({}, {"tags": "b"}, {"tags": "b", "isOptedOut": "false"}, {"isOptedOut": "true"}):
        seen = stranger.get("/api/v1/contacts", params={"listId": big["id"], **extra}).json()
        assert (seen["total"], seen["contacts"]) == (0, []), extra


def test_memberships_made_before_the_sort_columns_get_them_filled(tables: tuple[str, ConnectionPool]) -> None:
    url, pool = tables
    account, list_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO contact_lists (id, account_id, name, contact_count, created_at, updated_at)"
                     " VALUES (%s, %s, 'l', 0, now(), now())", (list_id, account))
        for i in range(12):
            at = START + timedelta(seconds=i * 700)
            contact = uuid.uuid4()
            conn.execute("INSERT INTO contacts (id, account_id, phone, status, created_at, updated_at, deleted_at,"
                         " tags) VALUES (%s, %s, %s, 'valid', %s, %s, %s, %s)",
                         (contact, account, f"+2547{i:08d}", at, at, at if i % 4 == 0 else None,
                          ["t"] if i % 2 else []))
            conn.execute("INSERT INTO contact_list_memberships (list_id, contact_id, account_id, added_at,"
                         " contact_created_at, contact_active, contact_opted_out, contact_tags) VALUES (%s, %s, %s,"
                         " now(), now(), true, true, '{}')",
                         (list_id, contact, account))
        conn.execute("UPDATE contact_lists SET contact_count = 9 WHERE id = %s", (list_id,))
        conn.execute("UPDATE contacts SET is_opted_out = true WHERE account_id = %s"
                     " AND (phone LIKE '%%1' OR phone LIKE '%%2')", (account,))  # 1, 2 and 11: active
        # As the tables were before: without the sort and state columns (and so without
        # their indexes), and without the lists' opted-out counts.
        conn.execute("ALTER TABLE contact_list_memberships DROP COLUMN contact_created_at, DROP COLUMN contact_active,"
                     " DROP COLUMN contact_opted_out, DROP COLUMN contact_tags")
        conn.execute("ALTER TABLE contact_lists DROP COLUMN opted_out_count")
        create_tables(conn)
        assert conn.execute(MEMBERSHIPS_MATCH).fetchone()[0] == 0
        assert conn.execute(LIST_COUNTS_MATCH).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname IN ('contact_list_memberships_order_v2',"
                            " 'contact_list_memberships_opted_order_v2')").fetchone()[0] == 2
    # Active: 1-3, 5-7, 9-11; opted out: 1, 2, 11; tagged: the odd ones.
    for opted_out, tags, n in ((None, [], 9), (True, [], 3), (False, [], 6), (None, ["t"], 6), (True, ["t"], 2)):
        expected = _list_oracle(url, account, str(list_id), opted_out, tuple(tags))
        assert len(expected) == n, (opted_out, tags)
        pages = _pages(pool, account, 2, PLAIN, ContactFilter(list_id=list_id, is_opted_out=opted_out, tags=tags))
        assert [i for _, ids in pages for i in ids] == expected


def test_tag_counts_made_before_opted_out_counts_get_them(tables: tuple[str, ConnectionPool]) -> None:
    """Older tables: the tag index without its opted-out counts, time counts with opted-out on tag '' only."""
    url, pool = tables
    account = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        _copy_contacts(conn, account, [(START + timedelta(seconds=i * 400), i % 5 == 0, i % 3 == 0,
                                        ["vip"] if i % 2 else ["vip", "b"]) for i in range(24)])
        conn.execute("INSERT INTO contact_tags (account_id, tag, contact_count) SELECT %s, t, count(*)"
                     " FROM contacts, unnest(tags) t WHERE account_id = %s AND deleted_at IS NULL GROUP BY t",
                     (account, account))
        conn.execute("ALTER TABLE contact_tags DROP COLUMN opted_out_count")
        conn.execute("UPDATE contact_time_counts SET opted_out = 0 WHERE tag <> ''")
        conn.execute("COMMENT ON TABLE contact_time_counts IS NULL")  # the first version had no comment
        create_tables(conn)
        # (The module's other tests leave accounts whose counts were made by hand.)
        assert conn.execute(TAG_COUNTS_MATCH + " AND account_id = %s", (account,)).fetchone()[0] == 0
        assert conn.execute(COUNTS_MATCH + " AND account_id = %s", (account,)).fetchone()[0] == 0
    for flt in (ContactFilter(tags=["b"], is_opted_out=True), ContactFilter(tags=["vip"], is_opted_out=False)):
        assert _pages(pool, account, 2, 0, flt) == _pages(pool, account, 2, PLAIN, flt)


def test_a_member_with_the_most_and_longest_tags_is_paged_by_tag(service: Service) -> None:
    """A hundred 64-character tags that do not compress (an index row holding them all would be
    too big for a b-tree): the membership keeps them, and the list's pages filter on them."""
    import secrets

    api = service.client()
    lst = api.create_list("many tags")
    tags = [secrets.token_hex(32) for _ in range(100)]
    contact = api.create_contact("0719000001", tags=tags, listIds=[lst["id"]])
    assert api.patch(f"/api/v1/contacts/{contact['id']}", json={"tags": list(reversed(tags))}).status_code == 200
    for wanted in ([tags[0]], tags[40:43], ["absent"]):
        page = api.get("/api/v1/contacts", params={"listId": lst["id"], "tags": ",".join(wanted)}).json()
        assert page["total"] == len(page["contacts"]) == (0 if wanted == ["absent"] else 1), wanted


def test_search_pages_equal_the_plain_query_whichever_way_they_are_found(service: Service) -> None:
    """A search's page is walked in order (common terms) or sorted from its matches (rare
    ones), chosen from its count; both give the plain query's page."""
    from query.contacts import walk_search

    api = service.client()
    names = ["Wanjiku"] * 30 + ["Achieng"] * 3 + ["Otieno"] * 27
    r = api.post("/api/v1/contacts/bulk", json={"contacts": [
        {"phone": f"0715{i:06d}", "firstName": name} for i, name in enumerate(names)]})
    assert r.status_code == 201
    assert walk_search(30, 60, 0, 5) and not walk_search(3, 60, 0, 5)  # both ways below
    with psycopg.connect(service.container.database_url) as conn:
        for term in ("wanjiku", "achieng", "0715"):
            expected = [row[0] for row in conn.execute(
                "SELECT id FROM contacts WHERE account_id = %s AND deleted_at IS NULL AND"
                " (search_name LIKE %s OR search_phone LIKE %s) ORDER BY created_at DESC, id DESC",
                (api.account_id, f"%{term}%", f"%{term.lstrip('0')}%" if term.isdigit() else "-")).fetchall()]
            pages = _pages(service.container.pool, api.account_id, 5, PLAIN, ContactFilter(search=term))
            assert [i for _, ids in pages for i in ids] == expected and expected, term


def _contacts_read(plan: dict) -> float:
    """Rows a plan (EXPLAIN ANALYZE, JSON) read from the contacts table, over all its loops."""
    here = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 0) if plan.get("Relation Name") == "contacts" else 0
    return here + sum(_contacts_read(child) for child in plan.get("Plans", []))


def test_a_batch_reads_only_the_contacts_of_a_second_it_is_first_to_count_even_without_statistics(
        fresh_database: str) -> None:
    """The first import into a new database runs before any ANALYZE. Its batches' millisecond
    counts read the contacts of a second no import counted yet, and nothing else (in the
    imports bench, a flat join planned without statistics walked every contact of the
    account for every batch; this small table does not reproduce that plan, it holds the
    statement to what it may read)."""
    from projections.counters import MILLISECOND_COUNTS

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        create_tables(conn)
    with psycopg.connect(fresh_database) as conn:  # one transaction, as a batch's rows and counts are
        account, second, earlier = uuid.uuid4(), START, START - timedelta(seconds=10)
        with conn.cursor().copy("COPY contacts (id, account_id, first_name, last_name, phone, email, status,"
                                " created_at, updated_at, search_name, search_phone) FROM STDIN") as copy:
            for n in range(50_000):  # 25,000 contacts in each second, a microsecond apart, as an import's
                at = (second if n < 25_000 else earlier) + timedelta(milliseconds=500, microseconds=-(n % 25_000))
                copy.write_row((uuid.uuid4(), account, "Wanjiru", "Otieno", f"+2547{n:08d}",
                                f"wanjiru.otieno{n}@example.com", "valid", at, at, "wanjiru otieno", f"2547{n:08d}"))

        def batch_reads(bucket: datetime) -> float:
            params = {"account": account, "tags": [""], "buckets": [bucket], "active": [1], "opted": [0]}
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + MILLISECOND_COUNTS, params).fetchone()[0]
            return _contacts_read(plan[0]["Plan"])

        bucket = second + timedelta(milliseconds=480)
        assert batch_reads(bucket) == 25_000  # the first batch there counts its second whole: that second only
        assert batch_reads(bucket) == 0  # the next batches add their own counts, reading no contact
        counted = conn.execute("SELECT sum(active) FROM contact_time_counts WHERE account_id = %s AND tag = ''"
                               " AND unit = 'millisecond'", (account,)).fetchone()[0]
        assert counted == 25_000 + 1  # the second's contacts, then the second batch's own count

"""Cursor pages and sorting of GET /contacts: every order, stable under inserts, refused when tampered with."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.support import AccountClient, Service

FIRST = ["anna", "Bob", None, "carl", "anna", None, "Dora", "bob", "eve", None, "Anna"]
LAST = ["Zulu", None, "young", "Xavier", None, "walker", "Walker", None, "a", "b", "c"]


def _seed(api: AccountClient, tags: list[str] | None = None) -> list[dict]:
    made = []
    for i, (first, last) in enumerate(zip(FIRST, LAST)):
        made.append(api.create_contact(f"+2547120{(i * 7919) % 100000:05d}", firstName=first, lastName=last,
                                       tags=tags or []))
    # updatedAt differs from createdAt order: touch every third contact, oldest first.
    for c in made[::3]:
        assert api.patch(f"/api/v1/contacts/{c['id']}", json={"notes": "touched"}).status_code == 200
    return [api.get(f"/api/v1/contacts/{c['id']}").json() for c in made]


def _expected(contacts: list[dict], sort: str) -> list[str]:
    field, descending = sort.lstrip("-"), sort.startswith("-")

    def key(c: dict) -> Any:
        value = c[field]
        return value.lower() if isinstance(value, str) and field in ("firstName", "lastName") else value

    named = sorted((c for c in contacts if key(c) is not None), key=lambda c: (key(c), uuid.UUID(c["id"])),
                   reverse=descending)
    unnamed = sorted((c for c in contacts if key(c) is None), key=lambda c: uuid.UUID(c["id"]), reverse=descending)
    return [c["id"] for c in named + unnamed]


def _walk(api: AccountClient, params: dict[str, Any], follow_link: bool = False) -> list[str]:
    ids, cursor, pages = [], None, 0
    while True:
        r = api.get("/api/v1/contacts", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [c["id"] for c in body["contacts"]]
        cursor = body["nextCursor"]
        pages += 1
        assert body["page"] == (1 if pages == 1 and "cursor" not in params else None)
        if cursor is None:
            assert "link" not in r.headers
            return ids
        assert r.headers["Link"].endswith('>; rel="next"') and f"cursor={cursor}" in r.headers["Link"]
        if follow_link:
            link = r.headers["Link"][1:r.headers["Link"].index(">")]
            assert "page=" not in link
            followed = api.get(link)
            assert followed.status_code == 200 and followed.json()["contacts"] == api.get(
                "/api/v1/contacts", params={**params, "cursor": cursor}).json()["contacts"]


@pytest.mark.parametrize("sort", ["createdAt", "-createdAt", "updatedAt", "-updatedAt", "firstName", "-firstName",
                                  "lastName", "-lastName", "phone", "-phone"])
def test_cursor_walk_gives_every_contact_once_in_the_sort_order(service: Service, sort: str) -> None:
    api = service.client()
    contacts = _seed(api)
    expected = _expected(contacts, sort)
    assert _walk(api, {"sort": sort, "pageSize": 3}, follow_link=True) == expected
    # Offset pages in the same order agree, also across the named / unnamed boundary.
    by_page = []
    for page in range(1, 5):
        body = api.get("/api/v1/contacts", params={"sort": sort, "pageSize": 3, "page": page}).json()
        assert body["total"] == len(contacts) and body["page"] == page
        by_page += [c["id"] for c in body["contacts"]]
    assert by_page == expected


def test_default_order_is_newest_first_and_its_offset_pages_give_a_cursor(service: Service) -> None:
    api = service.client()
    contacts = _seed(api)
    newest_first = _expected(contacts, "-createdAt")
    assert _walk(api, {"pageSize": 4}) == newest_first
    second = api.get("/api/v1/contacts", params={"page": 2, "pageSize": 4}).json()
    assert [c["id"] for c in second["contacts"]] == newest_first[4:8]
    after = api.get("/api/v1/contacts", params={"pageSize": 4, "cursor": second["nextCursor"]}).json()
    assert [c["id"] for c in after["contacts"]] == newest_first[8:]
    assert after["nextCursor"] is None and after["page"] is None and after["total"] == len(contacts)


def test_cursor_pages_are_stable_under_concurrent_inserts(service: Service) -> None:
    api = service.client()
    contacts = _seed(api)
    first = api.get("/api/v1/contacts", params={"pageSize": 4}).json()
    oldest_first = api.get("/api/v1/contacts", params={"pageSize": 4, "sort": "createdAt"}).json()
    added = [api.create_contact(f"+25473300000{i}")["id"] for i in range(3)]  # newer than every page
    seen = [c["id"] for c in first["contacts"]]
    cursor = first["nextCursor"]
    while cursor:
        body = api.get("/api/v1/contacts", params={"pageSize": 4, "cursor": cursor}).json()
        seen += [c["id"] for c in body["contacts"]]
        cursor = body["nextCursor"]
    assert seen == _expected(contacts, "-createdAt")  # nothing repeated, nothing skipped, nothing new
    rest = _walk(api, {"pageSize": 4, "sort": "createdAt", "cursor": oldest_first["nextCursor"]})
    assert [c["id"] for c in oldest_first["contacts"]] + rest == _expected(contacts, "createdAt") + added


def test_filters_walk_by_cursor(service: Service) -> None:
    api = service.client()
    contacts = _seed(api, tags=["vip"])
    news = api.create_list("news")
    members = [c["id"] for c in contacts[::2]]
    api.post(f"/api/v1/contact-lists/{news['id']}/contacts", json={"contactIds": members})
    contacts = [api.get(f"/api/v1/contacts/{c['id']}").json() for c in contacts]
    in_list = [c for c in contacts if c["id"] in members]
    for sort in ("-createdAt", "createdAt", "firstName", "-phone"):
        assert _walk(api, {"listId": news["id"], "sort": sort, "pageSize": 2}) == _expected(in_list, sort), sort
        assert _walk(api, {"listId": news["id"], "tags": "vip", "sort": sort, "pageSize": 2}) \
            == _expected(in_list, sort), sort
        assert _walk(api, {"tags": "vip", "sort": sort, "pageSize": 4}) == _expected(contacts, sort), sort
        annas = [c for c in contacts if (c["firstName"] or "").lower() == "anna"]
        assert _walk(api, {"search": "anna", "sort": sort, "pageSize": 1}) == _expected(annas, sort), sort
    foreign = service.client()
    assert foreign.get("/api/v1/contacts", params={"listId": news["id"], "sort": "createdAt"}).json() == {
        "contacts": [], "total": 0, "page": 1, "pageSize": 25, "nextCursor": None}


def _tamper(cursor: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[len(raw) // 2] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def _refused(api: AccountClient, params: dict[str, Any], field: str, words: str) -> None:
    r = api.get("/api/v1/contacts", params=params)
    assert r.status_code == 422, (params, r.text)
    body = r.json()
    assert body["error"] == "validation_failed" and body["errors"][0]["field"] == field, body
    assert words in body["message"], body


def test_bad_cursors_and_sorts_are_422_naming_the_field(service: Service) -> None:
    api = service.client()
    _seed(api)
    cursor = api.get("/api/v1/contacts", params={"pageSize": 2, "sort": "firstName", "tags": "x,y"}).json()
    assert cursor["nextCursor"] is None  # nothing matches both tags
    cursor = api.get("/api/v1/contacts", params={"pageSize": 2, "sort": "firstName"}).json()["nextCursor"]
    _refused(api, {"sort": "firstName", "cursor": _tamper(cursor)}, "cursor", "altered")
    _refused(api, {"sort": "firstName", "cursor": cursor[:-3]}, "cursor", "altered")
    _refused(api, {"sort": "firstName", "cursor": "abc"}, "cursor", "altered")
    _refused(api, {"sort": "-firstName", "cursor": cursor}, "cursor", "sort=firstName")
    _refused(api, {"cursor": cursor}, "cursor", "sort=firstName")
    _refused(api, {"sort": "firstName", "cursor": cursor, "isOptedOut": "false"}, "cursor", "other filters")
    _refused(api, {"sort": "firstName", "cursor": cursor, "search": "anna"}, "cursor", "other filters")
    _refused(api, {"sort": "firstName", "cursor": cursor, "page": 2}, "cursor", "not both")
    _refused(api, {"sort": "firstName", "cursor": "not base64!"}, "cursor", "")
    _refused(api, {"sort": "email"}, "sort", "")
    _refused(api, {"sort": "firstname"}, "sort", "")
    # A cursor of another account's service key holds no meaning here, and another account's
    # cursor says nothing about this account (its ids only position the walk).
    other = service.client()
    body = other.get("/api/v1/contacts", params={"sort": "firstName", "cursor": cursor}).json()
    assert body["contacts"] == [] and body["total"] == 0
    ok = api.get("/api/v1/contacts", params={"pageSize": 2, "sort": "firstName", "cursor": cursor})
    assert ok.status_code == 200 and len(ok.json()["contacts"]) == 2


def test_the_openapi_document_describes_sort_cursor_and_next_cursor(service: Service) -> None:
    doc = service.anonymous().get("/schema/openapi.json").json()
    operation = doc["paths"]["/api/v1/contacts"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    for name in ("sort", "cursor", "page"):
        assert params[name]["description"], name
    for name in ("sort", "cursor"):
        assert params[name]["examples"], name
    assert "lastName" in params["sort"]["schema"]["enum"] and "-phone" in params["sort"]["schema"]["enum"]
    assert operation["responses"]["200"]["headers"]["Link"]["description"]
    schemas = doc["components"]["schemas"]
    page = schemas[operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert page["properties"]["nextCursor"]["description"] and page["properties"]["nextCursor"]["examples"]

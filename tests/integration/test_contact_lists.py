"""Contact list endpoints through HTTP, against real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.support import Service


def test_create_list_returns_201_with_the_list(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contact-lists", json={"name": "VIP Customers", "description": "Over KES 10,000"})
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "VIP Customers"
    assert body["description"] == "Over KES 10,000"
    assert body["contactCount"] == 0
    uuid.UUID(body["id"])
    assert body["createdAt"].endswith("Z")


def test_list_is_visible_immediately_after_create_in_a_loop(service: Service) -> None:
    api = service.client()
    for i in range(25):
        created = api.create_list(f"List {i}")
        listed = api.get("/api/v1/contact-lists").json()
        assert created["id"] in [item["id"] for item in listed]
    assert len(api.get("/api/v1/contact-lists").json()) == 25


def test_description_is_optional(service: Service) -> None:
    api = service.client()
    assert api.create_list("Newsletter")["description"] is None


def test_missing_or_empty_name_is_422_naming_the_field(service: Service) -> None:
    api = service.client()
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": 5}):
        r = api.post("/api/v1/contact-lists", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["field"] == "name"
    assert api.get("/api/v1/contact-lists").json() == []


def test_unknown_field_is_rejected(service: Service) -> None:
    api = service.client()
    r = api.post("/api/v1/contact-lists", json={"name": "A", "colour": "red"})
    assert r.status_code == 422
    assert "colour" in r.text


@pytest.mark.parametrize("body", [b"{not json", b'{"name": "ab', b'{"name": "\\ud800"}'])
def test_malformed_json_is_400(service: Service, body: bytes) -> None:
    api = service.client()
    r = api.post("/api/v1/contact-lists", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "malformed_body"
    assert r.json()["message"].startswith("the request body is not valid JSON")
    assert api.get("/api/v1/contact-lists").json() == []


@pytest.mark.parametrize("path", ["/api/v1/contact-lists", "/api/v1/contacts", "/api/v1/contacts/bulk",
                                  "/api/v1/contacts/bulk-delete"])
def test_json_nested_too_deeply_is_400_and_writes_nothing(service: Service, path: str) -> None:
    api = service.client()
    for body in (b"[" * 1000 + b"]" * 1000, b'{"name": "x", "phone": "+254712000001", "firstName": '
                 + b"[" * 3000 + b"]" * 3000 + b"}"):
        r = api.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "malformed_body" and "nested too deeply" in r.json()["message"]
    assert api.get("/api/v1/contact-lists").json() == []
    assert api.get("/api/v1/contacts").json()["total"] == 0


@pytest.mark.parametrize("path", ["/api/v1/contact-lists", "/api/v1/contacts", "/api/v1/contacts/bulk"])
def test_an_empty_body_is_400_saying_it_is_empty(service: Service, path: str) -> None:
    r = service.client().post(path)
    assert r.status_code == 400
    assert r.json() == {"status": 400, "error": "malformed_body",
                        "message": "the request body is empty: send a JSON object"}


def test_patch_changes_only_the_fields_sent(service: Service) -> None:
    api = service.client()
    created = api.create_list("Old", description="keep me")
    r = api.patch(f"/api/v1/contact-lists/{created['id']}", json={"name": "New"})
    assert r.status_code == 200
    assert r.json()["name"] == "New"
    assert r.json()["description"] == "keep me"
    assert r.json()["createdAt"] == created["createdAt"]
    r = api.patch(f"/api/v1/contact-lists/{created['id']}", json={"description": None})
    assert r.json()["description"] is None and r.json()["name"] == "New"
    assert api.get("/api/v1/contact-lists").json()[0]["name"] == "New"


def test_patch_with_empty_name_is_422_and_changes_nothing(service: Service) -> None:
    api = service.client()
    created = api.create_list("Keep")
    r = api.patch(f"/api/v1/contact-lists/{created['id']}", json={"name": ""})
    assert r.status_code == 422
    assert api.get("/api/v1/contact-lists").json()[0]["name"] == "Keep"


def test_delete_list_answers_204_and_removes_it(service: Service) -> None:
    api = service.client()
    keep, gone = api.create_list("Keep"), api.create_list("Gone")
    r = api.delete(f"/api/v1/contact-lists/{gone['id']}")
    assert r.status_code == 204
    assert [item["id"] for item in api.get("/api/v1/contact-lists").json()] == [keep["id"]]
    assert api.delete(f"/api/v1/contact-lists/{gone['id']}").status_code == 404
    assert api.patch(f"/api/v1/contact-lists/{gone['id']}", json={"name": "x"}).status_code == 404


def test_unknown_list_id_is_404(service: Service) -> None:
    api = service.client()
    missing = uuid.uuid4()
    assert api.patch(f"/api/v1/contact-lists/{missing}", json={"name": "x"}).status_code == 404
    assert api.delete(f"/api/v1/contact-lists/{missing}").status_code == 404
    r = api.post(f"/api/v1/contact-lists/{missing}/contacts", json={"contactIds": []})
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_adding_to_a_deleted_list_or_to_a_contact_id_is_404_and_a_list_id_is_no_contact(service: Service) -> None:
    """The list and the contacts of a list-add are loaded by id in one query: only a list of
    the account that is not deleted takes members, and only contacts are counted as added."""
    api = service.client()
    contact = api.create_contact("+254 712 300 800")
    gone, kept = api.create_list("Gone"), api.create_list("Kept")
    api.delete(f"/api/v1/contact-lists/{gone['id']}")
    for target in (gone["id"], contact["id"]):
        r = api.post(f"/api/v1/contact-lists/{target}/contacts", json={"contactIds": [contact["id"]]})
        assert r.status_code == 404 and r.json()["error"] == "not_found", target
    r = api.post(f"/api/v1/contact-lists/{kept['id']}/contacts", json={"contactIds": [kept["id"], contact["id"]]})
    assert r.json() == {"added": 1}
    assert api.get(f"/api/v1/contacts/{contact['id']}").json()["listIds"] == [kept["id"]]
    assert api.get(f"/api/v1/contact-lists/{kept['id']}").json()["contactCount"] == 1


def test_another_accounts_list_is_404_and_unchanged(service: Service) -> None:
    owner, intruder = service.client(), service.client()
    theirs = owner.create_list("Theirs")
    assert intruder.get("/api/v1/contact-lists").json() == []
    assert intruder.patch(f"/api/v1/contact-lists/{theirs['id']}", json={"name": "Mine"}).status_code == 404
    assert intruder.delete(f"/api/v1/contact-lists/{theirs['id']}").status_code == 404
    assert owner.get("/api/v1/contact-lists").json()[0]["name"] == "Theirs"

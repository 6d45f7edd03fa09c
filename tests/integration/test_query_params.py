"""Unknown query parameters: a 422 naming them, on every endpoint, as for unknown body fields."""

from __future__ import annotations

from tests.support import Service


def test_unknown_query_parameter_on_contacts_is_422_naming_it(service: Service) -> None:
    api = service.client()
    r = api.get("/api/v1/contacts", params={"limit": 2, "pageSize": 5})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_failed"
    assert body["errors"] == [{"field": "limit", "reason": "unknown query parameter"}]
    assert "limit" in body["message"] and "pageSize" in body["message"]


def test_every_unknown_parameter_is_named_and_known_ones_still_work(service: Service) -> None:
    api = service.client()
    r = api.get("/api/v1/contacts", params={"zeta": 1, "alpha": 2, "page": 1})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["alpha", "zeta"]
    ok = api.get("/api/v1/contacts", params={"page": 1, "pageSize": 5, "search": "x", "isOptedOut": "false"})
    assert ok.status_code == 200, ok.text


def test_unknown_query_parameter_is_422_on_other_endpoints(service: Service) -> None:
    api = service.client()
    lst = api.create_list("Q")
    for path in ("/api/v1/contact-lists", f"/api/v1/contact-lists/{lst['id']}/history", "/api/v1/contacts/tags",
                 "/api/v1/contacts/trash", "/api/v1/contacts/export"):
        r = api.get(path, params={"bogus": "1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "bogus", (path, r.text)
    r = api.post("/api/v1/contacts?dryRun=true", json={"phone": "0712345678"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dryRun"
    assert api.get("/api/v1/contacts", params={"search": "nobody"}).json()["total"] == 0
    assert service.anonymous().get("/health", params={"x": 1}).status_code == 200  # probes: the API only


def test_an_export_accepts_its_filters(service: Service) -> None:
    api = service.client()
    r = api.get("/api/v1/contacts/export", params={"tags": "vip", "search": "a", "isOptedOut": "true"})
    assert r.status_code == 200, r.text

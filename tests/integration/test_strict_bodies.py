"""Values must have the types the OpenAPI document gives them: no lenient conversions (found by `make fuzz`)."""

from __future__ import annotations

from tests.support import Service


def _refused(response, field: str) -> None:  # noqa: ANN001
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed" and body["errors"][0]["field"] == field, body


def test_a_boolean_sent_as_a_number_or_a_string_is_422_naming_the_field_and_writes_nothing(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("0712000902")
    for value in (0, 1, "false", "true"):
        _refused(api.post("/api/v1/contacts", json={"phone": "0712000901", "isOptedOut": value}), "isOptedOut")
        _refused(api.patch(f"/api/v1/contacts/{contact['id']}", json={"isOptedOut": value}), "isOptedOut")
        _refused(api.post("/api/v1/contacts/bulk-tag", json={"tags": ["x"], "filter": {"isOptedOut": value}}),
                 "filter.isOptedOut")
        _refused(api.post("/api/v1/contacts/bulk-opt-out", json={"filter": {"all": value}}), "filter.all")
        _refused(api.post("/api/v1/contacts/bulk", json={"contacts": [{"phone": "0712000903", "isOptedOut": value}]}),
                 "contacts[0].isOptedOut")
    # Nothing was written, and the same requests with booleans are taken.
    assert api.get("/api/v1/contacts").json()["total"] == 1
    now = api.get(f"/api/v1/contacts/{contact['id']}")
    assert (now.json()["isOptedOut"], now.json()["tags"], now.headers["ETag"]) == (False, [], '"1"')
    assert api.post("/api/v1/contacts", json={"phone": "0712000901", "isOptedOut": True}).json()["isOptedOut"] is True
    assert api.post("/api/v1/contacts/bulk-tag", json={"tags": ["x"], "filter": {"isOptedOut": False}}).json() \
        == {"tagged": 1}


def test_as_of_must_be_an_rfc3339_time_not_a_bare_number(service: Service) -> None:
    api = service.client()
    contact = api.create_contact("0712000904")
    path = f"/api/v1/contacts/{contact['id']}"
    _refused(api.get(path, params={"asOf": "25860154152"}), "asOf")  # was read as a Unix time (the year 2789)
    assert api.get(path, params={"asOf": "2999-01-01T00:00:00Z"}).json()["id"] == contact["id"]

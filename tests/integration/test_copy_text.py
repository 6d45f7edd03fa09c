"""Imported text reaches the read table through the projector's own COPY text unchanged."""

from __future__ import annotations

import csv
import io

from tests.support import Service


def test_imported_text_with_copy_special_characters_reads_back_exactly(service: Service) -> None:
    """The projector writes COPY text itself: backslashes, tabs, newlines, CRs and quotes survive."""
    api = service.client()
    first, last, notes = 'Back\\slash "Q"', "Tab\there", "line one\nline two\r\nthree \\N"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["phone", "first_name", "last_name", "notes", "tags"])
    writer.writerow(["0712 300 001", first, last, notes, 'quo"te; back\\slash; {brace}'])
    r = api.post("/api/v1/contacts/import", files={"file": ("special.csv", out.getvalue().encode())})
    assert r.status_code == 201, r.text
    contacts = api.get("/api/v1/contacts", params={"search": "back\\slash"}).json()["contacts"]
    assert len(contacts) == 1
    got = contacts[0]
    assert (got["firstName"], got["lastName"], got["notes"]) == (first, last, notes)
    assert sorted(got["tags"]) == sorted(['quo"te', "back\\slash", "{brace}"])
    assert got["phone"] == "+254712300001" and got["status"] == "valid"

"""Imports run in the API's threads for as long as they last: many at once must not keep other requests waiting."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service import import_jobs
from tests.support import Service
from tests.waits import Held, wait_until

IMPORTS = 8  # more than the loop's executor has threads on two cores (min(32, cores + 4) = 6)


def test_reads_and_list_changes_answer_while_many_imports_run(service: Service,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each import holds a thread for as long as it runs, seconds to minutes. They held threads of the
    loop's executor, which runs every sync handler (GET /contacts, a list change by filter, ...): six
    on two cores, so six imports in progress kept every such request waiting for one to end, and a
    seventh import too. Here eight imports are held at their start (the real function runs once they
    are let go) while an account reads its contacts and changes a list by filter."""
    imports = Held(monkeypatch, import_jobs, "import_json")
    clients = [service.client() for _ in range(IMPORTS)]
    body = {"contacts": [{"phone": "+254712000001"}]}
    with ThreadPoolExecutor(IMPORTS) as pool:
        answers = [pool.submit(api.post, "/api/v1/contacts/bulk", json=body) for api in clients]
        try:
            wait_until(lambda: imports.calls == IMPORTS, lambda: f"{imports.calls} of {IMPORTS} imports running",
                       timeout=20)
            api = service.client()
            api.create_contact("+254712000002", tags=["vip"])
            r = api.http.get("/api/v1/contacts", timeout=10)
            assert r.status_code == 200 and r.json()["total"] == 1, r.text
            list_id = api.post("/api/v1/contact-lists", json={"name": "VIP"}).json()["id"]
            r = api.http.post(f"/api/v1/contact-lists/{list_id}/contacts", json={"filter": {"tags": ["vip"]}},
                              timeout=10)
            assert r.status_code == 200, r.text
            assert r.json() == {"added": 1}
        finally:
            imports.release()
        assert [a.result().status_code for a in answers] == [201] * IMPORTS

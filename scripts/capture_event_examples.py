"""Record one real NATS message per event type into events/asyncapi_examples.json (the AsyncAPI examples).

Runs the service on embedded PostgreSQL and NATS in a temporary directory, makes the
requests a user would (lists, Kenyan and Nigerian contacts, a CSV import, an import that
fails part-way, an inbound STOP, trash, restore, purge, a select-all
bulk job that completes and one that fails), reads the stream and keeps the
first message of each type as it was published, with its subject and ``Nats-Msg-Id``.
Subjects are shown with the default prefix ``contacts``. Run it again after changing the
event contract: ``.venv/bin/python scripts/capture_event_examples.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.embedded import EmbeddedNats, EmbeddedPostgres  # noqa: E402
from tests.support import read_stream, start_service  # noqa: E402

OUTPUT = Path(__file__).resolve().parents[1] / "events" / "asyncapi_examples.json"
INBOUND = {"from": "+254712345678", "body": "STOP", "messageId": "ATXid_4f2a9c1e7b"}


async def _publish(url: str, subject: str, body: dict) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().publish(subject, json.dumps(body).encode())
    await nc.close()


def _wait(condition, timeout: float = 20) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the service")
        time.sleep(0.1)


def _bulk_jobs(api) -> None:  # noqa: ANN001
    """A select-all tag over 1,001 contacts (a job that completes), and one whose list goes mid-way (fails)."""
    promo = [{"phone": f"+2547101{i:05d}", "tags": ["promo"]} for i in range(1001)]
    api.post("/api/v1/contacts/bulk", json={"contacts": promo})
    job = api.post("/api/v1/contacts/bulk-tag", json={"tags": ["may-sale"], "filter": {"tags": ["promo"]}})
    assert job.status_code == 202, job.text
    _wait(lambda: api.get(job.headers["location"]).json()["status"] == "completed", timeout=120)
    for _ in range(5):  # the list is deleted while the job runs: it fails, saying why
        doomed = api.create_list("Flash sale")
        job = api.post(f"/api/v1/contact-lists/{doomed['id']}/contacts", json={"filter": {"tags": ["promo"]}})
        assert job.status_code == 202, job.text
        api.delete(f"/api/v1/contact-lists/{doomed['id']}")
        _wait(lambda: api.get(job.headers["location"]).json()["status"] in ("completed", "failed"), timeout=120)
        if api.get(job.headers["location"]).json()["status"] == "failed":
            return


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="capture-events-") as tmp:
        pg, server = EmbeddedPostgres(Path(tmp) / "pg"), EmbeddedNats(Path(tmp) / "nats")
        svc = start_service(pg.start(), nats_url := server.start(), import_max_record_chars=200)
        try:
            api = svc.client(sub="jane@shop.co.ke")
            vip = api.create_list("VIP Customers", description="Customers who spend over KES 10,000/month")
            api.patch(f"/api/v1/contact-lists/{vip['id']}", json={"name": "VIP Customers (Nairobi)"})
            john = api.create_contact("0712 345 678", firstName="John", lastName="Doe", email="john@example.com",
                                      tags=["VIP", "nairobi"], listIds=[vip["id"]])
            api.patch(f"/api/v1/contacts/{john['id']}", json={"phone": "0733 000 001", "notes": "Prefers Swahili",
                                                              "tags": ["vip", "mombasa"]})
            api.patch(f"/api/v1/contacts/{john['id']}", json={"listIds": []})
            api.post(f"/api/v1/contact-lists/{vip['id']}/contacts", json={"contactIds": [john["id"]]})
            asyncio.run(_publish(nats_url, f"{svc.settings.inbound_subject}.{api.account_id}",
                                 {**INBOUND, "from": "+254733000001"}))
            _wait(lambda: api.get(f"/api/v1/contacts/{john['id']}").json()["isOptedOut"])
            api.patch(f"/api/v1/contacts/{john['id']}", json={"isOptedOut": False})
            csv = "phone,first_name,last_name,email\n+234 803 123 4567,Ngozi,Okafor,ngozi.okafor@example.com.ng\n" \
                  "0803 765 4321,Emeka,Eze,\n12345,Bad,Number,\n"
            api.post("/api/v1/contacts/import", files={"file": ("lagos-customers.csv", csv.encode())},
                     data={"region": "NG", "listId": vip["id"]})
            too_long = "phone,notes\n0722 111 222,ok\n" + "0722 111 333," + "x" * 300 + "\n"
            api.post("/api/v1/contacts/import", files={"file": ("export-with-long-notes.csv", too_long.encode())})
            amina = api.create_contact("0722 000 111", firstName="Amina", lastName="Wanjiru")
            api.delete(f"/api/v1/contacts/{amina['id']}")
            api.post("/api/v1/contacts/trash/restore", json={"ids": [amina["id"]]})
            api.delete(f"/api/v1/contacts/{amina['id']}")
            api.delete_json("/api/v1/contacts/trash", {"ids": [amina["id"]]})
            api.delete(f"/api/v1/contact-lists/{vip['id']}")
            _bulk_jobs(api)
            svc.wait_for_relay()
            prefix = svc.settings.nats_subject_prefix
            messages = asyncio.run(read_stream(nats_url, svc.settings.nats_stream, f"{prefix}.{api.account_id}.>"))
        finally:
            svc.close()
            server.stop()
            pg.stop("immediate")
    examples: dict[str, dict] = {}
    for msg in messages:
        payload = json.loads(msg.data)
        examples.setdefault(payload["type"], {"subject": "contacts" + msg.subject[len(prefix):],
                                              "headers": {"Nats-Msg-Id": msg.headers["Nats-Msg-Id"]},
                                              "payload": payload})
    examples["inbound"] = {"subject": f"sms.inbound.{api.account_id}", "payload": INBOUND}
    OUTPUT.write_text(json.dumps(dict(sorted(examples.items())), indent=1, ensure_ascii=False) + "\n")
    print(f"{len(examples)} examples written to {OUTPUT}")


if __name__ == "__main__":
    main()

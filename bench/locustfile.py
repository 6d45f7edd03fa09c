"""Locust users for the write benchmark (run headless by ``bench/writes.py``, never by the tests).

Each user is one client in a closed loop, with no think time:

1. ``POST /api/v1/contacts`` with a phone no other request uses (Kenyan mobiles,
   ``+254 7xx`` plus six digits);
2. at once, ``GET /api/v1/contacts/{id}`` of the contact just created: read-your-writes,
   which must see it (the write answered only after the projections applied it);
3. ``PATCH /api/v1/contacts/{id}`` (names and tags);
4. ``POST /api/v1/contact-lists/{id}/contacts`` with that one contact.

Settings come from the environment: ``BENCH_TOKEN`` (bearer token), ``BENCH_LIST_IDS``
(comma-separated), ``BENCH_PHONE_OFFSET`` (first phone serial, so two runs against one
account use different numbers) and ``BENCH_TIMINGS`` (where every request's timing is written as JSON
when locust quits, so the benchmark computes exact percentiles itself).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time

from locust import FastHttpUser, events, task
from locust.exception import RescheduleTask

PREFIXES = ("712", "722", "733", "710", "711", "720", "723")  # Kenyan mobile ranges phonenumbers knows
FIRST = ("Amina", "Baraka", "Wanjiru", "Otieno", "Fatuma", "Kamau", "Achieng", "Mutua")
LAST = ("Otieno", "Mwangi", "Kamau", "Njoroge", "Wanjiku", "Kiprop", "Chebet", "Juma")
TAGS = ("vip", "nairobi", "newsletter", "promo", "retail", "b2b")

# One locust process: unique across all its users; each run of the benchmark passes its own offset.
_serials = itertools.count(int(os.environ.get("BENCH_PHONE_OFFSET", "0")))
_requests: list[list] = []  # [name, start epoch s, response ms, ok, status]
_cycles: list[list] = []  # [start epoch s, POST ms, GET ms, POST→GET-seen ms, visible]


def next_phone() -> str:
    serial = next(_serials)
    prefix = PREFIXES[serial // 1_000_000 % len(PREFIXES)]
    return f"+254{prefix}{serial % 1_000_000:06d}"


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, start_time=None, response=None,
            **_):
    status = getattr(response, "status_code", 0) if response is not None else 0
    _requests.append([name, start_time or time.time(), response_time, exception is None, status])


@events.quitting.add_listener
def _dump(environment, **_):
    path = os.environ.get("BENCH_TIMINGS")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"requests": _requests, "cycles": _cycles}, out)


class Writer(FastHttpUser):
    """One client: create, read it back, update it, add it to a list; again and again."""

    default_headers = {"Authorization": f"Bearer {os.environ.get('BENCH_TOKEN', '')}"}

    def on_start(self) -> None:
        self.list_ids = os.environ["BENCH_LIST_IDS"].split(",")

    @task
    def write_cycle(self) -> None:
        phone = next_phone()
        body = {"phone": phone, "firstName": random.choice(FIRST), "lastName": random.choice(LAST),
                "tags": random.sample(TAGS, random.randint(0, 2))}
        started = time.time()
        t0 = time.perf_counter()
        with self.client.post("/api/v1/contacts", json=body, name="POST /contacts", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                raise RescheduleTask()
            contact_id = r.json()["id"]
        t1 = time.perf_counter()
        with self.client.get(f"/api/v1/contacts/{contact_id}", name="GET /contacts/{id} after its POST",
                             catch_response=True) as r:
            visible = r.status_code == 200 and r.json().get("phone") == phone
            if not visible:
                r.failure(f"write not visible: {r.status_code}: {r.text[:200]}")
        t2 = time.perf_counter()
        _cycles.append([started, (t1 - t0) * 1000, (t2 - t1) * 1000, (t2 - t0) * 1000, visible])
        with self.client.patch(f"/api/v1/contacts/{contact_id}", name="PATCH /contacts/{id}", catch_response=True,
                               json={"firstName": random.choice(FIRST), "tags": random.sample(TAGS, 2)}) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
        with self.client.post(f"/api/v1/contact-lists/{random.choice(self.list_ids)}/contacts",
                              name="POST /contact-lists/{id}/contacts", catch_response=True,
                              json={"contactIds": [contact_id]}) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")

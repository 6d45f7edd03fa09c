"""PostgreSQL behind a network partition: its packets dropped, not refused, as when a managed database
fails over to another address or a network goes away.

The API runs as a real process in a network namespace of the test's own, joined to this one
by a veth pair; PostgreSQL (a server of the test's own) listens on an address the namespace
reaches through that pair. The partition is a blackhole route to that address inside the
namespace: the API's packets to PostgreSQL vanish, while HTTP between the test and the API
goes on. Without the network timeouts (service/conninfo.py) each request stayed blocked for
as long as the kernel retransmits, about 15 minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from service.auth import mint_token
from service.embedded import EmbeddedPostgres, stop_process
from tests.support import SECRET, wait_healthy
from tests.waits import wait_until

# CONTACTS_DB_NETWORK_TIMEOUT_S of the API under test; 0 (the operating system's timeouts)
# makes the test fail, as it did before service/conninfo.py.
NETWORK_TIMEOUT_S = int(os.environ.get("CONTACTS_TEST_PARTITION_TIMEOUT_S", "4"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"),
    reason="a network namespace of the test's own needs root and iproute2's ip")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Namespace:
    """A network namespace joined to this one by a veth pair, and a second address for PostgreSQL."""

    name: str
    here: str  # this side of the pair: where the test's HTTP comes from
    there: str  # the namespace's side: where the API listens
    database: str  # an address on this side that the namespace reaches through the pair

    def partition(self) -> None:
        """From now on every packet the namespace sends to the database's address is dropped."""
        _ip("-n", self.name, "route", "replace", "blackhole", f"{self.database}/32")

    def heal(self) -> None:
        _ip("-n", self.name, "route", "replace", f"{self.database}/32", "dev", "veth0")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    subnet, spare = random.randrange(64, 128), random.randrange(128, 192)
    net = Namespace(name=f"ctpart{tag}", here=f"10.213.{subnet}.1", there=f"10.213.{subnet}.2",
                    database=f"10.213.{spare}.{random.randrange(1, 255)}")
    outside = f"ctp{tag}"
    _ip("netns", "add", net.name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", "veth0", "netns", net.name)
        _ip("addr", "add", f"{net.here}/30", "dev", outside)
        _ip("addr", "add", f"{net.database}/32", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", net.name, "addr", "add", f"{net.there}/30", "dev", "veth0")
        _ip("-n", net.name, "link", "set", "veth0", "up")
        _ip("-n", net.name, "link", "set", "lo", "up")
        net.heal()
        yield net
    finally:
        _ip("netns", "del", net.name)  # takes the pair with it


def _postgres_on(net: Namespace, data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    """A PostgreSQL of the test's own, also on the namespace's database address; the service's URL to it there."""
    pg = EmbeddedPostgres(data_dir, also_listen=net.database)
    local = pg.start()
    hba = pg.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text() + f"host all all {net.there}/32 scram-sha-256\n")
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    return pg, make_conninfo(local, host=net.database, application_name="partitioned-api")


def _sessions_of_the_api(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name = 'partitioned-api'").fetchone()[0]


def _timed(send: Callable[[], httpx.Response]) -> tuple[float, httpx.Response | Exception]:
    started = time.monotonic()
    try:
        answer: httpx.Response | Exception = send()
    except httpx.HTTPError as exc:
        answer = exc
    return time.monotonic() - started, answer


def test_postgresql_behind_a_partition_answers_503_in_seconds_both_ends_let_go_and_the_service_recovers(
        namespace: Namespace, tmp_path: Path) -> None:
    pg, database_url = _postgres_on(namespace, tmp_path)
    port = 8000 + random.randrange(1000)
    env = {**os.environ, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_JWT_SECRET": SECRET,
           "CONTACTS_HOST": namespace.there, "CONTACTS_PORT": str(port),
           # NATS is not needed by the API's requests: an address where nothing listens.
           "CONTACTS_NATS_URL": f"nats://{namespace.here}:9", "CONTACTS_DB_NETWORK_TIMEOUT_S": str(NETWORK_TIMEOUT_S)}
    with (tmp_path / "api.log").open("wb") as log:
        api = subprocess.Popen(["ip", "netns", "exec", namespace.name, sys.executable, "-m", "service.cli", "api"],
                               env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://{namespace.there}:{port}"
    token = mint_token(SECRET, uuid.uuid4(), "partition-test")
    client = httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"})
    try:
        wait_healthy(base, process=api)
        before = client.post("/api/v1/contacts", json={"phone": "0712000001"})
        assert before.status_code == 201, before.text
        assert client.get("/api/v1/contacts").json()["total"] == 1
        assert _sessions_of_the_api(pg.url) >= 2

        namespace.partition()
        requests = {
            "read": lambda: client.get("/api/v1/contacts"),
            "create": lambda: client.post("/api/v1/contacts", json={"phone": "0712000002"}),
            "change": lambda: client.patch(f"/api/v1/contacts/{before.json()['id']}", json={"firstName": "Cut"}),
            "ready": lambda: client.get("/ready"),
        }
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = dict(zip(requests, pool.map(_timed, requests.values())))
        for what, (took, answer) in answers.items():
            assert isinstance(answer, httpx.Response), (what, took, answer)
            # The network timeout, then a new connection's CONTACTS_DB_TIMEOUT_S (2 s), with room for a busy machine.
            assert answer.status_code == 503 and took < 3 * NETWORK_TIMEOUT_S + 10, (what, took, answer.text)
        for what in ("read", "create", "change"):
            assert answers[what][1].json()["error"] == "database_unavailable", answers[what][1].text
        assert answers["ready"][1].json()["checks"]["database"].startswith("unavailable")
        print("answers during the partition:", {what: (round(took, 1), answer.status_code)
                                                for what, (took, answer) in answers.items()})
        # PostgreSQL ends the sessions of the API it no longer hears from, and with them any lock they held.
        wait_until(lambda: _sessions_of_the_api(pg.url) == 0, "PostgreSQL ended the silent API's sessions",
                   3 * NETWORK_TIMEOUT_S + 10)

        namespace.heal()
        wait_until(lambda: client.get("/api/v1/contacts").status_code == 200, "reads came back", 60, 0.2)
        again = client.post("/api/v1/contacts", json={"phone": "0712000002"})
        assert again.status_code == 201, again.text  # the create that got 503 stored nothing
        contacts = client.get("/api/v1/contacts").json()
        assert contacts["total"] == 2
        assert {c["firstName"] for c in contacts["contacts"]} == {None}  # nor did the PATCH
    finally:
        client.close()
        stop_process(api)
        pg.stop("immediate")

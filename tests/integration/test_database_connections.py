"""Every connection the service opens to PostgreSQL takes the whole database URL, and gives up a silent peer."""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row
from psycopg.conninfo import make_conninfo

from tests.support import start_service

APP = "contacts-conninfo-test"


def _sessions(database_url: str) -> list[tuple[str, int]]:
    """(application_name, how many) of the client sessions on the test's database, other than the asker's."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1").fetchall()


def test_every_connection_of_the_service_takes_the_parameters_of_its_database_url(
        fresh_database: str, nats_url: str) -> None:
    # The event store used to connect with the URL's host, port, database, user and password
    # alone: a production URL's sslmode, sslrootcert or target_session_attrs were dropped for
    # every write. application_name is the one such parameter PostgreSQL shows of each session.
    svc = start_service(make_conninfo(fresh_database, application_name=APP), nats_url)
    try:
        api = svc.client()
        listed = api.create_list("everyone")
        api.create_contact("0712000001", listIds=[listed["id"]])
        csv = b"phone\n0712000002\n0712000003\n"
        imported = api.post("/api/v1/contacts/import", files={"file": ("c.csv", csv)},
                            headers={"Idempotency-Key": "conninfo-1"})
        assert imported.status_code == 201, imported.text
        assert api.get("/api/v1/contacts").json()["total"] == 3
        svc.wait_for_relay()
        sessions = _sessions(fresh_database)
        # The read pool, the event store's pool (the writes), the worker's listener and relay.
        assert sum(n for _, n in sessions) >= 4, sessions
        assert {name for name, _ in sessions} == {APP}, sessions
    finally:
        svc.close()


def test_the_service_and_postgresql_give_each_other_up_after_the_network_timeout(
        fresh_database: str, nats_url: str) -> None:
    svc = start_service(fresh_database, nats_url, with_worker=False, db_network_timeout_s=7)
    try:
        svc.client().create_contact("0712000009")  # the event store's pool opens at its first write
        c = svc.container
        for pool in (c.pool, c.leases, c.app.recorder.datastore.pool):
            with pool.connection() as conn:
                # PostgreSQL's side: it ends the session of a service that went silent (and the locks go).
                server = dict(conn.cursor(row_factory=tuple_row).execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('tcp_keepalives_idle',"
                    " 'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')").fetchall())
                # The service's side (libpq): a request stops waiting on a server that went silent.
                client = {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}
            assert server == {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1",
                              "tcp_keepalives_count": "3", "tcp_user_timeout": "7000"}, (pool, server)
            assert {k: client[k] for k in ("keepalives", "keepalives_idle", "keepalives_count",
                                           "tcp_user_timeout")} == {
                "keepalives": "1", "keepalives_idle": "3", "keepalives_count": "3", "tcp_user_timeout": "7000"}
    finally:
        svc.close()

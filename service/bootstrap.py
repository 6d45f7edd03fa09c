"""Composition root: one function builds the event store (with its inline projector), the read pool and the relay."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from command import operator_prefixes
from command.application import ContactsApplication
from command.crypto import KeyStore
from command.locks import EVENTS_APPEND
from command.unit_of_work import EVENTS_TABLE
from events import outbox
from events.relay import Relay
from projections.read_model import ReadModelProjector
from projections.runner import ProjectionRunner
from service import locks
from service.conninfo import with_network_timeouts
from service.dbpool import check_after_outage, retry_every_second
from service.schema import ensure_schema
from service.settings import Settings

log = logging.getLogger(__name__)


def eventsourcing_env(database_url: str, pool_size: int, timeout_s: int = 2) -> dict[str, str]:
    info = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "command.recorder:ContactsFactory",
        "POSTGRES_CONNINFO": database_url,  # the whole URL: the five below alone drop sslmode and the rest
        "POSTGRES_DBNAME": info.get("dbname", "postgres"),
        "POSTGRES_HOST": info.get("host", "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": info.get("user", "postgres"),
        "POSTGRES_PASSWORD": info.get("password", ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # No pre-ping: a round trip on every checkout, and a write checks out twice (the phone
        # look-up, the unit of work). build() gives the pool the read pool's check instead,
        # which pings only in the minute after a request met a lost database.
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_CONNECT_TIMEOUT": str(timeout_s),  # also how long a request waits for a connection
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "CREATE_TABLE": "n",  # service/schema.py creates every table, once per version of the DDL
    }


@dataclass
class Container:
    """Everything a process needs, built once from Settings."""

    settings: Settings
    database_url: str
    app: ContactsApplication
    pool: ConnectionPool
    leases: ConnectionPool  # connections holding import jobs' advisory locks (service/job_leases.py)

    def relay(self, nats_url: str) -> Relay:
        return Relay(self.pool, self.app.decode, self.app.keys,
                     nats_url=nats_url, database_url=self.database_url, stream=self.settings.nats_stream,
                     subject_prefix=self.settings.nats_subject_prefix,
                     duplicate_window_s=self.settings.nats_duplicate_window_s, replicas=self.settings.nats_replicas,
                     mapper=self.app.mapper)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def replay_runner(self) -> ProjectionRunner:
        """A runner that replays stored events into the read tables (rebuilds, a first start)."""
        return ProjectionRunner(self.pool, self.app.recorder.select_notifications, self.app.decode,
                                ReadModelProjector())

    def close(self) -> None:
        self.leases.close()
        self.pool.close()
        self.app.close()


def phone_hash_key(conn: psycopg.Connection[Any], settings: Settings) -> bytes:
    """``CONTACTS_HASH_KEY`` if set, else a random key made once and kept in the database.

    The key identifies phone reservations; it must never change for a database, so
    the default is not derived from any other secret that might be rotated.
    """
    if settings.hash_key:
        return settings.hash_key.encode()
    conn.execute("INSERT INTO service_secrets (name, value) VALUES ('phone_hash_key', %s)"
                 " ON CONFLICT (name) DO NOTHING", (os.urandom(32),))
    return bytes(conn.execute("SELECT value FROM service_secrets WHERE name = 'phone_hash_key'").fetchone()[0])


def _utc_session(conn: psycopg.Connection) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def build(settings: Settings, database_url: str) -> Container:
    """Create the schema if needed (under an advisory lock) and wire the parts."""
    # No check on every checkout (a round trip per request), only in the minute after a
    # request met a lost database (service/dbpool.py: CheckAfterOutage). No server-side
    # prepared statements either: the pool's connections are shared by requests, the
    # worker and imports, and a statement prepared inside a transaction that was rolled
    # back (a cancelled export, a failed batch) was seen to leave psycopg's cache stale
    # ("prepared statement … does not exist"); these queries are cheap to plan.
    # Sessions in UTC, whatever the server's TimeZone: times leave the API as ...Z, the
    # same in GET /contacts (msgspec) and in the exports (formatted by PostgreSQL).
    retry_every_second()  # both pools come back within a second of the database (service/dbpool.py)
    database_url = with_network_timeouts(database_url, settings.db_network_timeout_s)
    pool = ConnectionPool(database_url, min_size=2, max_size=settings.db_pool_size, open=True,
                          check=check_after_outage,
                          timeout=settings.db_timeout_s, configure=_utc_session,
                          kwargs={"autocommit": True, "prepare_threshold": None})
    check_after_outage.watch(pool)
    # One per import this process runs (service/job_leases.py job_lease), held for its whole
    # run, so apart from the pool reads use; reused, as a new connection for each import
    # (SCRAM authentication included) added 8-10 ms to a 10-row import.
    leases = ConnectionPool(database_url, min_size=0, max_size=16, open=True, check=check_after_outage,
                            timeout=settings.db_timeout_s, kwargs={"autocommit": True, "prepare_threshold": None})
    check_after_outage.watch(leases)
    keys = KeyStore(pool)
    env = eventsourcing_env(database_url, settings.db_pool_size, settings.db_timeout_s)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (locks.SCHEMA,))
        try:
            # The NATS messages stored beside each event (events/outbox.py) are off unless asked
            # for: on a quiet machine they cost PATCH and list-add 12-30 % of their throughput
            # and did not speed creates up (docs/benchmarks.md); the relay decodes each event.
            app = ContactsApplication(env, keys=keys, projector=ReadModelProjector(),
                                      outbox=outbox.encode if settings.store_messages else None,
                                      default_region=settings.default_region)
            # eventsourcing offers only "always ping" or "never": its pool takes ours (psycopg_pool
            # keeps the check in ``_check``, read at every checkout).
            app.recorder.datastore.pool._check = check_after_outage
            check_after_outage.watch(app.recorder.datastore.pool)
            ensure_schema(conn, app.recorder)
            app.directory = operator_prefixes.load(conn)
            app.hash_key = phone_hash_key(conn, settings)
            container = Container(settings=settings, database_url=database_url, app=app, pool=pool, leases=leases)
            project_stored_events(conn, container)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (locks.SCHEMA,))
    return container


def project_stored_events(conn: psycopg.Connection[Any], container: Container) -> None:
    """Bring read tables that lag the events up to them, before this process takes a write.

    Writes project their own events, so this finds work only on a database whose read
    tables were made after its events (by an earlier version of the service, which
    projected in its worker, or after they were dropped by hand). The events table's
    lock holds other processes' writes meanwhile, so no live write projects out of turn.
    """
    runner = container.replay_runner()
    if runner.position() >= container.head():
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_APPEND,))  # every writer's turn (command/locks.py)
        conn.execute(f"LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE")  # and an earlier version's
        position = runner.catch_up()
    log.info("read tables brought up to the events: position %d", position)

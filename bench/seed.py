"""Seed one account with N contacts through the event store, once per size.

The embedded PostgreSQL of the benchmarks keeps its data in ``bench/.data`` and holds
one database per size and path (``bench_<N>`` or ``bench_<N>_contacts``). Two paths,
both through the application's event store, both projected by ``ProjectionRunner.catch_up``
exactly as the worker projects:

``imports`` (default)
    The path a 1M-contact account really takes: ``ContactImport.Progressed`` batch
    events of 1,000 contacts (one event per save), each contact sealed with its own key
    and its phone claimed in the same transaction, as ``ImportService._import_batch``
    stores them. Built here rather than through ``ImportService.run`` because an import
    row cannot carry an opt-out or several lists, and the benchmark needs both.
``contacts``
    ``Contact`` aggregates, ``ContactsApplication.save_all`` with their phone claims,
    500 events per save: the path of ``POST /contacts``.

A finished seed is recorded in ``bench_seed`` and reused; an interrupted projection or
VACUUM resumes, an interrupted store needs ``--reseed``. When the projector or its schema
changes, the read tables are dropped and projected again from the stored events.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg import sql

from bench import data
from command.application import SAVE_CHUNK, ContactsApplication
from command.context import Actor
from command.domain import Contact, ContactImport
from command.imports.service import BATCH_SIZE as IMPORT_BATCH
from command.phones import reservation_id
from projections import copy_text, counters, read_model
from projections import runner as projection_runner
from service.bootstrap import Container, build
from service.embedded import EmbeddedPostgres
from service.settings import Settings

BENCH_SECRET = "bench-secret-0123456789-0123456789-abcdef"
SEED_PATHS = ("imports", "contacts")
PROGRESS_EVERY = 50_000  # contacts between progress lines
PROJECT_EVENTS_PER_TXN = {"imports": 5, "contacts": 1000}  # imports: 5,000 contacts per transaction
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / ".data"

Log = Callable[[str], None]


def bench_settings() -> Settings:
    return Settings(jwt_secret=BENCH_SECRET, db_pool_size=10)


def start_server(data_dir: Path) -> EmbeddedPostgres:
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    return pg


def database_url(pg: EmbeddedPostgres, contacts: int, via: str, *, fresh: bool = False) -> str:
    """The URL of this size's database, created empty if missing (or if ``fresh``)."""
    name = f"bench_{contacts}" + ("" if via == "imports" else f"_{via}")
    with psycopg.connect(pg.server_url, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return pg.server_url.rsplit("/", 1)[0] + "/" + name


@dataclass
class SeedState:
    """What the benchmarks need to know about a seeded database (kept in ``bench_seed``)."""

    contacts: int
    via: str
    account_id: str
    list_ids: list[str]
    stored: bool = False
    projected: bool = False
    read_model: str = ""  # fingerprint of the projector that built the read tables
    vacuumed: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


def _load_state(conn: psycopg.Connection) -> SeedState | None:
    conn.execute("CREATE TABLE IF NOT EXISTS bench_seed (id integer PRIMARY KEY CHECK (id = 1), state jsonb NOT NULL)")
    row = conn.execute("SELECT state FROM bench_seed WHERE id = 1").fetchone()
    if row is None:
        return None
    try:
        return SeedState(**row[0])
    except TypeError:
        raise SystemExit("this database was seeded by another version of the benchmark: run with --reseed") from None


def _store_state(conn: psycopg.Connection, state: SeedState) -> None:
    conn.execute("INSERT INTO bench_seed (id, state) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state",
                 (json.dumps(asdict(state)),))


def ensure_seeded(url: str, contacts: int, via: str, log: Log = print) -> SeedState:
    """Seed the database at ``url`` with ``contacts`` contacts unless already done."""
    container = build(bench_settings(), url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            state = _load_state(conn)
            if state is not None and not state.stored:
                raise SystemExit("a previous seed of this database stopped while storing events: run with --reseed")
            if state is None:
                state = _start(container.app, contacts, via)
                started = time.perf_counter()
                events = (_store_imports if via == "imports" else _store_contacts)(container.app, state, log)
                elapsed = time.perf_counter() - started
                state.stored = True
                state.stats.update(store_s=round(elapsed, 1), store_events=events,
                                   store_events_per_s=round(events / elapsed),
                                   store_contacts_per_s=round(contacts / elapsed))
                _store_state(conn, state)
            if state.projected and state.read_model != read_model_fingerprint():
                log("seed: the read model changed since this database was projected: rebuilding its read tables")
                _drop_read_tables(conn)
                state.projected = state.vacuumed = False
            if not state.projected:
                _project(container, state, log)
                state.read_model = read_model_fingerprint()
                _store_state(conn, state)
            if not state.vacuumed:
                started = time.perf_counter()
                for table in ("contacts", "contact_list_memberships", "contact_lists", "contact_tags"):
                    conn.execute(f"VACUUM (ANALYZE) {table}")
                state.stats["vacuum_s"] = round(time.perf_counter() - started, 1)
                state.vacuumed = True
                _store_state(conn, state)
                log(f"seed: VACUUM (ANALYZE) of the read tables in {state.stats['vacuum_s']} s")
        return state
    finally:
        container.close()


def read_model_fingerprint() -> str:
    """A hash of the projector and its schema: when either changes, the read tables are rebuilt."""
    digest = hashlib.sha256()
    for module in (read_model, counters, copy_text, projection_runner):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(resources.files("projections").joinpath("schema.sql").read_bytes())
    return digest.hexdigest()[:16]


def _drop_read_tables(conn: psycopg.Connection) -> None:
    """Empty read tables and tracking, recreated by the current schema (events are untouched)."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in read_model.READ_TABLES)))
        conn.execute("DELETE FROM projection_tracking WHERE name = %s", (read_model.ReadModelProjector.name,))
        read_model.create_tables(conn)


def _actor(state: SeedState) -> Actor:
    return Actor(account_id=uuid.UUID(state.account_id), sub="bench-seed", request_id="seed")


def _start(app: ContactsApplication, contacts: int, via: str) -> SeedState:
    account_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-account-{contacts}")
    actor = Actor(account_id=account_id, sub="bench-seed", request_id="seed")
    list_ids = [str(app.create_list(actor, name, f"{share:.0%} of the contacts")) for name, share in data.LISTS]
    return SeedState(contacts=contacts, via=via, account_id=str(account_id), list_ids=list_ids)


def _progress(log: Log, done: int, total: int, events: int, started: float) -> None:
    if done % PROGRESS_EVERY == 0 or done == total:
        elapsed = time.perf_counter() - started
        log(f"seed: stored {done:,}/{total:,} contacts ({done / elapsed:,.0f} contacts/s, {events / elapsed:,.1f} events/s)")


def _store_imports(app: ContactsApplication, state: SeedState, log: Log) -> int:
    """One import job whose Progressed events hold 1,000 contacts each; returns events stored."""
    actor = _actor(state)
    list_ids = [uuid.UUID(i) for i in state.list_ids]
    job = ContactImport.start(actor, source="json", filename="bench-seed", list_id=None, idempotency_key=None)
    app.save_all(job, account_id=actor.account_id)
    started, events = time.perf_counter(), 1
    for start in range(0, state.contacts, IMPORT_BATCH):
        batch = data.contacts(start, min(start + IMPORT_BATCH, state.contacts), list_ids)
        entries = [{"id": uuid.uuid4(), "row": c.index + 1,
                    "pii": {"first_name": c.pii["first_name"], "last_name": c.pii["last_name"], "phone": c.phone.e164,
                            "email": c.pii.get("email"), "notes": c.pii.get("notes")},
                    "tags": c.tags, "list_ids": c.list_ids, "is_opted_out": c.is_opted_out,
                    "reservation_id": reservation_id(app.hash_key, actor.account_id, c.phone.e164),
                    **app.directory.classify(c.phone)} for c in batch]
        counts = dict(job.counts)
        valid = sum(1 for e in entries if e["status"] == "valid")
        counts.update(read=counts["read"] + len(batch), imported=counts["imported"] + len(entries),
                      valid=counts["valid"] + valid, invalid=counts["invalid"] + len(entries) - valid)
        job.record_rows(actor, entries, [], batch[-1].index + 1, counts)
        ids = [e["id"] for e in entries]
        # As ImportService._import_batch: one unit of work with the keys (and their origin) and claims.
        with app.keys.batch([]):
            new_keys = app.keys.generate(ids)
            app.unit_of_work.commit(job.collect_events(), account_id=actor.account_id, new_keys=new_keys,
                                    claims=[(e["reservation_id"], e["id"]) for e in entries],
                                    origin=(job.id, job.version))
        events += 1
        _progress(log, start + len(batch), state.contacts, events, started)
    job.complete(actor)
    app.save_all(job)
    return events + 1


def _store_contacts(app: ContactsApplication, state: SeedState, log: Log) -> int:
    """Contact aggregates saved with their phone claims, SAVE_CHUNK (500) events per save."""
    actor = _actor(state)
    list_ids = [uuid.UUID(i) for i in state.list_ids]
    started, events = time.perf_counter(), 0
    for start in range(0, state.contacts, SAVE_CHUNK):
        contacts, claims = [], []
        for c in data.contacts(start, min(start + SAVE_CHUNK, state.contacts), list_ids):
            rid = reservation_id(app.hash_key, actor.account_id, c.phone.e164)
            contact = Contact.create(actor, pii=c.pii, tags=c.tags, list_ids=c.list_ids, is_opted_out=c.is_opted_out,
                                     directory_match=app.directory.classify(c.phone), reservation_id=rid)
            contacts.append(contact)
            claims.append((rid, contact.id))
        app.save_all(*contacts, account_id=actor.account_id, claims=claims)
        events += len(contacts)
        _progress(log, start + len(contacts), state.contacts, events, started)
    return events


def _project(container: Container, state: SeedState, log: Log) -> None:
    """Build read tables that lag the events (after a projector change) with the replay runner, reporting progress."""
    runner = container.replay_runner()
    # The worker meets an import a few batch events at a time as they are stored;
    # a seed finds them all at once, so keep each transaction to that size.
    runner.batch_size = PROJECT_EVENTS_PER_TXN[state.via]
    head = container.head()
    position = runner.position()
    started = time.perf_counter()
    step = max(1, PROGRESS_EVERY // (IMPORT_BATCH if state.via == "imports" else 1))
    while position < head:
        position = runner.catch_up(until=min(position + step, head))
        elapsed = time.perf_counter() - started
        log(f"seed: projected to {position:,}/{head:,} ({runner.applied_total / elapsed:,.1f} events/s)")
    elapsed = time.perf_counter() - started
    with container.pool.connection() as conn:
        projected = conn.execute("SELECT count(*) FROM contacts WHERE account_id = %s", (state.account_id,)).fetchone()[0]
    if projected != state.contacts:
        raise SystemExit(f"the read table has {projected:,} contacts, expected {state.contacts:,}")
    state.stats.update(project_events=runner.applied_total, project_s=round(elapsed, 1),
                       project_events_per_s=round(runner.applied_total / elapsed, 1),
                       project_contacts_per_s=round(state.contacts / elapsed))
    state.projected = True

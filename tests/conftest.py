"""Shared fixtures: embedded PostgreSQL and NATS (or CONTACTS_TEST_* servers) and a live service."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from service.embedded import EmbeddedNats, EmbeddedPostgres

if TYPE_CHECKING:
    from tests.support import Service

# tests.support (the app, uvicorn, httpx) is imported by the fixtures that use it, so a
# `make test-unit` run that starts no server does not pay for loading the service either.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server (its default database); embedded unless given."""
    external = os.environ.get("CONTACTS_TEST_DATABASE_URL", "").strip()
    if external:
        yield external
        return
    # Not under pytest's own temporary root: another pytest run starting on the machine makes
    # that root private to its user (mode 0700), and the embedded server runs as a user of its
    # own when the tests run as root, so it lost its data directory mid-run (PANIC: could not
    # open pg_control) and every later test failed to connect.
    data = Path(tempfile.mkdtemp(prefix="contacts-test-pg-"))
    pg = EmbeddedPostgres(data)
    try:
        pg.start()
        yield pg.server_url  # the service's own role (not the superuser), which may create databases
        pg.stop("immediate")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CONTACTS_TEST_NATS_URL", "").strip()
    if external:
        yield external
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def service(postgres_server: str, nats_url: str) -> Iterator[Service]:
    """The app over HTTP with its worker, on a fresh database, shared by the session.

    Tests isolate themselves by account: each client gets a new account id.
    """
    from tests.support import new_database, start_service

    svc = start_service(new_database(postgres_server), nats_url)
    yield svc
    svc.close()


@pytest.fixture
def fresh_database(postgres_server: str) -> str:
    from tests.support import new_database

    return new_database(postgres_server)

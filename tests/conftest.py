"""Shared fixtures: embedded PostgreSQL and NATS (or CONTACTS_TEST_* servers) and a live service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from service.embedded import EmbeddedNats, EmbeddedPostgres

if TYPE_CHECKING:
    from tests.support import Service

# tests.support (the app, uvicorn, httpx) is imported by the fixtures that use it, so a
# `make test-unit` run that starts no server does not pay for loading the service either.


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server (its default database); embedded unless given."""
    external = os.environ.get("CONTACTS_TEST_DATABASE_URL", "").strip()
    if external:
        yield external
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    pg.start()
    yield pg.server_url  # the service's own role (not the superuser), which may create databases
    pg.stop("immediate")


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

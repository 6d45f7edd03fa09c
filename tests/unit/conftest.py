"""Unit tests start no server: one that asks for PostgreSQL, NATS or the app fails at collection."""

from __future__ import annotations

from pathlib import Path

import pytest

# The shared fixtures (tests/conftest.py) that start or need a server; the ones built on
# them (a test's own service fixture, say) reach these through item.fixturenames.
SERVER_FIXTURES = frozenset({"postgres_server", "nats_url", "service", "fresh_database"})
UNIT = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a unit test that would start a server, so `make test-unit` stays fast and offline."""
    # A conftest's collection hook sees every collected item, not only this folder's.
    offenders = [item.nodeid for item in items
                 if UNIT in item.path.parents and SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if offenders:
        raise pytest.UsageError("unit tests must not start servers (move them to tests/integration): "
                                + ", ".join(offenders))

"""The embedded servers refuse connections without the credentials kept in the data directory."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import nats
import psycopg
import pytest

from service.embedded import PG_APP_USER, EmbeddedNats, EmbeddedPostgres, redacted


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_embedded_postgres_needs_a_password_and_a_restart_reuses_it(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path)
    url = pg.start()
    try:
        for user in ("postgres", PG_APP_USER):  # neither the superuser nor the service's role without a password
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(f"postgresql://{user}@127.0.0.1:{pg.port}/postgres", connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/postgres", connect_timeout=5)
        with psycopg.connect(url) as conn:
            user, superuser, owner = conn.execute(
                "SELECT current_user, rolsuper, pg_get_userbyid(datdba) FROM pg_roles, pg_database"
                " WHERE rolname = current_user AND datname = current_database()").fetchone()
        assert (user, superuser, owner) == (PG_APP_USER, False, PG_APP_USER)
        assert _mode(tmp_path / "pg.credentials.json") == 0o600
        assert "***" in redacted(url) and pg.secrets[PG_APP_USER] not in redacted(url)
    finally:
        pg.stop()
    again = EmbeddedPostgres(tmp_path)
    assert again.start() == url  # the stored password, not a new one
    try:
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        again.stop()


async def _connect(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    await nc.close()


def test_embedded_nats_needs_a_password_and_a_restart_reuses_it(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    url = server.start()
    try:
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
            asyncio.run(_connect(f"nats://127.0.0.1:{server.port}"))
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
            asyncio.run(_connect(f"nats://contacts:wrong@127.0.0.1:{server.port}"))
        asyncio.run(_connect(url))
        assert _mode(tmp_path / "nats.credentials.json") == 0o600 and _mode(tmp_path / "nats.conf") == 0o600
        assert server.secrets["contacts"] not in " ".join(server.proc.args)  # not on the command line
    finally:
        server.stop()
    again = EmbeddedNats(tmp_path)
    assert again.start() == url
    try:
        asyncio.run(_connect(again.url))
    finally:
        again.stop()

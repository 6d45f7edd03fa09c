"""The embedded PostgreSQL starts on another free port when the one it found free, or the last run's, is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from service.embedded import EmbeddedPostgres


def test_a_taken_port_from_the_last_run_is_replaced_and_an_asked_for_port_says_why_it_failed(tmp_path: Path) -> None:
    """Another process took the port between free_port and the start (CI failed on that: pg_ctl exit status 1)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        (tmp_path / "pg.port").write_text(str(taken))  # the last run's port, since taken
        pg = EmbeddedPostgres(tmp_path)
        url = pg.start()
        try:
            assert pg.port != taken and (tmp_path / "pg.port").read_text() == str(pg.port)
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            pg.stop("immediate")
        asked = EmbeddedPostgres(tmp_path / "asked", port=taken)  # a port asked for is not changed behind one's back
        with pytest.raises(RuntimeError, match=f'PostgreSQL did not start on port {taken}(.|\\n)*could not bind'):
            asked.start()

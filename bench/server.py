"""The real API (build + create_app under uvicorn) in its own process, for the benchmarks.

It mirrors ``contacts api`` without NATS (GET /contacts never touches it) and
without a worker (the benchmarks only read), on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

import psycopg

from service.embedded import EmbeddedPostgres, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


def serve(database_url: str, port: int) -> None:
    """Run the API in this process until it is terminated."""
    import uvicorn

    from bench.seed import bench_settings
    from service.app import create_app
    from service.bootstrap import build
    from service.heap import settle_heap

    container = build(bench_settings(), database_url)
    config = uvicorn.Config(create_app(container, ""), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, lifespan="on")
    settle_heap()  # as `contacts api` does
    try:
        uvicorn.Server(config).run()
    finally:
        container.close()


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, what: str) -> None:
    """Wait until ``url``/health answers 200; fail at once if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer /health within {timeout:.0f} s")
        time.sleep(0.1)


class ApiProcess:
    """``python -m bench serve`` as a child process; ``with`` starts and stops it."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ApiProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "bench", "serve", "--database-url",
                                      self.database_url, "--port", str(self.port)], cwd=ROOT)
        wait_healthy(self.proc, self.url, 60, "the API process")
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)


#: Settings every benchmark passes to the service it starts: no per-account write
#: limit (one benchmark account sends far more than a person would), uploads up to 2 GB.
BENCH_ENV = {"CONTACTS_RATE_LIMIT_WRITES_PER_MINUTE": "0", "CONTACTS_IMPORT_MAX_BYTES": str(2 * 1024 ** 3)}


class ServeProcess:
    """``contacts serve`` (API + worker child, embedded PostgreSQL and NATS) in ``data_dir``."""

    def __init__(self, data_dir: Path, jwt_secret: str, extra_env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, **BENCH_ENV, "CONTACTS_DATA_DIR": str(data_dir), "CONTACTS_PORT": str(self.port),
                    "CONTACTS_JWT_SECRET": jwt_secret, "CONTACTS_DATABASE_URL": "", "CONTACTS_NATS_URL": "",
                    **(extra_env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        from service.embedded import EmbeddedPostgres

        return EmbeddedPostgres(self.data_dir).url  # the port and the password serve wrote in the data dir

    @property
    def nats_url(self) -> str:
        from service.embedded import EmbeddedNats

        return EmbeddedNats(self.data_dir).url

    def __enter__(self) -> "ServeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "serve.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.proc, self.url, 120, f"contacts serve (see {self.data_dir / 'serve.log'})")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc, 90)  # serve stops its worker, NATS and PostgreSQL


def preload_pg_stat_statements(data_dir: Path) -> EmbeddedPostgres:
    """The embedded server of ``data_dir`` set to preload pg_stat_statements, left stopped
    (the setting takes effect at its next start)."""
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg.stop()
    return pg

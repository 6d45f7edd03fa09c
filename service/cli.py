"""The contacts command: run the service, mint tokens, import and export, audit and maintain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import ExitStack

from service.settings import Settings

log = logging.getLogger("contacts")


def _note(text: str) -> None:
    """Print an informational line on stderr: stdout carries only a command's output (NDJSON, a token)."""
    print(text, file=sys.stderr, flush=True)


def _servers(settings: Settings, stack: ExitStack, *, need_nats: bool) -> tuple[str, str]:
    """The configured URLs, or embedded servers started under the data dir."""
    from service.embedded import EmbeddedNats, EmbeddedPostgres, redacted

    database_url, nats_url = settings.database_url, settings.nats_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not database_url:
        pg = EmbeddedPostgres(settings.data_dir)
        database_url = pg.start()
        if pg.started_here:
            stack.callback(pg.stop)
        _note(f"embedded PostgreSQL: {redacted(database_url)} (data in {pg.pgdata})")
    if not nats_url and need_nats:
        nats_server = EmbeddedNats(settings.data_dir)
        nats_url = nats_server.start()
        stack.callback(nats_server.stop)
        _note(f"embedded NATS (JetStream): {redacted(nats_url)} (store in {nats_server.store})")
    return database_url, nats_url


async def _run(settings: Settings, database_url: str, nats_url: str, *, api: bool, worker: bool,
               banner: bool = False, relay_only: bool = False) -> None:
    import uvicorn

    from service.app import create_app
    from service.bootstrap import build
    from service.heap import settle_heap
    from service.worker import RelayChild, WorkerWithRelayChild

    container = await asyncio.to_thread(build, settings, database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    server = None
    if worker:
        w = RelayChild(container, nats_url) if relay_only else WorkerWithRelayChild(container, nats_url)
        tasks.append(asyncio.create_task(w.run()))
    if api:
        # The app has no startup/shutdown hooks: without lifespan, Ctrl-C ends quietly.
        config = uvicorn.Config(create_app(container, nats_url), host=settings.host, port=settings.port,
                                log_level="warning", access_log=False, lifespan="off", log_config=None)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # we own the signals
        tasks.append(asyncio.create_task(server.serve()))
    settle_heap()  # after the app and the container exist: they live as long as the process
    if banner:
        _print_banner(settings)
    await stop.wait()
    if server is not None:
        server.should_exit = True
    if worker:
        w.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(container.close)


def _print_banner(settings: Settings) -> None:
    from service.auth import mint_token

    url = f"http://{settings.host}:{settings.port}"
    token = mint_token(settings.jwt_secret, uuid.UUID(int=1), "developer", 30 * 86400)
    if settings.jwt_secret_is_default:
        _note("WARNING: CONTACTS_JWT_SECRET is not set; using the development secret")
    print(f"\ncontacts service on {url}\n  API docs: {url}/schema/swagger\n"
          f"  development token (account 00000000-0000-0000-0000-000000000001, 30 days):\n"
          f"  {token}\n\n  try: curl -H 'Authorization: Bearer <token>' {url}/api/v1/contact-lists\n"
          "  Ctrl-C stops everything.\n", flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings, *, api: bool, worker: bool,
              relay_only: bool = False) -> None:
    with ExitStack() as stack:
        database_url, nats_url = _servers(settings, stack, need_nats=worker or api)
        if args.command == "serve":
            # The worker runs as its own process, as in production, so projections,
            # the relay and queued imports use the second core instead of sharing
            # the API's interpreter lock.
            stack.enter_context(_worker_process(database_url, nats_url))
            worker = False
        # The API's loop is uvloop (faster sockets and callbacks); a worker or relay keeps
        # asyncio's own loop, which its child-process handling was written and tested on.
        with asyncio.Runner(loop_factory=_api_loop() if api and not worker else None) as runner:
            runner.run(_run(settings, database_url, nats_url, api=api, worker=worker,
                            banner=args.command == "serve", relay_only=relay_only))


def _api_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's loop
        return None
    return uvloop.new_event_loop


@contextlib.contextmanager
def _worker_process(database_url: str, nats_url: str) -> Iterator["Supervised"]:
    env = {**os.environ, "CONTACTS_DATABASE_URL": database_url, "CONTACTS_NATS_URL": nats_url}
    child = Supervised([sys.executable, "-m", "service.cli", "worker"], env, "worker")
    try:
        yield child
    finally:
        child.stop(30)


class Supervised:
    """A child process kept running: restarted (after a pause that grows to 30 s) whenever it exits.

    Without it a worker that died (killed, out of memory) stayed dead while serve ran on:
    no projections but the writers' own, no NATS, no queued imports, and nothing in the log.
    """

    def __init__(self, command: list[str], env: dict[str, str], name: str):
        self.command, self.env, self.name = command, env, name
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # a restart and stop() never interleave: no child left behind
        self.proc = subprocess.Popen(command, env=env)
        self.restarts = 0
        self.thread = threading.Thread(target=self._watch, name=f"supervise-{name}", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        pause = 1.0
        while True:
            started = time.monotonic()
            code = self.proc.wait()
            if self.stopping.is_set():
                return
            pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
            log.error("%s process exited with code %s; starting it again in %.0f s", self.name, code, pause)
            if self.stopping.wait(pause):
                return
            with self.lock:
                if self.stopping.is_set():
                    return
                self.proc = subprocess.Popen(self.command, env=self.env)
                self.restarts += 1

    def stop(self, timeout: float) -> None:
        from service.embedded import stop_process

        with self.lock:
            self.stopping.set()
        stop_process(self.proc, timeout)
        self.thread.join(timeout)


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    from service.auth import mint_token

    print(mint_token(settings.jwt_secret, args.account, args.sub, args.ttl))


def _account(text: str) -> uuid.UUID:
    """An account id (an argparse type: anything else is a usage error, exit 2)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type for a positive int or float."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value
    return parse


def _duration(text: str) -> int:
    """A lifetime in seconds from ``3600``, ``30m``, ``24h`` or ``7d`` (an argparse type)."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"([0-9]+)([smhd]?)", text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid lifetime {text!r}: give a positive number of seconds or Nm/Nh/Nd (e.g. 3600, 30m, 24h, 7d)")
    return int(match[1]) * units[match[2]]


def _actor(text: str) -> str:
    """The token's ``sub`` (an argparse type): the API refuses a blank one, so refuse to mint it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (it is the actor recorded on events)")
    return text


def cmd_mno_refresh(settings: Settings) -> None:
    import psycopg

    from command import operator_prefixes

    with ExitStack() as stack:
        database_url, _ = _servers(settings, stack, need_nats=False)
        with psycopg.connect(database_url, autocommit=True) as conn:
            if not operator_prefixes.installed(conn):
                sys.exit("contacts mno refresh: this database has no contacts schema (no mno_prefixes table):"
                         " start the service on it once (contacts serve, api or worker), which creates the schema")
            count = operator_prefixes.refresh(conn)
    print(f"mno_prefixes: {count} prefixes from {operator_prefixes.source_label()}")


def cmd_rebuild(settings: Settings) -> None:
    from projections.rebuild import RebuildSwapError, rebuild
    from service.bootstrap import build

    with ExitStack() as stack:
        database_url, _ = _servers(settings, stack, need_nats=False)
        container = build(settings, database_url)
        try:
            done = rebuild(container.pool, container.database_url, container.app.recorder.select_notifications,
                           container.app.decode)
        except RebuildSwapError as exc:
            sys.exit(f"contacts projections rebuild: {exc}")  # exit 1, the message on stderr
        finally:
            container.close()
    print(f"read tables rebuilt from {done['position']} events in {done['seconds']} s")


def cmd_events_export(args: argparse.Namespace, settings: Settings) -> None:
    from events.audit import export_account
    from service import progress
    from service.bootstrap import build

    account = args.account
    with ExitStack() as stack:
        database_url, _ = _servers(settings, stack, need_nats=False)
        container = build(settings, database_url)
        out = sys.stdout if args.output == "-" else stack.enter_context(open(args.output, "w", encoding="utf-8"))
        try:
            with progress.bar(progress.wanted(args.progress), "written", unit="events") as bar:
                task = bar.add_task("reading the event log", total=None, written=0) if bar else None

                def advance(position: int, head: int, written: int) -> None:
                    if bar is not None:
                        bar.update(task, completed=position, total=head, written=written)

                count = export_account(container.app, account, out, progress=advance,
                                       personal=not args.no_personal_data)
        finally:
            container.close()
    print(f"{count} events of account {account} written", file=sys.stderr)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> None:
    from events.audit import run_tail

    with ExitStack() as stack:
        _, nats_url = _servers(settings, stack, need_nats=True) if not settings.nats_url else ("", settings.nats_url)
        subject = f"{settings.nats_subject_prefix}.{args.account or '*'}.>"
        try:
            run_tail(nats_url, settings.nats_stream, subject, args.durable, args.max, args.idle_timeout)
        except KeyboardInterrupt:
            pass


ENVIRONMENT = """\
environment:
  CONTACTS_DATABASE_URL, CONTACTS_NATS_URL   servers (empty: embedded ones in CONTACTS_DATA_DIR)
  CONTACTS_HOST, CONTACTS_PORT               where serve / api listen
  CONTACTS_JWT_SECRET                        the HS256 secret (token, and the API's check)
  CONTACTS_URL, CONTACTS_TOKEN               the service import / export talk to
  (every setting: README.md, "Configuration")

exit status: 0 done, 1 failed (the message says why), 2 usage error"""

DESCRIPTIONS = {
    "serve": "The API, the worker as a supervised child process, and embedded PostgreSQL / NATS when no\n"
             "URL is configured, on one machine (make run). Prints the URL, the docs URL and a\n"
             "development token. Ctrl-C stops everything.",
    "api": "The HTTP API only. Stateless: run as many as you need behind a load balancer.",
    "worker": "The NATS relay (as a child process), queued imports and the trash retention purge. It\n"
              "projects nothing: every write commits its own read rows. Run one.",
    "relay": "The NATS relay alone: publishes every stored event to the JetStream stream. The worker\n"
             "runs it as a child process at a lower CPU priority; you do not start it yourself.",
    "token": "Print an HS256 bearer token signed with CONTACTS_JWT_SECRET.",
    "tail": "Reference consumer: follow the NATS stream and print one line per event. A durable\n"
            "consumer name resumes where it stopped.",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``contacts`` command line: every command and subcommand with its own help."""
    from service import cli_client, progress

    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="contacts", description=__doc__, epilog=ENVIRONMENT, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=DESCRIPTIONS.get(name, help_text),
                              formatter_class=raw, **kwargs)

    command("serve", "api + worker + embedded servers on one machine (what make run runs)")
    command("api", "the HTTP API only (stateless; run as many as needed)")
    command("worker", "the NATS relay, queued imports, the retention purge")
    command("relay", "the NATS relay only (the worker runs it as a child process)")
    token = command("token", "mint an HS256 bearer token with the configured secret")
    token.add_argument("--account", required=True, type=_account, help="account id (UUID)")
    token.add_argument("--sub", default="developer", type=_actor, help="actor recorded on events (not empty)")
    token.add_argument("--ttl", default="24h", type=_duration, help="lifetime: seconds or Nm/Nh/Nd (30m, 24h, 7d)")
    cli_client.add_commands(sub)
    events = command("events", "the event store: audit export")
    events_sub = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = events_sub.add_parser(
        "export", help="every event of one account as NDJSON (offline audit)", formatter_class=raw,
        description="Every event of one account as NDJSON, oldest first, read from the event store\n"
                    "(CONTACTS_DATABASE_URL). Standard output (the default) carries only the events; a\n"
                    "progress bar goes to standard error when it is a terminal.")
    export.add_argument("--account", required=True, type=_account, help="account id (UUID)")
    export.add_argument("--output", default="-", metavar="FILE", help="NDJSON file (default: standard output)")
    export.add_argument("--no-personal-data", action="store_true",
                        help="leave out the sealed personal fields (phone, names, email, notes, tags)")
    progress.add_progress_flag(export)
    tail = command("tail", "follow the NATS stream and print each event (reference consumer)")
    tail.add_argument("--account", type=_account, help="only this account's events")
    tail.add_argument("--durable", help="durable consumer name: resume where it stopped")
    tail.add_argument("--max", type=_positive(int), help="stop after this many events")
    tail.add_argument("--idle-timeout", type=_positive(float), metavar="S",
                      help="stop after this many seconds without an event")
    projections = command("projections", "the read tables: rebuild them from the events")
    projections_sub = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = projections_sub.add_parser(
        "rebuild", help="replay every event into fresh read tables and swap them in (no downtime)",
        description="Replay every event into fresh read tables and swap them in, without stopping the API\n"
                    "(the swap gives way to readers rather than deadlock with them).", formatter_class=raw)
    rebuild.add_argument("name", nargs="?", default="read_model", choices=["read_model"],
                         help="the projection to rebuild (there is one: read_model, all read tables)")
    mno = command("mno", "the operator directory (mno_prefixes)")
    mno_sub = mno.add_subparsers(dest="action", required=True, metavar="ACTION")
    mno_sub.add_parser("refresh", help="reload mno_prefixes from the installed phonenumbers package",
                       description="Reload the operator directory (mno_prefixes) from the installed phonenumbers\n"
                                   "package. Restart running api processes afterwards: each loads it at start.",
                       formatter_class=raw)
    return parser


def _maintenance(args: argparse.Namespace, settings: Settings) -> None:
    """The commands that work on the database directly: a database they cannot reach is one line, exit 1."""
    import eventsourcing.persistence
    import psycopg

    # A one-shot command fails with the reason below; the pools' retry warnings would only repeat it.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        if args.command == "mno":
            cmd_mno_refresh(settings)
        elif args.command == "projections":
            cmd_rebuild(settings)
        else:
            cmd_events_export(args, settings)
    except (psycopg.OperationalError, eventsourcing.persistence.OperationalError) as exc:
        reason = " ".join(str(exc).split())  # psycopg's message runs over several lines
        sys.exit(f"contacts {args.command} {args.action}: cannot use the database (CONTACTS_DATABASE_URL): {reason}")


def main(argv: list[str] | None = None) -> None:
    from service.logs import configure

    configure()  # CONTACTS_LOG_FORMAT: json or text, the same for every process (service/logs.py)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):  # the HTTP client commands (service/cli_client.py)
        from service.cli_client import Failed

        try:
            sys.exit(args.handler(args, parser))
        except Failed as exc:
            print(f"contacts {args.command}: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
    settings = Settings.from_env()
    if args.command in ("mno", "projections", "events"):
        _maintenance(args, settings)
    elif args.command == "serve":
        cmd_serve(args, settings, api=True, worker=True)
    elif args.command == "api":
        cmd_serve(args, settings, api=True, worker=False)
    elif args.command == "worker":
        cmd_serve(args, settings, api=False, worker=True)
    elif args.command == "relay":
        cmd_serve(args, settings, api=False, worker=True, relay_only=True)
    elif args.command == "token":
        cmd_token(args, settings)
    elif args.command == "tail":
        cmd_tail(args, settings)


if __name__ == "__main__":
    main()

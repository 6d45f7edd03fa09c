"""A JSON import's body: read once by the handler, and let go before the import runs (50 MB, seconds long)."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service import import_jobs
from service.auth import mint_token
from tests.support import SECRET, Service

ROWS = 5_000
NOTE = "x" * 1_000  # a 5 MB body: far above any one allocation of the decoded contacts (the list: 40 kB)


def _pieces() -> Iterator[bytes]:
    """The body in pieces of 500 contacts, so that the client (in this process too) never holds it whole."""
    yield b'{"contacts": ['
    for start in range(0, ROWS, 500):
        contacts = [{"phone": f"+2547{12_000_000 + i:08d}", "firstName": f"Row{i}", "notes": NOTE}
                    for i in range(start, start + 500)]
        yield (b"," if start else b"") + json.dumps(contacts).encode()[1:-1]
    yield b"]}"


def test_a_json_imports_body_is_let_go_before_the_import_runs(service: Service,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The API runs in this process, so the allocations alive when the import starts can be read.

    tracemalloc records every allocation made after it starts (before the request), each with
    its size, whatever holds it: the body's bytes, however Litestar or the handler keeps them
    (one buffer, or its joined chunks cached on the request), are one block at least as large as
    the body, while the server's chunks, the decoded contacts and this client's pieces are all far
    smaller. The check runs as the real import is called (wrapped, not replaced), that is after the
    body was decoded and before the first row is imported. No timing, no RSS, no collector state.
    """
    size = sum(len(piece) for piece in _pieces())
    largest: list[tracemalloc.Trace] = []
    import_json = import_jobs.import_json

    def import_json_after_a_look(*args: Any, **kwargs: Any) -> Any:
        traces = tracemalloc.take_snapshot().traces
        tracemalloc.stop()  # the import itself runs at full speed
        largest.append(max(traces, key=lambda trace: trace.size))
        return import_json(*args, **kwargs)

    monkeypatch.setattr(import_jobs, "import_json", import_json_after_a_look)
    api = service.client()
    tracemalloc.start()
    try:
        r = api.post("/api/v1/contacts/bulk", content=_pieces(),
                     headers={"content-type": "application/json", "content-length": str(size)})
    finally:
        tracemalloc.stop()
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == ROWS
    [block] = largest
    assert block.size < size, (f"a block of {block.size} bytes (the body is {size}) is alive as the import starts,"
                               f" allocated at {block.traceback}")


def test_a_json_import_sent_chunked_without_a_length_is_read_whole(service: Service) -> None:
    """Without ``Content-Length`` (chunked transfer) the handler's buffer grows as the pieces come."""
    api = service.client()
    r = api.post("/api/v1/contacts/bulk", content=_pieces(), headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == ROWS


def test_a_json_import_with_a_string_that_is_not_utf8_is_a_400(service: Service) -> None:
    """msgspec refuses it with a UnicodeDecodeError, which answered 500 while Litestar decoded the body."""
    r = service.client().post("/api/v1/contacts/bulk", content=b'{"contacts": [{"phone": "+254712000001",'
                              b' "firstName": "\xff"}]}', headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "malformed_body"
    assert "not valid UTF-8" in r.json()["message"]


@pytest.mark.parametrize("body", [b'{"contacts": 5, "listId": ', b'{"contacts": [{"phone": 7.5}], "x": "\xff"}',
                                  b'{"contacts": [], "bogus": 1, "region": ' + b"[" * 3000 + b"]" * 3000 + b"}"])
def test_a_json_import_not_json_further_on_is_a_400_though_it_breaks_the_schema_first(service: Service,
                                                                                      body: bytes) -> None:
    """The typed decode stops at the first field that breaks the schema; the answer still says the body
    is not JSON, as when the whole body was parsed before it was checked (clients tell 400 from 422)."""
    api = service.client()
    r = api.post("/api/v1/contacts/bulk", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "malformed_body"
    assert api.get("/api/v1/contacts").json()["total"] == 0


def test_a_json_import_holds_what_arrived_not_what_content_length_announced(service: Service) -> None:
    """A client that announces a 40 MB body and sends a few bytes (slowly, or never the rest) makes the
    service hold those bytes, not 40 MB: a few such requests at once would otherwise hold gigabytes.
    The request is sent by hand over a socket (a client library would not send less than it announced);
    the allocations of the API (in this process) are read while it waits for the rest."""
    announced = 40_000_000
    token = mint_token(SECRET, uuid.uuid4(), "tester")
    head = (f"POST /api/v1/contacts/bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {announced}\r\n\r\n").encode()
    tracemalloc.start()
    try:
        with socket.create_connection(("127.0.0.1", service.server.port)) as sock:
            sock.sendall(head + b'{"contacts": [')
            time.sleep(0.5)  # the handler is reading the body by now
            largest = max(tracemalloc.take_snapshot().traces, key=lambda trace: trace.size)
    finally:
        tracemalloc.stop()
    assert largest.size < announced // 10, (f"a block of {largest.size} bytes is alive for a body that sent 14,"
                                            f" allocated at {largest.traceback}")


def test_a_json_import_sent_chunked_past_the_limit_is_a_413_and_stores_nothing(service: Service) -> None:
    """Without ``Content-Length`` nothing can be refused up front: the handler reads the body itself, and
    its stream stops at the endpoint's limit with the 413 a body announced too large gets."""
    from service.imports import BULK_MAX_BYTES

    def pieces() -> Iterator[bytes]:
        yield b'{"contacts": ['
        contact = json.dumps({"phone": "+254712000001", "notes": NOTE}).encode()
        for _ in range(BULK_MAX_BYTES // len(contact) + 64):
            yield contact + b","
        yield b'{"phone": "+254712000002"}]}'

    api = service.client()
    r = api.post("/api/v1/contacts/bulk", content=pieces(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text[:200]
    assert r.json()["message"] == f"the request body is larger than the {BULK_MAX_BYTES} bytes this endpoint accepts"
    assert api.get("/api/v1/contacts").json()["total"] == 0

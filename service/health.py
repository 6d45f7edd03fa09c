"""Liveness and readiness: ``/health`` says the process runs, ``/ready`` that PostgreSQL and NATS answer."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from service.bootstrap import Container


@get("/health", operation_id="getHealth", tags=["operations"], sync_to_thread=False)
def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def ready_route(container: Container, nats_url: str) -> HTTPRouteHandler:
    """``GET /ready`` for this container's database and the NATS at ``nats_url``."""

    @get("/ready", operation_id="getReadiness", tags=["operations"], responses={503: ResponseSpec(
        dict[str, Any], generate_examples=False, description="PostgreSQL or NATS is unreachable: `checks` says which")})
    async def ready() -> Response[dict[str, Any]]:
        """PostgreSQL and NATS are reachable."""
        checks: dict[str, str] = {}
        try:
            await asyncio.to_thread(_check_database, container)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"unavailable: {exc}"
        checks["nats"] = await _check_nats(nats_url)
        ok = all(v == "ok" for v in checks.values())
        return Response({"status": "ready" if ok else "not ready", "checks": checks},
                        status_code=200 if ok else 503)

    return ready


def _check_database(container: Container) -> None:
    """Both pools: the read pool and the event store's, which every write goes through."""
    with container.pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")
    with container.app.recorder.datastore.get_connection() as conn:  # waits up to CONTACTS_DB_TIMEOUT_S
        conn.execute("SELECT 1")


async def _check_nats(url: str) -> str:
    if not url:
        return "not configured"
    import nats
    from urllib.parse import urlsplit

    from events.nats_log import server_list

    address = urlsplit(url.split(",")[0])
    try:
        # A plain TCP connect first: nats-py's connect to a closed port retries until the
        # timeout (2 s per probe, reported as a timeout) and logs a traceback each time.
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.hostname, address.port or 4222), 1)
        writer.close()
    except ConnectionRefusedError:
        return "unavailable: connection refused"
    except (OSError, asyncio.TimeoutError) as exc:
        return f"unavailable: {type(exc).__name__}"
    try:
        nc = await asyncio.wait_for(nats.connect(server_list(url), connect_timeout=1, allow_reconnect=False,
                                                 max_reconnect_attempts=0, error_cb=_quiet), timeout=2)
        await nc.close()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"unavailable: {type(exc).__name__}"


async def _quiet(_: Exception) -> None:
    """nats-py's error callback: the readiness answer says what failed, the log need not."""

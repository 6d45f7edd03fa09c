"""Prometheus metrics: request latency (an ASGI middleware), and the lags read from the database at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import eventsourcing.persistence
import psycopg
import psycopg_pool
from litestar import get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from events.relay import RELAY_NAME
from service.bootstrap import Container

log = logging.getLogger(__name__)


class _GroupsCollector(Collector):
    """The group commits' totals (command/group_commit.py: LoopGroups, WriteGroups; a write's
    groups are those of the use cases on the loop and of those in threads, together), read at scrape time."""

    def __init__(self, container: Container):
        self.container = container

    def collect(self) -> Iterator[CounterMetricFamily]:
        unit_of_work = self.container.app.unit_of_work
        yield CounterMetricFamily("contacts_create_groups", "Statements that stored a group of creates",
                                  value=unit_of_work.creates.groups)
        yield CounterMetricFamily("contacts_grouped_creates", "Creates stored by those statements (their sum of sizes)",
                                  value=unit_of_work.creates.grouped)
        yield CounterMetricFamily("contacts_write_groups", "Transactions that committed a group of other single writes",
                                  value=unit_of_work.writes.groups + unit_of_work.loop_writes.groups)
        yield CounterMetricFamily("contacts_grouped_writes", "Writes committed by those transactions",
                                  value=unit_of_work.writes.grouped + unit_of_work.loop_writes.grouped)


class Metrics:
    """Prometheus metrics; lags are read from the database at scrape time."""

    def __init__(self, container: Container):
        self.container = container
        self.registry = CollectorRegistry()
        self.latency = Histogram("contacts_http_request_seconds", "HTTP request latency",
                                 ["method", "route", "status"], registry=self.registry)
        self.projection_lag = Gauge("contacts_projection_lag_events",
                                    "Stored events not yet applied to the read tables", registry=self.registry)
        self.relay_lag = Gauge("contacts_relay_lag_events", "Stored events not yet published to NATS",
                               registry=self.registry)
        self.quarantined = Gauge("contacts_projection_quarantined_events",
                                 "Events the projector could not apply (see projection_quarantine)",
                                 registry=self.registry)
        self.head = Gauge("contacts_event_store_head", "Last notification id in the event store",
                          registry=self.registry)
        self.pending_erasures = Gauge("contacts_pending_erasures",
                                      "Purged contacts whose messages are not yet erased from NATS"
                                      " (their contact.purged is published when they are)", registry=self.registry)
        self.registry.register(_GroupsCollector(container))
        self.database_up = Gauge("contacts_database_up", "1 if the last scrape could read the database, else 0",
                                 registry=self.registry)

    def scrape(self) -> bytes:
        """The metrics; while the database is away, the request metrics still, and the lags as NaN."""
        try:
            self._read_lags()
            self.database_up.set(1)
        except (psycopg.Error, psycopg_pool.PoolTimeout, eventsourcing.persistence.PersistenceError) as exc:
            # An outage is when the request metrics matter most: a failed scrape would lose them.
            log.warning("metrics: the database is unavailable (%s); lags reported as NaN", type(exc).__name__)
            self.database_up.set(0)
            for gauge in (self.head, self.projection_lag, self.quarantined, self.relay_lag, self.pending_erasures):
                gauge.set(float("nan"))
        return generate_latest(self.registry)

    def _read_lags(self) -> None:
        head = self.container.head()
        with self.container.pool.connection(timeout=1) as conn:
            projected = conn.execute("SELECT coalesce(min(position), 0) FROM projection_tracking").fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM projection_quarantine").fetchone()[0]
            relayed = conn.execute("SELECT position FROM relay_tracking WHERE name = %s", (RELAY_NAME,)).fetchone() \
                if conn.execute("SELECT to_regclass('relay_tracking')").fetchone()[0] else None
            erasing = conn.execute("SELECT count(*) FROM pending_erasures").fetchone()[0] \
                if conn.execute("SELECT to_regclass('pending_erasures')").fetchone()[0] else 0
        self.head.set(head)
        self.projection_lag.set(max(head - projected, 0))
        self.quarantined.set(quarantined)
        self.relay_lag.set(max(head - (relayed[0] if relayed else 0), 0))
        self.pending_erasures.set(erasing)

    def middleware(self, app: Any) -> Any:
        async def timed(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 500}

            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.latency.labels(scope["method"], route, str(status["code"])).observe(
                    time.perf_counter() - started)
        return timed


def metrics_route(metrics: Metrics) -> HTTPRouteHandler:
    """``GET /metrics``: the scrape of ``metrics``."""

    # Litestar appends "; charset=utf-8" to text/* types itself: without this the header said it twice.
    @get("/metrics", operation_id="getMetrics", tags=["operations"],
         media_type=CONTENT_TYPE_LATEST.replace("; charset=utf-8", ""), sync_to_thread=True)
    def metrics_endpoint() -> bytes:
        """Prometheus metrics: request latency, projection lag, relay lag."""
        return metrics.scrape()

    return metrics_endpoint

"""Per-account rate limit on write requests: a token bucket per account in each api process.

Every POST, PUT, PATCH and DELETE of an authenticated account takes one token; tokens
come back at ``per_minute / 60`` a second up to ``burst``. Without a token the request
answers 429 with ``Retry-After`` (whole seconds until the next token) before any work is
done. The buckets live in the process: with N api replicas behind a load balancer an
account can make up to N times the limit, so set the limit per replica.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from litestar.exceptions import HTTPException

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_IDLE_BUCKETS = 10_000  # past this many accounts, buckets that have refilled are forgotten


@dataclass
class Bucket:
    tokens: float
    updated: float


class WriteRateLimiter:
    """Token buckets keyed by account id; ``take`` returns 0 or the seconds to wait."""

    def __init__(self, per_minute: int, burst: int, clock: Any = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.clock = clock
        self.buckets: dict[Any, Bucket] = {}
        self.lock = threading.Lock()

    def take(self, account_id: Any) -> int:
        now = self.clock()
        with self.lock:
            bucket = self.buckets.get(account_id)
            if bucket is None:
                if len(self.buckets) >= MAX_IDLE_BUCKETS:
                    self._forget_full(now)
                bucket = self.buckets[account_id] = Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def _forget_full(self, now: float) -> None:
        self.buckets = {k: b for k, b in self.buckets.items()
                        if b.tokens + (now - b.updated) * self.rate < self.burst}


def rate_limit_middleware(per_minute: int, burst: int) -> Any:
    """ASGI middleware (inside authentication) answering 429 once an account's bucket is empty."""
    limiter = WriteRateLimiter(per_minute, burst)

    def factory(app: Any) -> Any:
        async def limited(scope: Any, receive: Any, send: Any) -> None:
            actor = scope.get("user") if scope["type"] == "http" else None
            if actor is not None and scope["method"] in WRITE_METHODS:
                wait = limiter.take(actor.account_id)
                if wait:
                    raise HTTPException(
                        status_code=429, headers={"Retry-After": str(wait), "RateLimit-Limit": str(per_minute)},
                        detail=f"more than {per_minute} writes a minute (bursts of {burst}) for this account;"
                               f" retry in {wait} s")
            await app(scope, receive, send)
        return limited

    return factory

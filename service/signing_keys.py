"""The identity provider's signing keys (``CONTACTS_JWKS_URL``): fetched off the event loop, kept through outages.

PyJWT's ``PyJWKClient`` fetches the key set over HTTP in the thread that asks for a key.
Asked from the authentication middleware, that thread was the event loop: a slow or
unreachable provider stopped every request of the process, ``/health`` included, for up
to the client's timeout (30 s) each time the set was fetched; an unreachable provider
answered 401 ("invalid token"), telling clients to sign in again; and a key the provider
had withdrawn stayed trusted until the process restarted (its per-key cache never
expires). Here the fetch runs in a thread, one at a time, and:

- the set is fetched again after ``MAX_AGE_S``, so a withdrawn key stops verifying then;
- a token naming a key the set lacks (a rotation) fetches again at most every
  ``UNKNOWN_KID_REFETCH_S``, so tokens with made-up key ids cannot make the service
  fetch on each request;
- when a fetch fails the last set stays in use, and the next try waits ``RETRY_S``;
  with no set at all the request answers 503 ``auth_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import jwt
from jwt import PyJWK

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
MAX_AGE_S = 300.0
UNKNOWN_KID_REFETCH_S = 30.0
RETRY_S = 5.0


class SigningKeysUnavailableError(Exception):
    """The key set could not be fetched and none was fetched before: no token can be checked."""


class SigningKeys:
    """The signing keys of a JWKS endpoint by key id, as of the last fetch that worked."""

    def __init__(self, url: str):
        self.client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT_S)
        self.keys: dict[str, PyJWK] = {}
        self.fetched_at: float | None = None  # the last fetch that worked
        self.failed_at: float | None = None  # the last fetch that did not, if after it
        self._fetching: asyncio.Future[None] | None = None

    async def key(self, kid: str) -> PyJWK:
        """The key ``kid`` names, fetching the set first when it is old or lacks it (and may be fetched again)."""
        now = time.monotonic()
        if self._due(now, kid):
            await self._refresh()
        if self.fetched_at is None:
            raise SigningKeysUnavailableError(f"the signing keys at CONTACTS_JWKS_URL could not be fetched"
                                              f" ({self.client.uri}); retry shortly")
        key = self.keys.get(kid)
        if key is None:
            raise jwt.InvalidKeyError(f"no signing key with kid {kid!r} at CONTACTS_JWKS_URL")
        return key

    def _due(self, now: float, kid: str) -> bool:
        if self.failed_at is not None and now - self.failed_at < RETRY_S:
            return False
        if self.fetched_at is None or now - self.fetched_at >= MAX_AGE_S:
            return True
        return kid not in self.keys and now - self.fetched_at >= UNKNOWN_KID_REFETCH_S

    async def _refresh(self) -> None:
        """One fetch at a time: requests that arrive during a fetch wait for it instead of starting another."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(asyncio.to_thread(self._fetch))
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, _: asyncio.Future[None]) -> None:
        self._fetching = None

    def _fetch(self) -> None:
        try:
            found = self.client.get_jwk_set(refresh=True)
        except (jwt.PyJWTError, ValueError, OSError) as exc:  # unreachable, an HTTP error, not JSON, no keys
            self.failed_at = time.monotonic()
            log.warning("could not fetch the signing keys at %s (%s); %s", self.client.uri, exc,
                        "keeping the last ones" if self.keys else "no token can be checked until it answers")
            return
        self.keys = {k.key_id: k for k in found.keys if k.key_id and k.public_key_use in ("sig", None)}
        self.fetched_at, self.failed_at = time.monotonic(), None

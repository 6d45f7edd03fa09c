"""Bearer JWT authentication through Litestar's authentication middleware and PyJWT.

HS256 with ``CONTACTS_JWT_SECRET`` by default; RS256/ES256 with a PEM public key
(``CONTACTS_JWT_PUBLIC_KEY``) or a JWKS endpoint (``CONTACTS_JWKS_URL``) in production.
Tokens must carry ``account_id`` (a UUID), ``sub`` (the actor, not blank) and ``exp``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from command.context import Actor
from service import logs
from service.settings import Settings
from service.signing_keys import SigningKeys

ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]


#: How long a verified token is trusted without checking its signature again (never past
#: its ``exp``), and how many are remembered. A client sends the same token with every
#: request; verifying it cost about 0.1 ms of the event loop's time per request with
#: HS256 (PyJWT inspects the key each time) and more with a JWKS look-up.
VERIFIED_TTL_S = 60.0
VERIFIED_MAX = 10_000


class TokenVerifier:
    """Turns a bearer token into an Actor, or raises NotAuthorizedException with the reason."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.jwks = SigningKeys(settings.jwks_url) if settings.jwks_url else None
        self.clock = clock
        # token -> (account_id, sub, trusted until): keyed by the whole token, signature
        # included, so only the exact bytes that verified are ever trusted.
        self._verified: dict[str, tuple[uuid.UUID, str, float]] = {}

    async def _key(self, token: str) -> tuple[Any, list[str]]:
        if self.jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str):
                raise jwt.InvalidTokenError("the token's header names no signing key ('kid')")
            return (await self.jwks.key(kid)).key, ASYMMETRIC
        if self.settings.jwt_public_key:
            return self.settings.jwt_public_key, ASYMMETRIC
        return self.settings.jwt_secret, ["HS256"]

    async def verify(self, token: str, request_id: str = "") -> Actor:
        known = self._verified.get(token)
        if known is not None:
            account_id, sub, until = known
            if self.clock() < until:
                return Actor(account_id=account_id, sub=sub, request_id=request_id)
            self._verified.pop(token, None)
        actor, exp = await self._verify_signed(token, request_id)
        if len(self._verified) >= VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (actor.account_id, actor.sub, min(exp, self.clock() + VERIFIED_TTL_S))
        return actor

    async def _verify_signed(self, token: str, request_id: str) -> tuple[Actor, float]:
        """The full check: signature, algorithm, claims; the Actor and the token's ``exp``."""
        try:
            key, algorithms = await self._key(token)
            claims = jwt.decode(token, key, algorithms=algorithms,
                                audience=self.settings.jwt_audience or None,
                                options={"require": ["exp", "account_id", "sub"],
                                         "verify_aud": bool(self.settings.jwt_audience)})
        except jwt.ExpiredSignatureError:
            raise NotAuthorizedException("token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthorizedException(f"token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise NotAuthorizedException(f"invalid token: {exc}") from None
        exp = float(claims["exp"])
        if self.clock() >= exp:  # PyJWT checked it by its own clock; this is the one the memory uses
            raise NotAuthorizedException("token has expired")
        try:
            account_id = uuid.UUID(str(claims["account_id"]))
        except ValueError:
            raise NotAuthorizedException("token claim 'account_id' must be a UUID") from None
        sub = str(claims["sub"])
        if not sub.strip():  # present but blank: events would record no actor
            raise NotAuthorizedException("token claim 'sub' must not be empty")
        return Actor(account_id=account_id, sub=sub[:200], request_id=request_id), exp


def mint_token(secret: str, account_id: uuid.UUID | str, sub: str = "developer", ttl_s: int = 86400) -> str:
    """An HS256 token for development and tests (``contacts token``)."""
    now = int(time.time())
    claims = {"account_id": str(account_id), "sub": sub, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


REQUEST_ID_KEY = "contacts_request_id"


def request_id_of(scope: Any) -> str:
    """The request's id: the client's ``X-Request-Id`` (first 100 characters) or a new one, fixed on first use.

    It is recorded on every event the request stores, and sent back by ``echo_request_id``,
    so a client can find its request in the history and the NATS messages.
    """
    state = scope.setdefault("state", {})
    if REQUEST_ID_KEY not in state:
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:100]
        state[REQUEST_ID_KEY] = sent or uuid.uuid4().hex
    return state[REQUEST_ID_KEY]


async def echo_request_id(message: Any, scope: Any) -> None:
    """A before_send hook: every response (errors and 404s too) carries ``X-Request-Id``.

    A coroutine: Litestar runs a plain function hook in a thread, twice a response (its
    start and its body), which cost every request two thread hops.
    """
    if message["type"] == "http.response.start":
        message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id_of(scope).encode("latin-1"))]


class JWTAuthMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates every route except the ones excluded (health, docs, metrics)."""

    def __init__(self, app: Any, verifier: TokenVerifier, exclude: list[str] | None = None):
        super().__init__(app, exclude=exclude)
        self.verifier = verifier

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise NotAuthorizedException("missing Authorization header (expected 'Bearer <token>')")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException("malformed Authorization header (expected 'Bearer <token>')")
        actor = await self.verifier.verify(token.strip(), request_id_of(connection.scope))
        logs.bind(account_id=actor.account_id, actor=actor.sub)  # what this request logs says whose it was
        return AuthenticationResult(user=actor, auth=token)

"""Bearer JWT authentication through Litestar's authentication middleware and PyJWT.

HS256 with ``CONTACTS_JWT_SECRET`` by default; RS256/ES256 with a PEM public key
(``CONTACTS_JWT_PUBLIC_KEY``) or a JWKS endpoint (``CONTACTS_JWKS_URL``) in production.
Tokens must carry ``account_id`` (a UUID), ``sub`` (the actor) and ``exp``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from command.context import Actor
from service.settings import Settings

ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]


class TokenVerifier:
    """Turns a bearer token into an Actor, or raises NotAuthorizedException with the reason."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None

    def _key(self, token: str) -> tuple[Any, list[str]]:
        if self.jwks is not None:
            return self.jwks.get_signing_key_from_jwt(token).key, ASYMMETRIC
        if self.settings.jwt_public_key:
            return self.settings.jwt_public_key, ASYMMETRIC
        return self.settings.jwt_secret, ["HS256"]

    def verify(self, token: str, request_id: str = "") -> Actor:
        try:
            key, algorithms = self._key(token)
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
        try:
            account_id = uuid.UUID(str(claims["account_id"]))
        except ValueError:
            raise NotAuthorizedException("token claim 'account_id' must be a UUID") from None
        return Actor(account_id=account_id, sub=str(claims["sub"])[:200], request_id=request_id)


def mint_token(secret: str, account_id: uuid.UUID | str, sub: str = "developer", ttl_s: int = 86400) -> str:
    """An HS256 token for development and tests (``contacts token``)."""
    now = int(time.time())
    claims = {"account_id": str(account_id), "sub": sub, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


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
        request_id = connection.headers.get("x-request-id", "")[:100] or uuid.uuid4().hex
        actor = self.verifier.verify(token.strip(), request_id)
        return AuthenticationResult(user=actor, auth=token)

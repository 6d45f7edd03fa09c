"""Bearer JWT: 401 with a JSON body for every bad token; RS256 via a public key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.auth import TokenVerifier
from service.settings import Settings
from tests.support import SECRET, Service

PATH = "/api/v1/contact-lists"


def _verified(verifier: TokenVerifier, token: str, request_id: str = "") -> object:
    return asyncio.run(verifier.verify(token, request_id))


# The parametrized tokens are made at collection: an hour keeps them valid however long the run.
def _token(secret: str = SECRET, **claims: object) -> str:
    base = {"account_id": str(uuid.uuid4()), "sub": "u1", "exp": int(time.time()) + 3600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


@pytest.mark.parametrize("header, reason", [
    (None, "missing Authorization"),
    ("Basic abc", "malformed Authorization"),
    ("Bearer", "malformed Authorization"),
    ("Bearer not.a.jwt", "invalid token"),
    (f"Bearer {_token(secret='another-secret-another-secret-1234')}", "invalid token"),
    (f"Bearer {_token(exp=int(time.time()) - 10)}", "expired"),
    (f"Bearer {_token(account_id=None)}", "account_id"),
    (f"Bearer {_token(account_id='acme')}", "must be a UUID"),
    (f"Bearer {_token(exp=None)}", "exp"),
    (f"Bearer {_token(sub=None)}", "'sub'"),
    (f"Bearer {_token(sub='')}", "'sub'"),
    (f"Bearer {_token(sub='   ')}", "'sub'"),
])
def test_bad_tokens_get_401_with_a_json_reason(service: Service, header: str | None, reason: str) -> None:
    http = service.anonymous()
    r = http.get(PATH, headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert reason in r.json()["message"]


def _contacts_token(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTACTS_JWT_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "service.cli", "token", "--account", str(uuid.uuid4()), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_contacts_token_prints_only_a_token_that_lives_as_long_as_asked() -> None:
    done = _contacts_token("--sub", "ops", "--ttl", "2h")
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops" and claims["exp"] - claims["iat"] == 7200
    assert done.stdout.count("\n") == 1


@pytest.mark.parametrize("sub", ["", "  "])
def test_contacts_token_refuses_an_empty_sub(sub: str) -> None:
    done = _contacts_token("--sub", sub)
    assert done.returncode != 0 and done.stdout == ""
    assert "--sub" in done.stderr and "empty" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("ttl", ["2w", "-5", "0", "0h", "h", "1.5h", ""])
def test_contacts_token_refuses_a_bad_or_non_positive_ttl(ttl: str) -> None:
    done = _contacts_token("--ttl", ttl)
    assert done.returncode == 2 and done.stdout == ""
    assert "argument --ttl" in done.stderr and "Nm/Nh/Nd" in done.stderr and "Traceback" not in done.stderr


def test_writes_with_bad_tokens_change_nothing(service: Service) -> None:
    account = uuid.uuid4()
    http = service.anonymous()
    r = http.post(PATH, json={"name": "x"},
                  headers={"Authorization": f"Bearer {_token(account_id=str(account), exp=1)}"})
    assert r.status_code == 401
    assert service.client(account).get(PATH).json() == []


def test_health_and_docs_need_no_token(service: Service) -> None:
    http = service.anonymous()
    assert http.get("/health").json() == {"status": "ok"}
    schema = http.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/contact-lists" in schema.json()["paths"]
    assert http.get("/schema/swagger").status_code == 200


def test_a_token_that_verified_is_refused_once_it_expires() -> None:
    """Verified tokens are remembered (the signature is not checked on every request), never past ``exp``."""
    from litestar.exceptions import NotAuthorizedException

    now = [time.time()]
    verifier = TokenVerifier(Settings(jwt_secret=SECRET), clock=lambda: now[0])
    account = uuid.uuid4()
    token = _token(account_id=str(account), exp=int(now[0]) + 30)
    assert _verified(verifier, token).account_id == account
    now[0] += 20
    assert _verified(verifier, token, "r2").account_id == account
    now[0] += 11  # past exp
    with pytest.raises(NotAuthorizedException, match="expired"):
        _verified(verifier, token)


def test_only_the_exact_token_that_verified_is_trusted() -> None:
    from litestar.exceptions import NotAuthorizedException

    verifier = TokenVerifier(Settings(jwt_secret=SECRET))
    token = _token()
    _verified(verifier, token)
    head, payload, signature = token.split(".")
    forged_claims = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"sub":"u1"', b'"sub":"u2"')).decode()
    for forged in (f"{head}.{forged_claims}.{signature}",
                   f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"):
        with pytest.raises(NotAuthorizedException, match="invalid token"):
            _verified(verifier, forged)


def test_rs256_tokens_verify_with_a_configured_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = TokenVerifier(Settings(jwt_public_key=public))
    account = uuid.uuid4()
    token = jwt.encode({"account_id": str(account), "sub": "svc", "exp": int(time.time()) + 60}, key,
                       algorithm="RS256")
    actor = _verified(verifier, token)
    assert actor.account_id == account and actor.sub == "svc"
    from litestar.exceptions import NotAuthorizedException

    with pytest.raises(NotAuthorizedException):
        _verified(verifier, _token())  # an HS256 token is refused when a public key is configured


def test_es256_tokens_verify_against_a_jwks_endpoint() -> None:
    """A JWKS URL (served here by a local HTTP server) supplies the verification keys."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="ES256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        verifier = TokenVerifier(Settings(jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json"))
        account = uuid.uuid4()
        token = jwt.encode({"account_id": str(account), "sub": "gateway", "exp": int(time.time()) + 60}, key,
                           algorithm="ES256", headers={"kid": "k1"})
        assert _verified(verifier, token).account_id == account
        from litestar.exceptions import NotAuthorizedException

        other = ec.generate_private_key(ec.SECP256R1())
        forged = jwt.encode({"account_id": str(account), "sub": "x", "exp": int(time.time()) + 60}, other,
                            algorithm="ES256", headers={"kid": "k1"})
        with pytest.raises(NotAuthorizedException):
            _verified(verifier, forged)
    finally:
        server.shutdown()

"""Tokens checked against an identity provider's JWKS endpoint (``CONTACTS_JWKS_URL``), through the real app:
the provider slow, down, rotating or withdrawing keys, and tokens naming keys that do not exist."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from service import signing_keys
from tests.support import Service, start_service
from tests.waits import wait_until

HANG_S = 4.0


class Provider:
    """A JWKS endpoint whose answer the test sets: the keys, an error, or no answer for ``HANG_S``."""

    def __init__(self) -> None:
        self.private = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}
        self.published = ["k1"]
        self.mode = "serve"  # or "fail" (HTTP 503), or "hang"
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                provider.fetches += 1
                if provider.mode == "hang":
                    time.sleep(HANG_S)
                if provider.mode == "fail":
                    self.send_error(503)
                    return
                body = json.dumps({"keys": [provider.jwk(kid) for kid in provider.published]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"

    def jwk(self, kid: str) -> dict[str, Any]:
        return {**json.loads(ECAlgorithm.to_jwk(self.private[kid].public_key())), "kid": kid, "use": "sig",
                "alg": "ES256"}

    def token(self, kid: str, account_id: uuid.UUID) -> str:
        """A new token each time (``jti``): the service remembers tokens it verified, not keys."""
        key = self.private.get(kid) or ec.generate_private_key(ec.SECP256R1())
        claims = {"account_id": str(account_id), "sub": "gateway", "exp": int(time.time()) + 600,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.server.shutdown()


@pytest.fixture
def service(provider: Provider, fresh_database: str, nats_url: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setattr(signing_keys, "FETCH_TIMEOUT_S", 1.5)
    svc = start_service(fresh_database, nats_url, with_worker=False, jwks_url=provider.url)
    yield svc
    svc.close()


def _get(svc: Service, token: str, path: str = "/api/v1/contacts") -> httpx.Response:
    return httpx.get(svc.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_key_provider_that_does_not_answer_holds_up_no_other_request_and_its_tokens_answer_503(
        provider: Provider, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    account = uuid.uuid4()
    provider.mode = "hang"
    with ThreadPoolExecutor(5) as pool:
        pending = [pool.submit(_get, service, provider.token("k1", account)) for _ in range(5)]
        wait_until(lambda: provider.fetches >= 1, "the service asked the provider for its keys")
        started = time.monotonic()
        health = httpx.get(service.url + "/health", timeout=30)
        health_took = time.monotonic() - started
        answers = [p.result() for p in pending]
    # The fetch used to run on the event loop: /health waited for the provider (HANG_S) like everything else.
    assert health.status_code == 200 and health_took < 1.0, health_took
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "auth_unavailable" and "CONTACTS_JWKS_URL" in answer.json()["message"]
        assert answer.headers["retry-after"] == "5"
    assert provider.fetches == 1  # the five requests waited for one fetch, and no request fetched again at once
    # It used to answer 401, "invalid token": clients would have signed in again for nothing.
    provider.mode = "serve"
    monkeypatch.setattr(signing_keys, "RETRY_S", 0.0)
    assert _get(service, provider.token("k1", account)).status_code == 200


def test_tokens_naming_keys_the_provider_does_not_have_are_refused_without_fetching_the_keys_each_time(
        provider: Provider, service: Service) -> None:
    account = uuid.uuid4()
    assert _get(service, provider.token("k1", account)).status_code == 200
    for _ in range(20):
        refused = _get(service, provider.token(f"made-up-{uuid.uuid4().hex[:8]}", account))
        assert refused.status_code == 401 and "no signing key with kid" in refused.json()["message"], refused.text
    assert provider.fetches == 1
    no_kid = jwt.encode({"account_id": str(account), "sub": "x", "exp": int(time.time()) + 60},
                        provider.private["k1"], algorithm="ES256")
    refused = _get(service, no_kid)
    assert refused.status_code == 401 and "kid" in refused.json()["message"], refused.text


def test_the_last_keys_stay_in_use_while_the_provider_is_down_and_a_withdrawn_key_stops_verifying(
        provider: Provider, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    account = uuid.uuid4()
    assert _get(service, provider.token("k1", account)).status_code == 200
    monkeypatch.setattr(signing_keys, "MAX_AGE_S", 0.3)
    monkeypatch.setattr(signing_keys, "RETRY_S", 0.0)
    provider.mode = "fail"
    time.sleep(0.4)
    assert _get(service, provider.token("k1", account)).status_code == 200  # the keys are old, the provider down
    assert provider.fetches == 2
    # The provider rotates: k2 published, k1 withdrawn. A token signed with k1 stops verifying once the
    # keys are fetched again (it used to be trusted until the process restarted).
    provider.mode, provider.published = "serve", ["k2"]
    time.sleep(0.4)
    assert _get(service, provider.token("k2", account)).status_code == 200
    refused = _get(service, provider.token("k1", account))
    assert refused.status_code == 401 and "no signing key with kid 'k1'" in refused.json()["message"], refused.text

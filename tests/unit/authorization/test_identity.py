"""The relying party of the upstream OpenID Connect provider: what ID tokens it accepts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from fhir_server.authorization.identity import SignInFailed, UpstreamProvider
from fhir_server.authorization.sessions import SignIn
from fhir_server.security.keys import ServerKey, load_server_key

ISSUER = "https://id.example.vn"
CLIENT = "fhir-health-book"
CALLBACK = "https://fhir.example.vn/fhir/auth/callback"


def sign_in() -> SignIn:
    return SignIn("id", "browser", "authorize", {}, "up-state", "the-nonce", "v" * 43, "csrf",
                  time.time() + 60)


def id_token(key: ServerKey, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "person-1", "iat": now, "exp": now + 300,
              "nonce": "the-nonce", "cccd": "001090012345", "name": "Nguyễn Văn An", **changes}
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


def provider(key: ServerKey, token: str, seen: list[httpx.Request],
             secret: str = "") -> UpstreamProvider:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={
                "issuer": ISSUER, "authorization_endpoint": ISSUER + "/authorize",
                "token_endpoint": ISSUER + "/token", "jwks_uri": ISSUER + "/jwks"})
        if request.url.path == "/jwks":
            return httpx.Response(200, json=key.jwks())
        return httpx.Response(200, json={"id_token": token, "access_token": "x"})

    return UpstreamProvider(ISSUER, CLIENT, secret, "cccd", "openid",
                            lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)))


@pytest.fixture
def key(tmp_path: Path) -> ServerKey:
    return load_server_key(tmp_path)


async def test_a_valid_id_token_gives_the_person_and_cccd(key: ServerKey) -> None:
    seen: list[httpx.Request] = []
    identity = await provider(key, id_token(key), seen).identity("code", sign_in(), CALLBACK)
    assert (identity.subject, identity.cccd, identity.name) == (
        "person-1", "001090012345", "Nguyễn Văn An")
    exchange = next(r for r in seen if r.url.path == "/token")
    form = dict(httpx.QueryParams(exchange.content.decode()))
    assert form["code_verifier"] == "v" * 43 and form["client_id"] == CLIENT


async def test_client_secret_is_sent_with_basic_authentication(key: ServerKey) -> None:
    seen: list[httpx.Request] = []
    await provider(key, id_token(key), seen, secret="s3cret").identity("c", sign_in(), CALLBACK)
    exchange = next(r for r in seen if r.url.path == "/token")
    assert exchange.headers["authorization"].startswith("Basic ")
    assert "client_id" not in dict(httpx.QueryParams(exchange.content.decode()))


@pytest.mark.parametrize("changes", [
    {"nonce": "another"}, {"nonce": None}, {"aud": "another-client"},
    {"iss": "https://evil.example.com"}, {"exp": int(time.time()) - 120}, {"cccd": None},
])
async def test_id_token_that_cannot_be_trusted_is_refused(
    key: ServerKey, changes: dict[str, Any]
) -> None:
    with pytest.raises(SignInFailed):
        await provider(key, id_token(key, **changes), []).identity("c", sign_in(), CALLBACK)


async def test_id_token_signed_by_another_key_is_refused(key: ServerKey, tmp_path: Path) -> None:
    stranger = load_server_key(tmp_path / "other")
    forged = id_token(ServerKey(stranger.private_key, key.kid))
    with pytest.raises(SignInFailed):
        await provider(key, forged, []).identity("c", sign_in(), CALLBACK)


async def test_authorization_url_carries_state_nonce_and_pkce(key: ServerKey) -> None:
    url = httpx.URL(await provider(key, "", []).authorization_url(sign_in(), CALLBACK))
    params = dict(url.params)
    assert url.path == "/authorize"
    assert params["state"] == "up-state" and params["nonce"] == "the-nonce"
    assert params["code_challenge_method"] == "S256" and params["redirect_uri"] == CALLBACK
    assert json.dumps(params).count("v" * 43) == 0  # the verifier itself never leaves

"""SMART Backend Services client assertions (private_key_jwt)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_server.security.client_assertion import (
    JtiStore,
    MemoryJtiStore,
    SqliteJtiStore,
    verify_client_assertion,
)
from fhir_server.security.clients import ClientRegistry, RegisteredClient
from fhir_server.security.oauth import OAuthError

if TYPE_CHECKING:
    from conftest import Signer

TOKEN_URL = "https://fhir.example.vn/fhir/auth/token"
CLIENT_ID = "bv-cho-ray"


def assertion_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": TOKEN_URL,
        "exp": now + 240,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.fixture
def registry(tmp_path: Path, es384: Signer, rs384: Signer) -> ClientRegistry:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    jwks = {"keys": [es384.public_jwk(), rs384.public_jwk()]}
    registry.add(RegisteredClient(CLIENT_ID, jwks, "system/*.cruds", "Organization/cho-ray"))
    return registry


@pytest.fixture(params=["memory", "sqlite"])
def jti_store(request: pytest.FixtureRequest, tmp_path: Path) -> JtiStore:
    if request.param == "memory":
        return MemoryJtiStore()
    return SqliteJtiStore(tmp_path / "auth.sqlite3")


Verify = Callable[[str], RegisteredClient]


@pytest.fixture
def verify(registry: ClientRegistry, jti_store: JtiStore) -> Verify:
    def run(assertion: str) -> RegisteredClient:
        return verify_client_assertion(
            assertion, token_url=TOKEN_URL, clients=registry, jti_store=jti_store
        )

    return run


def refusal(verify: Verify, assertion: str) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        verify(assertion)
    assert caught.value.error == "invalid_client" and caught.value.status == 401
    return caught.value


@pytest.mark.parametrize("signer_name", ["es384", "rs384"])
def test_valid_assertion_authenticates_the_client(
    verify: Verify, request: pytest.FixtureRequest, signer_name: str
) -> None:
    signer: Signer = request.getfixturevalue(signer_name)
    client = verify(signer.sign(assertion_claims()))
    assert client.client_id == CLIENT_ID and client.organization == "Organization/cho-ray"


def test_replayed_jti_is_rejected(verify: Verify, es384: Signer) -> None:
    assertion = es384.sign(assertion_claims())
    verify(assertion)
    assert "jti" in refusal(verify, assertion).description


def test_same_jti_in_a_new_assertion_is_rejected(verify: Verify, es384: Signer) -> None:
    verify(es384.sign(assertion_claims(jti="fixed")))
    refusal(verify, es384.sign(assertion_claims(jti="fixed", iat=int(time.time()) - 1)))


def test_exp_more_than_five_minutes_ahead_is_rejected(verify: Verify, es384: Signer) -> None:
    assertion = es384.sign(assertion_claims(exp=int(time.time()) + 600))
    assert "five minutes" in refusal(verify, assertion).description


def test_expired_assertion_is_rejected(verify: Verify, es384: Signer) -> None:
    now = int(time.time())
    refusal(verify, es384.sign(assertion_claims(exp=now - 120, iat=now - 300)))


@pytest.mark.parametrize(
    "audience", ["https://fhir.example.vn/fhir", "https://evil.example/auth/token"]
)
def test_assertion_for_another_audience_is_rejected(
    verify: Verify, es384: Signer, audience: str
) -> None:
    refusal(verify, es384.sign(assertion_claims(aud=audience)))


def test_rs256_signed_assertion_is_rejected(verify: Verify, rs256: Signer) -> None:
    assertion = rs256.sign(assertion_claims())
    assert "RS384 or ES384" in refusal(verify, assertion).description


def test_unknown_client_is_rejected(verify: Verify, es384: Signer) -> None:
    refusal(verify, es384.sign(assertion_claims(iss="stranger", sub="stranger")))


def test_sub_differing_from_iss_is_rejected(verify: Verify, es384: Signer) -> None:
    refusal(verify, es384.sign(assertion_claims(sub="someone-else")))


def test_assertion_signed_by_another_key_with_a_registered_kid_is_rejected(
    verify: Verify, es384: Signer
) -> None:
    stranger = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode(assertion_claims(), stranger, "ES384", headers={"kid": es384.kid})
    refusal(verify, token)


def test_assertion_without_kid_is_rejected(verify: Verify, es384: Signer) -> None:
    refusal(verify, jwt.encode(assertion_claims(), es384.private_key, "ES384"))


@pytest.mark.parametrize("claim", ["jti", "exp", "aud"])
def test_assertion_missing_a_required_claim_is_rejected(
    verify: Verify, es384: Signer, claim: str
) -> None:
    refusal(verify, es384.sign(assertion_claims(**{claim: None})))


def test_malformed_assertion_is_rejected(verify: Verify) -> None:
    refusal(verify, "not-a-jwt")


def test_memory_jti_store_forgets_expired_ids() -> None:
    store = MemoryJtiStore()
    assert store.remember(CLIENT_ID, "j1", time.time() - 1)
    assert store.remember(CLIENT_ID, "j1", time.time() + 60)
    assert not store.remember(CLIENT_ID, "j1", time.time() + 60)


def test_sqlite_jti_store_is_shared_between_instances(tmp_path: Path) -> None:
    path = tmp_path / "auth.sqlite3"
    assert SqliteJtiStore(path).remember(CLIENT_ID, "j1", time.time() + 60)
    assert not SqliteJtiStore(path).remember(CLIENT_ID, "j1", time.time() + 60)
    assert SqliteJtiStore(path).remember("other-client", "j1", time.time() + 60)

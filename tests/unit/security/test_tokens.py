"""Access-token verification (including the classic JWT attacks) and minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fhir_server.errors import Forbidden, Unauthorized
from fhir_server.security.keys import ServerKey, load_server_key
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.tokens import (
    CCCD_SYSTEM,
    AccessContext,
    TokenVerifier,
    TrustedIssuer,
    insufficient_scope,
    mint_access_token,
)

if TYPE_CHECKING:
    from conftest import Signer

Claims = Callable[..., dict[str, Any]]
BASE = "https://fhir.example.vn/fhir"
IDP = "https://idp.example.vn"


@pytest.fixture
def server_key(tmp_path: Path) -> ServerKey:
    return load_server_key(tmp_path)


@pytest.fixture
def verifier(tmp_path: Path, server_key: ServerKey, es256: Signer, rs256: Signer) -> TokenVerifier:
    jwks_path = tmp_path / "idp-jwks.json"
    jwks_path.write_text(json.dumps({"keys": [es256.public_jwk(), rs256.public_jwk()]}))
    idp = TrustedIssuer(IDP, jwks_path=jwks_path)
    return TokenVerifier(audience=BASE, server_key=server_key, trusted=[idp])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rejection(verifier: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(token)
    assert caught.value.status == 401
    return caught.value


def assert_invalid(verifier: TokenVerifier, token: str) -> None:
    error = rejection(verifier, token)
    assert error.message_id == "MSG_TOKEN_INVALID"
    assert error.headers["WWW-Authenticate"].startswith(
        'Bearer realm="fhir", error="invalid_token"'
    )


@pytest.mark.parametrize("signer_name", ["es256", "rs256"])
def test_valid_token_from_a_trusted_issuer_passes(
    verifier: TokenVerifier, claims_for: Claims, signer_name: str, request: pytest.FixtureRequest
) -> None:
    signer: Signer = request.getfixturevalue(signer_name)
    claims = claims_for(IDP, BASE, patient="p-1", client_id="app-1")
    context = verifier.verify(signer.sign(claims))
    assert context == AccessContext(
        subject="user-1",
        issuer=IDP,
        scopes=parse_scopes("patient/Observation.rs"),
        expires_at=claims["exp"],
        client_id="app-1",
        patient_id="p-1",
        token_id=claims["jti"],
    )


def test_forged_signature_with_the_same_kid_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, other_es256: Signer
) -> None:
    assert other_es256.kid == "es256"
    assert_invalid(verifier, other_es256.sign(claims_for(IDP, BASE)))


def test_alg_none_token_is_rejected(verifier: TokenVerifier, claims_for: Claims) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": "es256"}
    segments = [json.dumps(header).encode(), json.dumps(claims_for(IDP, BASE)).encode()]
    token = ".".join(b64url(segment) for segment in segments) + "."
    assert_invalid(verifier, token)
    assert_invalid(verifier, token + "c2lnbmF0dXJl")  # with a bogus signature too


@pytest.mark.parametrize(
    "encoding", [serialization.Encoding.PEM, serialization.Encoding.DER], ids=["pem", "der"]
)
def test_hs256_signed_with_the_public_key_bytes_is_rejected(
    verifier: TokenVerifier,
    claims_for: Claims,
    es256: Signer,
    encoding: serialization.Encoding,
) -> None:
    public_bytes = es256.private_key.public_key().public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "es256"}
    unsigned = jwt.encode(claims_for(IDP, BASE), "x" * 32, algorithm="HS256", headers=header)
    signing_input = unsigned.rsplit(".", 1)[0].encode()
    signature = hmac.new(public_bytes, signing_input, hashlib.sha256).digest()
    assert_invalid(verifier, signing_input.decode() + "." + b64url(signature))


def test_token_without_kid_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    assert_invalid(verifier, jwt.encode(claims_for(IDP, BASE), es256.private_key, "ES256"))


def test_token_with_unknown_kid_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    assert_invalid(verifier, es256.with_kid("rotated-away").sign(claims_for(IDP, BASE)))


def test_algorithm_not_matching_the_key_type_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es384: Signer
) -> None:
    # An ES384 signature presented under the kid of the trusted P-256 key.
    assert_invalid(verifier, es384.with_kid("es256").sign(claims_for(IDP, BASE)))


def test_algorithm_outside_the_allow_list_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, rs256: Signer
) -> None:
    token = jwt.encode(claims_for(IDP, BASE), rs256.private_key, "RS512", headers={"kid": "rsa"})
    assert_invalid(verifier, token)


def test_expired_token_is_rejected_as_expired(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    now = int(time.time())
    token = es256.sign(claims_for(IDP, BASE, iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    error = rejection(verifier, token)
    assert error.message_id == "MSG_TOKEN_EXPIRED"
    assert 'error="invalid_token"' in error.headers["WWW-Authenticate"]


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_not_yet_valid_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer, claim: str
) -> None:
    future = int(time.time()) + 3600
    token = es256.sign(claims_for(IDP, BASE, **{claim: future}, exp=future + 600))
    assert_invalid(verifier, token)


def test_token_for_another_audience_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    assert_invalid(verifier, es256.sign(claims_for(IDP, "https://other.example/fhir")))


def test_token_from_an_untrusted_issuer_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    assert_invalid(verifier, es256.sign(claims_for("https://evil.example", BASE)))


def test_token_claiming_the_servers_issuer_but_signed_by_another_issuer_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    assert_invalid(verifier, es256.sign(claims_for(BASE, BASE)))


@pytest.mark.parametrize("claim", ["exp", "sub", "aud"])
def test_token_missing_a_required_claim_is_rejected(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer, claim: str
) -> None:
    assert_invalid(verifier, es256.sign(claims_for(IDP, BASE, **{claim: None})))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a" * 20_000])
def test_malformed_token_is_rejected(verifier: TokenVerifier, token: str) -> None:
    assert_invalid(verifier, token)


def test_missing_authorization_header_asks_for_a_token(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify_authorization(None)
    assert caught.value.message_id == "MSG_TOKEN_MISSING"
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="fhir"'}


def test_non_bearer_authorization_is_invalid(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify_authorization("Basic dXNlcjpwYXNz")
    assert caught.value.message_id == "MSG_TOKEN_INVALID"


def test_bearer_authorization_header_is_verified(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    context = verifier.verify_authorization("Bearer " + es256.sign(claims_for(IDP, BASE)))
    assert context.issuer == IDP


def test_servers_own_minted_token_passes_with_its_claims(
    verifier: TokenVerifier, server_key: ServerKey
) -> None:
    token = mint_access_token(
        server_key,
        issuer=BASE,
        audience=BASE,
        subject="bv-cho-ray",
        scope="system/*.cruds openid",
        client_id="bv-cho-ray",
        organization="Organization/cho-ray",
        patient_identifier=(CCCD_SYSTEM, "001090012345"),
        ttl=120,
    )
    context = verifier.verify(token)
    assert context.subject == "bv-cho-ray" and context.client_id == "bv-cho-ray"
    assert context.scopes == parse_scopes("system/*.cruds")
    assert context.organization == "Organization/cho-ray"
    assert context.patient_identifier == (CCCD_SYSTEM, "001090012345")
    assert context.patient_id is None
    assert 0 < context.expires_at - time.time() <= 120
    assert jwt.get_unverified_header(token)["kid"] == server_key.kid


def test_minted_token_from_another_data_dir_is_rejected(
    verifier: TokenVerifier, tmp_path: Path
) -> None:
    stranger = load_server_key(tmp_path / "elsewhere")
    token = mint_access_token(stranger, issuer=BASE, audience=BASE, subject="x", scope="")
    assert_invalid(verifier, token)


def test_trusted_issuer_cccd_claim_becomes_a_patient_identifier(
    tmp_path: Path, claims_for: Claims, es256: Signer
) -> None:
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(es256.jwks()))
    vneid = TrustedIssuer(
        IDP, jwks_path=jwks_path, patient_claim=None, patient_identifier_claim="cccd"
    )
    verifier = TokenVerifier(audience=BASE, trusted=[vneid])
    context = verifier.verify(es256.sign(claims_for(IDP, BASE, cccd="079203001234", patient="x")))
    assert context.patient_identifier == (CCCD_SYSTEM, "079203001234")
    assert context.patient_id is None


def test_trusted_issuer_needs_exactly_one_key_source() -> None:
    with pytest.raises(ValueError):
        TrustedIssuer(IDP).key_source()


def test_insufficient_scope_is_a_403_with_a_stable_message_id() -> None:
    error = insufficient_scope()
    assert isinstance(error, Forbidden) and error.status == 403
    assert error.message_id == "MSG_SCOPE_INSUFFICIENT"
    assert 'error="insufficient_scope"' in error.headers["WWW-Authenticate"]


def test_repeated_verification_reuses_the_verified_context(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    token = es256.sign(claims_for(IDP, BASE))
    assert verifier.verify(token) is verifier.verify(token)


def test_cached_token_is_rejected_once_it_expires(server_key: ServerKey) -> None:
    verifier = TokenVerifier(audience=BASE, server_key=server_key, leeway=0)
    # At least a second of life left when it is first verified (at x.999 s, "+ 1" left a
    # millisecond, and a busy machine spent it before the first verification).
    expires = int(time.time()) + 2
    token = mint_access_token(
        server_key, issuer=BASE, audience=BASE, subject="s", scope="", now=expires - 2, ttl=2
    )
    verifier.verify(token)
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert rejection(verifier, token).message_id == "MSG_TOKEN_EXPIRED"


def test_scp_list_claim_is_read_as_scopes(
    verifier: TokenVerifier, claims_for: Claims, es256: Signer
) -> None:
    claims = claims_for(IDP, BASE, scope=None, scp=["system/*.rs", "openid"])
    assert verifier.verify(es256.sign(claims)).scopes == parse_scopes("system/*.rs")

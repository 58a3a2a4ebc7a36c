"""Test keys and token builders for the security tests (keys made with ``cryptography``)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Signer:
    """A private key with its kid and algorithm, able to sign test JWTs."""

    private_key: PrivateKey
    kid: str
    algorithm: str

    def public_jwk(self, **extra: str) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, **extra}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)

    def with_kid(self, kid: str) -> Signer:
        return Signer(self.private_key, kid, self.algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """Build a compact JWS by hand (for tokens PyJWT refuses to make)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


_KEYS: dict[str, PrivateKey] = {}


def _key(name: str, make: Callable[[], PrivateKey]) -> PrivateKey:
    # Generating RSA keys is slow; keys are immutable, so tests may share them.
    if name not in _KEYS:
        _KEYS[name] = make()
    return _KEYS[name]


@pytest.fixture
def es256() -> Signer:
    return Signer(_key("p256", lambda: ec.generate_private_key(ec.SECP256R1())), "es256", "ES256")


@pytest.fixture
def es384() -> Signer:
    return Signer(_key("p384", lambda: ec.generate_private_key(ec.SECP384R1())), "es384", "ES384")


@pytest.fixture
def other_es256() -> Signer:
    return Signer(_key("p256b", lambda: ec.generate_private_key(ec.SECP256R1())), "es256", "ES256")


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rs256() -> Signer:
    return Signer(_key("rsa", _rsa), "rsa", "RS256")


@pytest.fixture
def rs384() -> Signer:
    return Signer(_key("rsa", _rsa), "rsa", "RS384")


@pytest.fixture
def claims_for() -> Callable[..., dict[str, Any]]:
    """Return a builder of valid access-token claims, overridable per test."""

    def build(issuer: str, audience: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": "user-1",
            "scope": "patient/Observation.rs",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    return build

"""Signing and verification keys: the server's own ES256 key and parsed public JWKS.

The server signs the access tokens it issues itself with one ES256 (P-256) key kept in
``<data_dir>/keys/server-key.pem`` (PKCS#8 PEM, mode 0600), created on first use. Its ``kid`` is
the RFC 7638 JWK thumbprint of the public key, so it changes exactly when the key does. OpenID
Connect ID tokens are signed with RS256, which SMART's ``sso-openid-connect`` requires, by an
RSA 2048 key kept the same way in ``<data_dir>/keys/id-token-key.pem``.

Public keys from a JWKS (trusted issuers, registered clients) are parsed once into
:class:`VerificationKey` values holding ``cryptography`` key objects and the algorithms that key
may verify. Binding algorithms to the key type is what defeats algorithm confusion: an RSA key
never verifies an ES or HS signature, and symmetric (``oct``) keys are never loaded at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = [
    "ID_TOKEN_KEY_PATH",
    "SERVER_KEY_PATH",
    "IdTokenKey",
    "InvalidKey",
    "PublicKey",
    "ServerKey",
    "VerificationKey",
    "jwk_thumbprint",
    "load_id_token_key",
    "load_server_key",
    "parse_jwk",
    "parse_jwks",
]

SERVER_KEY_PATH = Path("keys") / "server-key.pem"
ID_TOKEN_KEY_PATH = Path("keys") / "id-token-key.pem"
MIN_RSA_BITS = 2048

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_log = logging.getLogger(__name__)
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_CURVE_ALGORITHM = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})


class InvalidKey(ValueError):
    """A JWK that cannot be used to verify signatures."""


@dataclass(frozen=True)
class VerificationKey:
    """A parsed public key, its ``kid`` and the JWS algorithms it may verify."""

    kid: str
    key: PublicKey
    algorithms: frozenset[str]


@dataclass(frozen=True)
class ServerKey:
    """The server's own signing key (ES256) and its thumbprint ``kid``."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str
    algorithm: str = "ES256"

    def public_jwk(self) -> dict[str, str]:
        """Return the public key as a JWK with ``kid``, ``use`` and ``alg``."""
        return _signature_jwk(self.private_key.public_key(), self.kid, self.algorithm)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Return the public JWKS document (``{"keys": [...]}``) to publish."""
        return {"keys": [self.public_jwk()]}

    def verification_key(self) -> VerificationKey:
        """Return the public half as a :class:`VerificationKey`."""
        return VerificationKey(self.kid, self.private_key.public_key(), frozenset({self.algorithm}))


@dataclass(frozen=True)
class IdTokenKey:
    """The server's RS256 key for OpenID Connect ID tokens and its thumbprint ``kid``."""

    private_key: rsa.RSAPrivateKey
    kid: str
    algorithm: str = "RS256"

    def public_jwk(self) -> dict[str, str]:
        """Return the public key as a JWK with ``kid``, ``use`` and ``alg``."""
        return _signature_jwk(self.private_key.public_key(), self.kid, self.algorithm)

    def private_pem(self) -> bytes:
        """Return the private key as unencrypted PKCS#8 PEM (for the JOSE library)."""
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of an EC or RSA JWK (base64url, no padding)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(name not in jwk for name in members):
        raise InvalidKey("thumbprints are defined here for EC and RSA keys only")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _signature_jwk(key: PublicKey, kid: str, algorithm: str) -> dict[str, str]:
    return {**_public_members(key), "kid": kid, "use": "sig", "alg": algorithm}


def _public_members(key: PublicKey) -> dict[str, str]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        members = ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        members = RSAAlgorithm.to_jwk(key, as_dict=True)
    return {name: str(value) for name, value in members.items()}


def load_server_key(data_dir: Path, relative: Path = SERVER_KEY_PATH) -> ServerKey:
    """Return the ES256 key at ``data_dir / relative`` (the server key by default), creating it
    (mode 0600) on first use."""
    private_key = _load_private_key(data_dir / relative,
                                    lambda: ec.generate_private_key(ec.SECP256R1()))
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != (
        "secp256r1"
    ):
        raise InvalidKey(f"{data_dir / relative} is not a P-256 (ES256) private key")
    kid = jwk_thumbprint(_public_members(private_key.public_key()))
    return ServerKey(private_key, kid)


def load_id_token_key(data_dir: Path) -> IdTokenKey:
    """Return the RS256 ID token key from ``data_dir``, creating it (mode 0600) on first use."""
    path = data_dir / ID_TOKEN_KEY_PATH
    private_key = _load_private_key(path, lambda: rsa.generate_private_key(65537, MIN_RSA_BITS))
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < MIN_RSA_BITS:
        raise InvalidKey(f"{path} is not an RSA private key of at least {MIN_RSA_BITS} bits")
    return IdTokenKey(private_key, jwk_thumbprint(_public_members(private_key.public_key())))


def _load_private_key(path: Path, generate: Callable[[], Any]) -> Any:
    if not path.exists():
        _create_key_file(path, generate())
    if path.stat().st_mode & 0o077:
        _log.warning("key %s is readable by group or others; chmod 600 it", path)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _create_key_file(path: Path, private_key: Any) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Write a private temp file, then hard-link it into place: the link is atomic and fails if
    # another process created the key first, so concurrent first starts agree on one key.
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".server-key-")
    try:
        with os.fdopen(descriptor, "wb") as handle:  # mkstemp creates the file with mode 0600
            handle.write(pem)
        os.link(temp_name, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temp_name)


def parse_jwks(jwks: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """Parse a JWKS document into verification keys by ``kid``.

    Keys that are not signature keys (``use`` other than ``sig``), symmetric keys and keys of
    unsupported types are skipped. A key without ``kid`` is filed under its RFC 7638 thumbprint.
    Raises :class:`InvalidKey` if the document has no ``keys`` list.
    """
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise InvalidKey("a JWKS document needs a 'keys' list")
    parsed: dict[str, VerificationKey] = {}
    for entry in entries:
        try:
            key = parse_jwk(entry)
        except InvalidKey as exc:
            _log.info("skipping JWK: %s", exc)
            continue
        parsed[key.kid] = key
    return parsed


def parse_jwk(jwk: Any) -> VerificationKey:
    """Parse one public JWK; raises :class:`InvalidKey` if it cannot verify signatures."""
    if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig":
        raise InvalidKey("not a signature JWK")
    if "d" in jwk:
        raise InvalidKey("a published JWK must not contain private members")
    key, algorithms = _load_public_key(jwk)
    declared = jwk.get("alg")
    if declared is not None:
        algorithms &= {declared}
    if not algorithms:
        raise InvalidKey(f"JWK 'alg' {declared!r} does not suit its key type")
    kid = jwk.get("kid") or jwk_thumbprint(jwk)
    return VerificationKey(str(kid), key, frozenset(algorithms))


def _load_public_key(jwk: Mapping[str, Any]) -> tuple[PublicKey, set[str]]:
    try:
        if jwk.get("kty") == "EC":
            ec_key = ECAlgorithm.from_jwk(dict(jwk))
            if isinstance(ec_key, ec.EllipticCurvePublicKey):
                return ec_key, {_CURVE_ALGORITHM[str(jwk["crv"])]}
        elif jwk.get("kty") == "RSA":
            rsa_key = RSAAlgorithm.from_jwk(dict(jwk))
            if isinstance(rsa_key, rsa.RSAPublicKey) and rsa_key.key_size >= MIN_RSA_BITS:
                return rsa_key, set(_RSA_ALGORITHMS)
    except Exception as exc:  # PyJWT raises several types for malformed JWKs
        raise InvalidKey(f"malformed JWK: {exc}") from exc
    raise InvalidKey(f"unsupported or weak key (kty={jwk.get('kty')!r})")

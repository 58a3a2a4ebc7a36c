"""JSON signatures (R4 datatypes.html#JSON): a JWS (RFC 7515) in ``Signature.data`` (base64 of
its compact serialization), detached (the payload part empty: it is the canonical JSON of
the signed content) or with the payload (which must then be that canonical JSON).

Accepted: RS256/384/512, PS256/384/512 and ES256/384/512 (PyJWT's implementations, over
``cryptography``); the signer's certificate and its chain in ``x5c``; the signing time in the
JAdES header ``sigT`` (else ``iat``, else ``Signature.when``); an unencoded payload (RFC 7797,
``b64: false``). A ``crit`` header naming anything else is refused, as RFC 7515 requires.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from fhir_server.signatures.trust import TrustList, load_certificates
from fhir_server.signatures.verification import Status, Verification

__all__ = [
    "ALGORITHMS",
    "JOSE",
    "SignatureError",
    "certificate_facts",
    "parse_instant",
    "sign_jws",
    "verify_jws",
]

JOSE = "application/jose"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_UNDERSTOOD = frozenset({"b64", "sigT", "srCms", "x5t#S256"})
#: How far a signing time may lie after the moment of receipt (clocks differ).
CLOCK_SKEW = timedelta(minutes=5)
_IMPLEMENTATIONS = get_default_algorithms()

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class SignatureError(Exception):
    """A signature that cannot be checked: its ``status`` (malformed, unsupported...)."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_instant(value: object) -> datetime:
    """An ISO 8601 instant (a zone is required) or seconds since 1970; raises
    ``SignatureError`` (malformed)."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise SignatureError(Status.MALFORMED, f"'{value}' is not a signing time with a zone")
    return moment.astimezone(UTC)


def certificate_facts(certificate: x509.Certificate) -> dict[str, Any]:
    """The signer, issuer, serial number and DER of a certificate (``Verification`` fields)."""
    return {"signer": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x"),
            "certificate": certificate.public_bytes(serialization.Encoding.DER)}


def _compact(signature: dict[str, Any]) -> list[str]:
    try:
        text = base64.b64decode(str(signature.get("data", "")), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureError(Status.MALFORMED, "Signature.data is not base64 of a JWS") from None
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise SignatureError(Status.MALFORMED, "Signature.data is not a JWS in compact form")
    return parts


def _header(encoded: str) -> dict[str, Any]:
    try:
        header = orjson.loads(_unb64url(encoded))
    except (binascii.Error, ValueError):
        header = None
    if not isinstance(header, dict):
        raise SignatureError(Status.MALFORMED, "the JWS header is not a JSON object")
    if header.get("alg") not in ALGORITHMS:
        raise SignatureError(Status.UNSUPPORTED, f"algorithm {header.get('alg')!r} is not "
                             f"accepted (use one of {', '.join(ALGORITHMS)})")
    critical = header.get("crit", [])
    if not isinstance(critical, list) or set(map(str, critical)) - _UNDERSTOOD:
        raise SignatureError(Status.UNSUPPORTED, f"critical header parameters {critical!r} "
                             "are not understood")
    return header


def _chain(header: dict[str, Any]) -> list[x509.Certificate]:
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain:
        raise SignatureError(Status.MALFORMED, "the JWS carries no certificate (x5c)")
    try:
        return [load_certificates(base64.b64decode(str(item)))[0] for item in chain]
    except (binascii.Error, ValueError):
        raise SignatureError(Status.MALFORMED, "x5c holds something other than "
                             "base64 DER certificates") from None


def _signing_input(parts: list[str], header: dict[str, Any], content: bytes) -> bytes:
    encoded = header.get("b64", True) is not False
    if parts[1]:
        if not encoded or _unb64url(parts[1]) != content:
            raise SignatureError(Status.INVALID, "the JWS payload is not the signed content")
        return f"{parts[0]}.{parts[1]}".encode()
    payload = _b64url(content).encode() if encoded else content
    return parts[0].encode() + b"." + payload


def _check(parts: list[str], header: dict[str, Any], content: bytes,
           certificate: x509.Certificate) -> None:
    algorithm = _IMPLEMENTATIONS[str(header["alg"])]
    try:
        valid = algorithm.verify(_signing_input(parts, header, content),
                                 certificate.public_key(), _unb64url(parts[2]))
    except (binascii.Error, ValueError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise SignatureError(Status.INVALID, "the signature does not match the signed content "
                             "and the signer's key")


def _signed_at(header: dict[str, Any], signature: dict[str, Any]) -> datetime:
    for value in (header.get("sigT"), header.get("iat"), signature.get("when")):
        if value is not None:
            return parse_instant(value)
    raise SignatureError(Status.MALFORMED, "the signature gives no signing time")


def verify_jws(signature: dict[str, Any], content: bytes, trust: TrustList,
               received: datetime, canonicalization: str = "") -> Verification:
    """Check the JWS of ``signature`` (a FHIR Signature) over ``content``: the signature, then
    the signer's certificate at the signing time (revocation at ``received``)."""
    result = Verification(Status.VERIFIED, "", "jws", canonicalization=canonicalization,
                          verified_at=received.isoformat())
    try:
        parts = _compact(signature)
        header = _header(parts[0])
        chain = _chain(header)
        result = Verification(Status.VERIFIED, "", "jws", str(header["alg"]), canonicalization,
                              verified_at=received.isoformat(), **certificate_facts(chain[0]))
        signed_at = _signed_at(header, signature)
        result = replace(result, signing_time=signed_at.isoformat())
        _check(parts, header, content, chain[0])
    except SignatureError as exc:
        return result.failed(exc.status, exc.detail)
    return judged(result, trust, chain, signed_at, received)


def judged(result: Verification, trust: TrustList, chain: Sequence[x509.Certificate],
           signed_at: datetime, received: datetime) -> Verification:
    """``result`` (a signature that matches its content) with the trust list's judgement of
    its signer."""
    if signed_at > received + CLOCK_SKEW:
        return result.failed(Status.INVALID, f"the signing time {signed_at.isoformat()} is "
                             f"after the signature was received ({received.isoformat()})")
    outcome = trust.check(chain[0], chain, signed_at, received)
    detail = "the signature matches the content and its signer is trusted" \
        if outcome.status is Status.VERIFIED else outcome.detail
    return replace(result, status=outcome.status, detail=detail, anchor=outcome.anchor)


def _algorithm_for(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]


def sign_jws(content: bytes, key: PrivateKey, chain: Sequence[x509.Certificate],
             signed_at: datetime, algorithm: str | None = None, detached: bool = True) -> str:
    """The base64 (``Signature.data``) of a JWS over ``content`` by ``key``, carrying
    ``chain`` (the signer's certificate first) and the signing time (``sigT``)."""
    alg = algorithm or _algorithm_for(key)
    header = {"alg": alg, "typ": "JOSE", "sigT": signed_at.astimezone(UTC).isoformat(),
              "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                      for c in chain]}  # fmt: skip
    encoded = f"{_b64url(orjson.dumps(header))}.{_b64url(content)}"
    signature = _IMPLEMENTATIONS[alg].sign(encoded.encode(), key)
    head, payload = encoded.split(".")
    compact = f"{head}.{'' if detached else payload}.{_b64url(signature)}"
    return base64.b64encode(compact.encode()).decode()

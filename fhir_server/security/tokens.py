"""Access tokens: verify JWTs from trusted issuers and mint the server's own.

Verification (PyJWT) checks the signature against the issuer's keys, ``iss``, ``aud``, ``exp``
(required), ``nbf`` and ``iat``. Only RS256, RS384, ES256 and ES384 are accepted, and only with a
key of the matching type, so ``alg: none`` and HMAC-with-the-public-key tokens fail; a token must
name its key with ``kid``. The issuer is read from the unverified payload only to choose which
keys to try; the verified token must then carry that same ``iss``.

A token issued by the server's own SMART App Launch flow names its authorization (``grant_id``);
when the verifier is given a :class:`RevocationCheck`, such a token is refused once that
authorization (or the token's ``jti``) is revoked, even if it was verified and cached before.

A verified token is cached by its exact text (bounded, until it expires, at most five minutes),
so the repeated requests of one client cost a dictionary look-up instead of a signature check.
Key look-ups may fetch a JWKS URL (blocking); call ``verify`` from a worker thread in async code
when remote issuers are configured.

Failures raise :class:`fhir_server.errors.Unauthorized` with a ``WWW-Authenticate`` header
(RFC 6750) and message id ``MSG_TOKEN_MISSING``, ``MSG_TOKEN_INVALID`` or ``MSG_TOKEN_EXPIRED``;
:func:`insufficient_scope` builds the matching ``Forbidden`` (``MSG_SCOPE_INSUFFICIENT``).
"""

from __future__ import annotations

import base64
import functools
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
import orjson

from fhir_server.errors import Forbidden, Unauthorized
from fhir_server.security.jwks import FileJwks, JwksSource, RemoteJwks, StaticJwks
from fhir_server.security.keys import ServerKey
from fhir_server.security.scopes import Scope, parse_scopes

__all__ = [
    "ACCEPTED_ALGORITHMS",
    "CCCD_SYSTEM",
    "AccessContext",
    "RevocationCheck",
    "TokenVerifier",
    "TrustedIssuer",
    "insufficient_scope",
    "mint_access_token",
]

ACCEPTED_ALGORITHMS = frozenset({"RS256", "RS384", "ES256", "ES384"})
CCCD_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/national_id"
MAX_TOKEN_LENGTH = 16_384
MAX_CACHED_TOKENS = 10_000
MAX_CACHE_SECONDS = 300.0
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_EXPIRED = "MSG_TOKEN_EXPIRED"
_INVALID = "MSG_TOKEN_INVALID"


@dataclass(frozen=True)
class TrustedIssuer:
    """An authorization server whose tokens the server accepts.

    Exactly one of ``jwks_path`` and ``jwks_url`` names its keys. ``audience`` defaults to the
    server's base URL. The patient is found in the ``patient_claim`` (a Patient id) or in the
    ``patient_identifier_claim``: a bare number in ``patient_identifier_system`` (the CCCD by
    default), or ``system|value`` when that system is ``None``.
    """

    issuer: str
    jwks_path: Path | None = None
    jwks_url: str | None = None
    audience: str | None = None
    patient_claim: str | None = "patient"
    patient_identifier_claim: str | None = None
    patient_identifier_system: str | None = CCCD_SYSTEM

    def key_source(self) -> JwksSource:
        """Return the key source this configuration names; raises ``ValueError`` if unclear."""
        if (self.jwks_path is None) == (self.jwks_url is None):
            raise ValueError(f"issuer {self.issuer}: give exactly one of jwks_path, jwks_url")
        if self.jwks_path is not None:
            return FileJwks(self.jwks_path)
        return RemoteJwks(str(self.jwks_url))


@dataclass(frozen=True)
class AccessContext:
    """Who is calling and what the verified token lets them do."""

    subject: str
    issuer: str
    scopes: tuple[Scope, ...]
    expires_at: int
    client_id: str | None = None
    patient_id: str | None = None
    patient_identifier: tuple[str, str] | None = None
    organization: str | None = None
    token_id: str | None = None
    fhir_user: str | None = None
    #: The authorization (token family) of a token from the server's App Launch flow.
    grant_id: str | None = None


class RevocationCheck(Protocol):
    """Tells whether an authorization or a single token was revoked (the authorization store)."""

    def is_revoked(self, family_id: str | None, jti: str | None) -> bool:
        """Return whether tokens of ``family_id``, or the token ``jti``, are refused."""
        ...


@dataclass(frozen=True)
class _Issuer:
    config: TrustedIssuer
    keys: JwksSource
    audience: str


def _unauthorized(message_id: str, description: str) -> Unauthorized:
    header = f'Bearer realm="fhir", error="invalid_token", error_description="{description}"'
    return Unauthorized(description, message_id=message_id, headers={"WWW-Authenticate": header})


def insufficient_scope(description: str = "the token's scopes do not allow this") -> Forbidden:
    """Return the 403 for a valid token whose scopes do not cover the request."""
    header = f'Bearer realm="fhir", error="insufficient_scope", error_description="{description}"'
    return Forbidden(
        description, message_id="MSG_SCOPE_INSUFFICIENT", headers={"WWW-Authenticate": header}
    )


class _VerifiedTokens:
    """A bounded cache of tokens already verified, so a client's repeated requests skip the
    signature check (about 0.2 ms in PyJWT) until the token expires.

    Keyed by the exact token text, so a hit is the same bytes that verified. An entry lives at
    most ``MAX_CACHE_SECONDS``: that bounds how long a token signed by a key the issuer has
    since withdrawn stays accepted.
    """

    def __init__(self, leeway: float) -> None:
        self._leeway = leeway
        self._entries: dict[str, tuple[AccessContext, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> AccessContext | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if time.time() < entry[1]:
            return entry[0]
        with self._lock:
            self._entries.pop(token, None)
        return None

    def put(self, token: str, context: AccessContext) -> None:
        until = min(context.expires_at + self._leeway, time.time() + MAX_CACHE_SECONDS)
        with self._lock:
            if len(self._entries) >= MAX_CACHED_TOKENS:
                # Evict the oldest entry (dicts keep insertion order).
                self._entries.pop(next(iter(self._entries)))
            self._entries[token] = (context, until)


class TokenVerifier:
    """Verifies bearer tokens from the server itself and from configured trusted issuers."""

    def __init__(
        self,
        *,
        audience: str,
        server_key: ServerKey | None = None,
        own_issuer: str | None = None,
        trusted: Sequence[TrustedIssuer] = (),
        key_sources: Mapping[str, JwksSource] | None = None,
        leeway: float = 30.0,
        revocations: RevocationCheck | None = None,
    ) -> None:
        """``audience`` is the server's base URL; ``own_issuer`` (default: it) signs with
        ``server_key``. Each trusted issuer's keys come from ``key_sources[issuer]`` if given,
        else from its configuration (:meth:`TrustedIssuer.key_source`). ``revocations`` is
        asked about every token that carries a ``grant_id``."""
        sources = key_sources or {}
        self._leeway = leeway
        self._revocations = revocations
        self._verified = _VerifiedTokens(leeway)
        self._issuers: dict[str, _Issuer] = {}
        if server_key is not None:
            own = TrustedIssuer(
                own_issuer or audience,
                patient_identifier_claim="patient_identifier",
                patient_identifier_system=None,
            )
            keys = StaticJwks({server_key.kid: server_key.verification_key()})
            self._issuers[own.issuer] = _Issuer(own, keys, audience)
        for config in trusted:
            source = sources.get(config.issuer) or config.key_source()
            self._issuers[config.issuer] = _Issuer(config, source, config.audience or audience)

    def verify_authorization(self, authorization: str | None) -> AccessContext:
        """Verify an ``Authorization`` header value (``Bearer <token>``)."""
        if not authorization:
            header = 'Bearer realm="fhir"'  # RFC 6750 §3.1: no error code when none was sent
            raise Unauthorized(
                "an access token is required",
                message_id="MSG_TOKEN_MISSING",
                headers={"WWW-Authenticate": header},
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(_INVALID, "the Authorization header is not a Bearer token")
        return self.verify(token.strip())

    def verify(self, token: str) -> AccessContext:
        """Verify a JWT access token; raises ``Unauthorized`` if it is not acceptable."""
        cached = self._verified.get(token)
        if cached is not None:
            return self._unrevoked(cached)
        if len(token) > MAX_TOKEN_LENGTH:
            raise _unauthorized(_INVALID, "the token is too long")
        header, payload = _unverified_segments(token)
        issuer = self._issuers.get(str(payload.get("iss", "")))
        if issuer is None:
            raise _unauthorized(_INVALID, "the token's issuer is not trusted")
        context = _access_context(self._decode(token, header, issuer), issuer.config)
        self._verified.put(token, context)
        return self._unrevoked(context)

    def revoked(self, grant_id: str | None) -> bool:
        """Whether the App Launch authorization ``grant_id`` has been revoked (a
        subscription created with one of its tokens delivers nothing after that)."""
        return (grant_id is not None and self._revocations is not None
                and self._revocations.is_revoked(grant_id, None))

    def _unrevoked(self, context: AccessContext) -> AccessContext:
        if (context.grant_id is not None and self._revocations is not None
                and self._revocations.is_revoked(context.grant_id, context.token_id)):
            raise _unauthorized(_INVALID, "the token has been revoked")
        return context

    def _decode(self, token: str, header: dict[str, Any], issuer: _Issuer) -> dict[str, Any]:
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ACCEPTED_ALGORITHMS:
            raise _unauthorized(_INVALID, "the token's signing algorithm is not accepted")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized(_INVALID, "the token does not name its key (kid)")
        key = issuer.keys.find(kid)
        if key is None or algorithm not in key.algorithms:
            raise _unauthorized(_INVALID, "the token's key (kid) is unknown for its issuer")
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=issuer.audience,
                issuer=issuer.config.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized(_EXPIRED, "the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(_INVALID, _describe(exc)) from exc


def _describe(error: jwt.InvalidTokenError) -> str:
    # Fixed texts only: the header must not echo anything the caller put in the token.
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not yet valid"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is meant for another audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token's issuer does not match"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the required claim {error.claim}"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    return "the token is invalid"


def _unverified_segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the JOSE header and payload of a compact JWS, not yet verified.

    Used only to choose the issuer and key; PyJWT then parses and checks the token itself.
    (Parsing here rather than with ``jwt.get_unverified_header`` saves a third of the cost.)
    """
    if _COMPACT_JWS.fullmatch(token) is None:
        raise _unauthorized(_INVALID, "the token is not a well-formed JWT")
    try:
        header, payload = (_decode_segment(part) for part in token.split(".")[:2])
    except ValueError as exc:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        raise _unauthorized(_INVALID, "the token is not a well-formed JWT") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise _unauthorized(_INVALID, "the token is not a well-formed JWT")
    return header, payload


def _decode_segment(segment: str) -> Any:
    return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# Clients send the same few scope strings over and over; parse each once.
_parse_scope_claim = functools.lru_cache(maxsize=4096)(parse_scopes)


def _access_context(claims: dict[str, Any], config: TrustedIssuer) -> AccessContext:
    scope_claim = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope_claim, list):
        scope_claim = " ".join(str(word) for word in scope_claim)
    scopes = _parse_scope_claim(scope_claim if isinstance(scope_claim, str) else "")
    client_id = claims.get("client_id", claims.get("azp"))
    return AccessContext(
        subject=str(claims["sub"]),
        issuer=config.issuer,
        scopes=scopes,
        expires_at=int(claims["exp"]),
        client_id=str(client_id) if client_id is not None else None,
        patient_id=_string_claim(claims, config.patient_claim),
        patient_identifier=_patient_identifier(claims, config),
        organization=_string_claim(claims, "organization"),
        token_id=_string_claim(claims, "jti"),
        fhir_user=_string_claim(claims, "fhirUser"),
        grant_id=_string_claim(claims, "grant_id"),
    )


def _string_claim(claims: dict[str, Any], name: str | None) -> str | None:
    value = claims.get(name) if name else None
    return value if isinstance(value, str) and value else None


def _patient_identifier(claims: dict[str, Any], config: TrustedIssuer) -> tuple[str, str] | None:
    value = _string_claim(claims, config.patient_identifier_claim)
    if value is None:
        return None
    if config.patient_identifier_system is not None:
        return config.patient_identifier_system, value
    system, bar, code = value.partition("|")
    if not bar or not system or not code:
        raise _unauthorized(_INVALID, "the token's patient identifier is not system|value")
    return system, code


def mint_access_token(
    key: ServerKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    scope: str,
    ttl: int = 3600,
    client_id: str | None = None,
    patient_id: str | None = None,
    patient_identifier: tuple[str, str] | None = None,
    organization: str | None = None,
    fhir_user: str | None = None,
    grant_id: str | None = None,
    now: float | None = None,
) -> str:
    """Return an ES256 access token signed with the server's key (RFC 9068 ``at+jwt``)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "scope": scope,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": str(uuid.uuid4()),
    }
    optional = {"client_id": client_id, "patient": patient_id, "organization": organization,
                "fhirUser": fhir_user, "grant_id": grant_id}
    claims.update({name: value for name, value in optional.items() if value is not None})
    if patient_identifier is not None:
        claims["patient_identifier"] = "|".join(patient_identifier)
    headers = {"kid": key.kid, "typ": "at+jwt"}
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)

"""SMART Backend Services client authentication: verifying a ``private_key_jwt`` assertion.

Implements the checks of https://hl7.org/fhir/smart-app-launch/backend-services.html and
RFC 7523: the assertion is signed (RS384 or ES384 only) by a key in the client's registered JWKS
named by ``kid``; ``iss`` and ``sub`` are the client id; ``aud`` is the token endpoint URL;
``exp`` has not passed and is at most five minutes ahead; ``jti`` has not been seen before.
Replays are caught by a :class:`JtiStore` that remembers each ``jti`` until its ``exp``.

Every failure is an :class:`~fhir_server.security.oauth.OAuthError` ``invalid_client`` (401).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import jwt

from fhir_server.security.clients import ASSERTION_ALGORITHMS, ClientLookup, RegisteredClient
from fhir_server.security.jwks import StaticJwks
from fhir_server.security.keys import InvalidKey
from fhir_server.security.oauth import INVALID_CLIENT, OAuthError

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "JtiStore",
    "MemoryJtiStore",
    "SqliteJtiStore",
    "verify_client_assertion",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
CLOCK_SKEW = 10  # seconds of tolerance for clocks of hospital systems
_REQUIRED_CLAIMS = ["exp", "iss", "sub", "aud", "jti"]


class JtiStore(Protocol):
    """Remembers assertion ids until they expire, so that each is accepted once."""

    def remember(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record the id; return ``False`` if this client already used it."""
        ...


class MemoryJtiStore:
    """A process-local :class:`JtiStore` (tests, single-process servers)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def remember(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record the id; return ``False`` if this client already used it."""
        now = time.time()
        with self._lock:
            self._seen = {key: exp for key, exp in self._seen.items() if exp >= now}
            if (client_id, jti) in self._seen:
                return False
            self._seen[client_id, jti] = expires_at
            return True


class SqliteJtiStore:
    """A :class:`JtiStore` in the authorization database, shared by all server processes."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._execute(
            "CREATE TABLE IF NOT EXISTS client_assertion_jti (client_id TEXT NOT NULL,"
            " jti TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (client_id, jti))",
            (),
        )

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> int:
        with closing(sqlite3.connect(self._database, timeout=10.0)) as connection, connection:
            return connection.execute(sql, parameters).rowcount

    def remember(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record the id; return ``False`` if this client already used it."""
        self._execute("DELETE FROM client_assertion_jti WHERE expires_at < ?", (time.time(),))
        inserted = self._execute(
            "INSERT OR IGNORE INTO client_assertion_jti VALUES (?, ?, ?)",
            (client_id, jti, expires_at),
        )
        return inserted == 1


def _refuse(description: str) -> OAuthError:
    return OAuthError(INVALID_CLIENT, description)


def verify_client_assertion(
    assertion: str, *, token_url: str, clients: ClientLookup, jti_store: JtiStore
) -> RegisteredClient:
    """Return the registered client the assertion authenticates; raises ``OAuthError``."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise _refuse("client_assertion is not a well-formed JWT") from exc
    algorithm, kid = header.get("alg"), header.get("kid")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise _refuse("client_assertion must be signed with RS384 or ES384")
    if not isinstance(kid, str) or not kid:
        raise _refuse("client_assertion header must name its key (kid)")
    client = clients.get(str(unverified.get("iss", "")))
    if client is None:
        raise _refuse("client_assertion iss is not a registered client")
    claims = _verified_claims(assertion, client, algorithm, kid, token_url)
    if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise _refuse("client_assertion exp is more than five minutes ahead")
    if not jti_store.remember(client.client_id, str(claims["jti"]), float(claims["exp"])):
        raise _refuse("client_assertion jti was already used")
    return client


def _verified_claims(
    assertion: str, client: RegisteredClient, algorithm: str, kid: str, token_url: str
) -> dict[str, Any]:
    try:
        key = StaticJwks.from_document(client.jwks).find(kid)
    except InvalidKey as exc:
        raise _refuse("the client's registered JWKS is unusable") from exc
    if key is None or algorithm not in key.algorithms:
        raise _refuse("client_assertion kid is not a key of this client for that algorithm")
    try:
        return jwt.decode(
            assertion,
            key.key,
            algorithms=[algorithm],
            audience=token_url,
            issuer=client.client_id,
            subject=client.client_id,
            leeway=CLOCK_SKEW,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise _refuse("client_assertion has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise _refuse("client_assertion aud must be the token endpoint URL") from exc
    except jwt.InvalidTokenError as exc:
        raise _refuse(f"client_assertion is invalid ({type(exc).__name__})") from exc

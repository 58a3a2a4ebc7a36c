"""The registry of clients, kept in ``<data_dir>/auth.sqlite3``.

Three kinds of client:

- ``backend``: a hospital system (SMART Backend Services) that authenticates with a
  ``private_key_jwt`` assertion signed by a key in its public JWKS, and acts for an Organization.
- ``confidential``: an app (SMART App Launch) with a back end that keeps a secret: it
  authenticates with a client secret (stored as its SHA-256; secrets are 256 random bits, so a
  slow hash adds nothing) or, when a JWKS is registered, with ``private_key_jwt``.
- ``public``: an app that cannot keep a secret (a phone or browser app); PKCE binds its codes.

Apps register their redirect URIs (matched exactly) and the scopes they may ask for: ``patient/``
clinical scopes and the launch words :data:`APP_WORDS` (the citizen flow grants a patient's own
data only). Managed from the command line (``fhir-server client add|list|remove``) or, when
switched on, RFC 7591 dynamic registration; read by the token and authorize endpoints.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from fhir_server.security.keys import InvalidKey, parse_jwks
from fhir_server.security.scopes import Scope, ScopeContext, parse_scope, parse_scopes

__all__ = [
    "APP_WORDS",
    "ASSERTION_ALGORITHMS",
    "AUTH_DATABASE",
    "ClientExists",
    "ClientKind",
    "ClientLookup",
    "ClientRegistry",
    "RegisteredClient",
    "auth_database_path",
    "check_client",
    "secret_hash",
]

AUTH_DATABASE = "auth.sqlite3"
# SMART Backend Services: client assertions are signed with RS384 or ES384.
ASSERTION_ALGORITHMS = frozenset({"RS384", "ES384"})
_CLIENT_ID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces
_ORGANIZATION = re.compile(r"Organization/[A-Za-z0-9\-.]{1,64}")
#: The non-clinical scopes an app may ask for (SMART App Launch 2: launch context, identity,
#: refresh tokens). ``online_access`` is not offered: it belongs to the EHR launch.
APP_WORDS = frozenset({"launch/patient", "openid", "fhirUser", "offline_access"})
ClientKind = Literal["backend", "confidential", "public"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS registered_client (
    client_id TEXT PRIMARY KEY,
    jwks TEXT NOT NULL,
    scope TEXT NOT NULL,
    organization TEXT
)
"""
#: Columns added for apps; a registry written before them reads as backend clients.
_APP_COLUMNS = {"kind": "TEXT NOT NULL DEFAULT 'backend'", "name": "TEXT",
                "redirect_uris": "TEXT NOT NULL DEFAULT '[]'", "secret_hash": "TEXT"}
_COLUMNS = ("client_id, jwks, scope, organization, kind, name, redirect_uris, secret_hash")


class ClientExists(ValueError):
    """A client with that id is already registered."""


def secret_hash(secret: str) -> str:
    """Return what the registry keeps of a client secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RegisteredClient:
    """A client: id, public JWKS, allowed scopes, the Organization it acts for, and for apps
    their kind, display name, exact redirect URIs and secret hash."""

    client_id: str
    jwks: Mapping[str, Any]
    scope: str
    organization: str | None = None
    kind: ClientKind = "backend"
    name: str | None = None
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None

    def allowed_scopes(self) -> tuple[Scope, ...]:
        """Return the clinical scopes the client may be granted, parsed."""
        return parse_scopes(self.scope)

    @property
    def is_app(self) -> bool:
        """Whether the client uses SMART App Launch (a public or confidential app)."""
        return self.kind != "backend"

    @property
    def auth_method(self) -> str:
        """The token endpoint authentication method (RFC 7591 names)."""
        if self.kind == "public":
            return "none"
        if self.kind == "backend" or self.jwks.get("keys"):
            return "private_key_jwt"
        return "client_secret_basic"

    def check_secret(self, secret: str) -> bool:
        """Return whether ``secret`` is this client's secret (constant-time comparison)."""
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(self.secret_hash, secret_hash(secret))


class ClientLookup(Protocol):
    """Finds registered clients by id (the registry, or a stand-in in tests)."""

    def get(self, client_id: str) -> RegisteredClient | None:
        """Return the client or ``None`` if no such client is registered."""
        ...


def auth_database_path(data_dir: Path) -> Path:
    """Return the path of the authorization database in ``data_dir``."""
    return data_dir / AUTH_DATABASE


def check_client(client: RegisteredClient) -> None:
    """Raise ``ValueError`` (``InvalidKey``, ``InvalidScope``) if the client cannot be used."""
    if not _CLIENT_ID.fullmatch(client.client_id):
        raise ValueError("client id must be 1-255 printable ASCII characters without spaces")
    if client.kind == "backend" or client.jwks.get("keys"):
        _check_assertion_keys(client.jwks)
    if not client.scope.split():
        raise ValueError("a client needs at least one allowed scope")
    if client.is_app:
        _check_app(client)
    else:
        for word in client.scope.split():
            parse_scope(word)
    if client.organization is not None and not _ORGANIZATION.fullmatch(client.organization):
        raise ValueError("organization must be a reference like Organization/ID")


def _check_assertion_keys(jwks: Mapping[str, Any]) -> None:
    keys = parse_jwks(jwks)
    if not any(key.algorithms & ASSERTION_ALGORITHMS for key in keys.values()):
        raise InvalidKey("the JWKS has no public key usable with RS384 or ES384")


def _check_app(client: RegisteredClient) -> None:
    if client.kind == "confidential" and not (client.secret_hash or client.jwks.get("keys")):
        raise ValueError("a confidential app needs a secret or a JWKS")
    if client.kind == "public" and (client.secret_hash or client.jwks.get("keys")):
        raise ValueError("a public app has neither a secret nor a JWKS")
    if not client.redirect_uris:
        raise ValueError("an app needs at least one redirect URI")
    for uri in client.redirect_uris:
        _check_redirect_uri(uri)
    for word in client.scope.split():
        if word not in APP_WORDS and parse_scope(word).context is not ScopeContext.PATIENT:
            raise ValueError(f"apps may ask for patient/ scopes only, not {word!r}")


def _check_redirect_uri(uri: str) -> None:
    """RFC 6749 §3.1.2: absolute, no fragment; https, or http on the loopback (RFC 8252 §7.3),
    or a private-use scheme of a native app (``vn.example.app:/callback``)."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or any(c.isspace() for c in uri):
        raise ValueError(f"redirect URI {uri!r} must be absolute, without a fragment")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"redirect URI {uri!r}: http is allowed on the loopback only")
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ValueError(f"redirect URI {uri!r} has a forbidden scheme")


class ClientRegistry:
    """Registered clients stored in an SQLite file (one short connection per call)."""

    def __init__(self, database: Path) -> None:
        self._database = database
        database.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            connection.execute(_SCHEMA)
            present = {row[1] for row in connection.execute("PRAGMA table_info(registered_client)")}
            for column, declaration in _APP_COLUMNS.items():
                if column not in present:
                    connection.execute(
                        f"ALTER TABLE registered_client ADD COLUMN {column} {declaration}")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._database, timeout=10.0)) as connection, connection:
            yield connection

    def add(self, client: RegisteredClient) -> None:
        """Register a client; raises ``ClientExists`` or ``ValueError`` (see check_client)."""
        check_client(client)
        row = (client.client_id, json.dumps(client.jwks), client.scope, client.organization,
               client.kind, client.name, json.dumps(client.redirect_uris), client.secret_hash)
        try:
            with self._connection() as connection:
                connection.execute(
                    f"INSERT INTO registered_client ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row)
        except sqlite3.IntegrityError as exc:
            raise ClientExists(f"client {client.client_id!r} is already registered") from exc

    def get(self, client_id: str) -> RegisteredClient | None:
        """Return the client with this id, or ``None``."""
        with self._connection() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM registered_client WHERE client_id = ?", (client_id,)
            ).fetchone()
        return _client(row) if row is not None else None

    def list(self) -> builtins.list[RegisteredClient]:
        """Return every registered client, ordered by id."""
        with self._connection() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM registered_client ORDER BY client_id"
            ).fetchall()
        return [_client(row) for row in rows]

    def remove(self, client_id: str) -> bool:
        """Remove a client; return whether it was registered."""
        with self._connection() as connection:
            cursor = connection.execute(
                "DELETE FROM registered_client WHERE client_id = ?", (client_id,)
            )
        return cursor.rowcount > 0


def _client(row: tuple[Any, ...]) -> RegisteredClient:
    client_id, jwks, scope, organization, kind, name, redirect_uris, hashed = row
    return RegisteredClient(client_id, json.loads(jwks), scope, organization, kind, name,
                            tuple(json.loads(redirect_uris)), hashed)

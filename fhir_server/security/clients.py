"""The registry of SMART Backend Services clients, kept in ``<data_dir>/auth.sqlite3``.

A registered client is a hospital system (or another backend) that authenticates with a
``private_key_jwt`` assertion signed by a key in its public JWKS. The registry records that JWKS,
the scopes the client may be granted, and the Organization it acts for. It is managed from the
command line (``fhir-server client add|list|remove``) and read by the token endpoint.
"""

from __future__ import annotations

import builtins
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fhir_server.security.keys import InvalidKey, parse_jwks
from fhir_server.security.scopes import Scope, parse_scope, parse_scopes

__all__ = [
    "ASSERTION_ALGORITHMS",
    "AUTH_DATABASE",
    "ClientExists",
    "ClientLookup",
    "ClientRegistry",
    "RegisteredClient",
    "auth_database_path",
    "check_client",
]

AUTH_DATABASE = "auth.sqlite3"
# SMART Backend Services: client assertions are signed with RS384 or ES384.
ASSERTION_ALGORITHMS = frozenset({"RS384", "ES384"})
_CLIENT_ID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces
_ORGANIZATION = re.compile(r"Organization/[A-Za-z0-9\-.]{1,64}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS registered_client (
    client_id TEXT PRIMARY KEY,
    jwks TEXT NOT NULL,
    scope TEXT NOT NULL,
    organization TEXT
)
"""


class ClientExists(ValueError):
    """A client with that id is already registered."""


@dataclass(frozen=True)
class RegisteredClient:
    """A backend client: id, public JWKS, allowed scopes and the Organization it acts for."""

    client_id: str
    jwks: Mapping[str, Any]
    scope: str
    organization: str | None = None

    def allowed_scopes(self) -> tuple[Scope, ...]:
        """Return the scopes the client may be granted, parsed."""
        return parse_scopes(self.scope)


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
    keys = parse_jwks(client.jwks)
    if not any(key.algorithms & ASSERTION_ALGORITHMS for key in keys.values()):
        raise InvalidKey("the JWKS has no public key usable with RS384 or ES384")
    words = client.scope.split()
    if not words:
        raise ValueError("a client needs at least one allowed scope")
    for word in words:
        parse_scope(word)
    if client.organization is not None and not _ORGANIZATION.fullmatch(client.organization):
        raise ValueError("organization must be a reference like Organization/ID")


class ClientRegistry:
    """Registered clients stored in an SQLite file (one short connection per call)."""

    def __init__(self, database: Path) -> None:
        self._database = database
        with self._connection() as connection:
            connection.execute(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self._database, timeout=10.0)) as connection, connection:
            yield connection

    def add(self, client: RegisteredClient) -> None:
        """Register a client; raises ``ClientExists`` or ``ValueError`` (see check_client)."""
        check_client(client)
        row = (client.client_id, json.dumps(client.jwks), client.scope, client.organization)
        try:
            with self._connection() as connection:
                connection.execute("INSERT INTO registered_client VALUES (?, ?, ?, ?)", row)
        except sqlite3.IntegrityError as exc:
            raise ClientExists(f"client {client.client_id!r} is already registered") from exc

    def get(self, client_id: str) -> RegisteredClient | None:
        """Return the client with this id, or ``None``."""
        with self._connection() as connection:
            row = connection.execute(
                "SELECT client_id, jwks, scope, organization FROM registered_client"
                " WHERE client_id = ?",
                (client_id,),
            ).fetchone()
        return _client(row) if row is not None else None

    def list(self) -> builtins.list[RegisteredClient]:
        """Return every registered client, ordered by id."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT client_id, jwks, scope, organization FROM registered_client"
                " ORDER BY client_id"
            ).fetchall()
        return [_client(row) for row in rows]

    def remove(self, client_id: str) -> bool:
        """Remove a client; return whether it was registered."""
        with self._connection() as connection:
            cursor = connection.execute(
                "DELETE FROM registered_client WHERE client_id = ?", (client_id,)
            )
        return cursor.rowcount > 0


def _client(row: tuple[str, str, str, str | None]) -> RegisteredClient:
    client_id, jwks, scope, organization = row
    return RegisteredClient(client_id, json.loads(jwks), scope, organization)

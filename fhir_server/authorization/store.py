"""What the authorization server keeps: codes, token families, refresh tokens, revocations.

All of it lives in ``<data_dir>/auth.sqlite3`` beside the client registry, in WAL mode with the
store's ``synchronous`` setting (FULL by default: an answered token request survives a crash).
Codes and refresh tokens are kept as their SHA-256 only, so a copy of the file yields nothing
usable.

A *token family* is what one authorization (one code exchange) grants: every access and refresh
token issued from it names it (the ``grant_id`` claim of access tokens). Revoking the family
(a replayed code, a refresh token used twice, a revocation request, the citizen withdrawing the
app) refuses all of them at once; :meth:`AuthStore.is_revoked` is what the token verifier asks.
Each call uses one connection per thread (Authlib's callbacks run in a worker thread).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AuthStore", "AuthorizationCode", "RefreshToken", "TokenFamily", "digest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS authorization_code (
    code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL, subject TEXT NOT NULL, patient_id TEXT NOT NULL, nonce TEXT,
    code_challenge TEXT NOT NULL, code_challenge_method TEXT NOT NULL,
    family_id TEXT NOT NULL, auth_time INTEGER NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS authorization_code_nonce ON authorization_code (client_id, nonce);
CREATE TABLE IF NOT EXISTS token_family (
    family_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, subject TEXT NOT NULL,
    patient_id TEXT NOT NULL, scope TEXT NOT NULL, auth_time INTEGER NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS token_family_person ON token_family (subject, client_id);
CREATE TABLE IF NOT EXISTS refresh_token (
    token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, scope TEXT NOT NULL,
    issued_at REAL NOT NULL, expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS revoked_access_token (jti TEXT PRIMARY KEY, expires_at REAL NOT NULL);
"""
_CODE_COLUMNS = ("code_hash, client_id, redirect_uri, scope, subject, patient_id, nonce,"
                 " code_challenge, code_challenge_method, family_id, auth_time, expires_at, used")
_FAMILY_COLUMNS = ("family_id, client_id, subject, patient_id, scope, auth_time, created_at,"
                   " revoked_at")


def digest(secret: str) -> str:
    """Return the hex SHA-256 under which a code or refresh token is kept."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuthorizationCode:
    """An authorization code as issued (Authlib's ``AuthorizationCodeMixin``)."""

    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    subject: str
    patient_id: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    family_id: str
    auth_time: int
    expires_at: float
    used: bool = False

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass(frozen=True)
class TokenFamily:
    """One authorization: the client, the person (``subject``) and Patient, the granted scope."""

    family_id: str
    client_id: str
    subject: str
    patient_id: str
    scope: str
    auth_time: int
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token (Authlib's ``TokenMixin``) and the family it belongs to."""

    token_hash: str
    family: TokenFamily
    scope: str
    issued_at: float
    expires_at: float
    used_at: float | None

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.family.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.used_at is not None or self.family.revoked_at is not None


class AuthStore:
    """The authorization server's state in one SQLite file."""

    def __init__(self, database: Path, synchronous: str = "FULL") -> None:
        self._database = database
        self._synchronous = synchronous
        self._local = threading.local()
        database.parent.mkdir(parents=True, exist_ok=True)
        self.connection().executescript(_SCHEMA)

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection (autocommit; use :meth:`transaction` to write)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._database, timeout=10.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction (``BEGIN IMMEDIATE``), committed at its end."""
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def save_code(self, item: AuthorizationCode) -> None:
        """Keep a new authorization code (by its hash)."""
        values = (item.code_hash, item.client_id, item.redirect_uri, item.scope, item.subject,
                  item.patient_id, item.nonce, item.code_challenge, item.code_challenge_method,
                  item.family_id, item.auth_time, item.expires_at, 0)
        with self.transaction() as connection:
            connection.execute("DELETE FROM authorization_code WHERE expires_at < ?",
                               (time.time() - 3600,))
            connection.execute(f"INSERT INTO authorization_code ({_CODE_COLUMNS})"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)

    def find_code(self, code: str) -> AuthorizationCode | None:
        """Return the code as issued (used or not, expired or not), or None if unknown."""
        row = self.connection().execute(
            f"SELECT {_CODE_COLUMNS} FROM authorization_code WHERE code_hash = ?",
            (digest(code),)).fetchone()
        if row is None:
            return None
        values: list[Any] = list(row)
        values[-1] = bool(values[-1])
        return AuthorizationCode(*values)

    def claim_code(self, code_hash: str) -> bool:
        """Mark the code used; return False if it already was (a replay, maybe concurrent)."""
        with self.transaction() as connection:
            cursor = connection.execute(
                "UPDATE authorization_code SET used = 1 WHERE code_hash = ? AND used = 0",
                (code_hash,))
        return cursor.rowcount == 1

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        """Return whether a code was already issued to this client with this nonce."""
        row = self.connection().execute(
            "SELECT 1 FROM authorization_code WHERE client_id = ? AND nonce = ?",
            (client_id, nonce)).fetchone()
        return row is not None

    def open_family(self, family: TokenFamily) -> None:
        """Record a new authorization (the first token issued from a code)."""
        with self.transaction() as connection:
            connection.execute(
                f"INSERT OR IGNORE INTO token_family ({_FAMILY_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (family.family_id, family.client_id, family.subject, family.patient_id,
                 family.scope, family.auth_time, family.created_at, family.revoked_at))

    def family(self, family_id: str) -> TokenFamily | None:
        """Return the family, or None if there is none with this id."""
        row = self.connection().execute(
            f"SELECT {_FAMILY_COLUMNS} FROM token_family WHERE family_id = ?",
            (family_id,)).fetchone()
        return None if row is None else TokenFamily(*row)

    def revoke_family(self, family_id: str) -> None:
        """Refuse every token of the family from now on."""
        with self.transaction() as connection:
            connection.execute(
                "UPDATE token_family SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
                (time.time(), family_id))

    def revoke_person_client(self, subject: str, client_id: str) -> int:
        """Revoke every family of this person and app; return how many were live."""
        with self.transaction() as connection:
            cursor = connection.execute(
                "UPDATE token_family SET revoked_at = ? WHERE subject = ? AND client_id = ?"
                " AND revoked_at IS NULL", (time.time(), subject, client_id))
        return cursor.rowcount

    def save_refresh_token(self, token: str, family_id: str, scope: str, ttl: int) -> None:
        """Keep a new refresh token of the family (by its hash)."""
        now = time.time()
        with self.transaction() as connection:
            connection.execute(
                "INSERT INTO refresh_token (token_hash, family_id, scope, issued_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)", (digest(token), family_id, scope, now, now + ttl))

    def find_refresh_token(self, token: str) -> RefreshToken | None:
        """Return the refresh token with its family, or None if unknown."""
        row = self.connection().execute(
            "SELECT token_hash, family_id, scope, issued_at, expires_at, used_at"
            " FROM refresh_token WHERE token_hash = ?", (digest(token),)).fetchone()
        if row is None:
            return None
        family = self.family(row[1])
        if family is None:
            return None
        return RefreshToken(row[0], family, row[2], row[3], row[4], row[5])

    def claim_refresh_token(self, token_hash: str) -> bool:
        """Mark the refresh token used (rotated); False if it already was."""
        with self.transaction() as connection:
            cursor = connection.execute(
                "UPDATE refresh_token SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                (time.time(), token_hash))
        return cursor.rowcount == 1

    def revoke_access_token(self, jti: str, expires_at: float) -> None:
        """Refuse one access token (by ``jti``) until it expires anyway."""
        with self.transaction() as connection:
            connection.execute("DELETE FROM revoked_access_token WHERE expires_at < ?",
                               (time.time(),))
            connection.execute("INSERT OR IGNORE INTO revoked_access_token VALUES (?, ?)",
                               (jti, expires_at))

    def is_revoked(self, family_id: str | None, jti: str | None) -> bool:
        """Return whether an access token of this family (or with this ``jti``) is refused."""
        row = self.connection().execute(
            "SELECT EXISTS (SELECT 1 FROM token_family WHERE family_id = ?"
            " AND revoked_at IS NOT NULL) OR EXISTS (SELECT 1 FROM revoked_access_token"
            " WHERE jti = ?)", (family_id, jti)).fetchone()
        return bool(row[0])

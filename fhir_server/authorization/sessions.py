"""The browser side of sign-in: pending sign-ins and signed-in sessions, in ``auth.sqlite3``.

A :class:`SignIn` is one trip through the upstream identity provider: the authorization request
that started it (or the wish to manage apps), the ``state``, ``nonce`` and PKCE verifier sent
upstream, and the hash of the browser cookie that must come back with it. A :class:`Session` is
a person signed in on one browser (the cookie's hash, the upstream subject, their Patient) with a
CSRF token for the forms it is shown. Both expire after ``sign_in_ttl``; the cookies themselves
are random 256-bit values that only the browser holds.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fhir_server.authorization.store import AuthStore, digest

__all__ = ["Session", "SignIn", "SignIns", "new_secret"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_in (
    id TEXT PRIMARY KEY, browser_hash TEXT NOT NULL, purpose TEXT NOT NULL,
    params TEXT NOT NULL, upstream_state TEXT NOT NULL UNIQUE, nonce TEXT NOT NULL,
    code_verifier TEXT NOT NULL, csrf TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS browser_session (
    session_hash TEXT PRIMARY KEY, subject TEXT NOT NULL, patient_id TEXT NOT NULL,
    name TEXT, csrf TEXT NOT NULL, expires_at REAL NOT NULL);
"""
_SIGN_IN_COLUMNS = ("id, browser_hash, purpose, params, upstream_state, nonce, code_verifier,"
                    " csrf, expires_at")


def new_secret() -> str:
    """Return a fresh unguessable value (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SignIn:
    """A pending sign-in: why it started (``authorize`` or ``manage``) and what was sent up."""

    id: str
    browser_hash: str
    purpose: str
    params: dict[str, str]
    upstream_state: str
    nonce: str
    code_verifier: str
    csrf: str
    expires_at: float

    def belongs_to(self, browser: str | None) -> bool:
        """Whether the browser cookie is the one that started this sign-in (and it is live)."""
        return (browser is not None and secrets.compare_digest(digest(browser), self.browser_hash)
                and time.time() < self.expires_at)


@dataclass(frozen=True)
class Session:
    """A person signed in on one browser."""

    subject: str
    patient_id: str
    name: str | None
    csrf: str
    expires_at: float


class SignIns:
    """Pending sign-ins and browser sessions."""

    def __init__(self, store: AuthStore, ttl: int) -> None:
        self._store = store
        self._ttl = ttl
        store.connection().executescript(_SCHEMA)

    def signed_in_at(self, session: Session) -> int:
        """When the person of ``session`` signed in (OpenID Connect ``auth_time``)."""
        return int(session.expires_at - self._ttl)

    def start(self, browser: str, purpose: str, params: dict[str, str]) -> SignIn:
        """Record a new sign-in for the browser cookie ``browser``."""
        sign_in = SignIn(new_secret(), digest(browser), purpose, params, new_secret(),
                         new_secret(), new_secret(), new_secret(), time.time() + self._ttl)
        with self._store.transaction() as connection:
            connection.execute("DELETE FROM sign_in WHERE expires_at < ?", (time.time(),))
            connection.execute(
                f"INSERT INTO sign_in ({_SIGN_IN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sign_in.id, sign_in.browser_hash, purpose, json.dumps(params),
                 sign_in.upstream_state, sign_in.nonce, sign_in.code_verifier, sign_in.csrf,
                 sign_in.expires_at))
        return sign_in

    def get(self, sign_in_id: str) -> SignIn | None:
        """Return the sign-in with this id, or None."""
        return self._one("id", sign_in_id)

    def by_upstream_state(self, state: str) -> SignIn | None:
        """Return the sign-in whose upstream request carried ``state``, or None."""
        return self._one("upstream_state", state)

    def _one(self, column: str, value: str) -> SignIn | None:
        row = self._store.connection().execute(
            f"SELECT {_SIGN_IN_COLUMNS} FROM sign_in WHERE {column} = ?", (value,)).fetchone()
        if row is None:
            return None
        values: list[Any] = list(row)
        values[3] = json.loads(values[3])
        return SignIn(*values)

    def finish(self, sign_in_id: str) -> bool:
        """Forget the sign-in; False if it was already finished (a replayed form or callback)."""
        with self._store.transaction() as connection:
            cursor = connection.execute("DELETE FROM sign_in WHERE id = ?", (sign_in_id,))
        return cursor.rowcount == 1

    def open_session(self, subject: str, patient_id: str, name: str | None) -> str:
        """Sign the person in; return the session cookie value."""
        cookie = new_secret()
        with self._store.transaction() as connection:
            connection.execute("DELETE FROM browser_session WHERE expires_at < ?", (time.time(),))
            connection.execute("INSERT INTO browser_session VALUES (?, ?, ?, ?, ?, ?)",
                               (digest(cookie), subject, patient_id, name, new_secret(),
                                time.time() + self._ttl))
        return cookie

    def session(self, cookie: str | None) -> Session | None:
        """Return the live session of the cookie, or None."""
        if not cookie:
            return None
        row = self._store.connection().execute(
            "SELECT subject, patient_id, name, csrf, expires_at FROM browser_session"
            " WHERE session_hash = ?", (digest(cookie),)).fetchone()
        if row is None or time.time() >= row[4]:
            return None
        return Session(*row)

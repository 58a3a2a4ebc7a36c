"""What each citizen approved for each app, remembered in ``auth.sqlite3``.

One row per (person, app): the scopes approved (possibly fewer than the app asked for), the
Patient, when, and the id of the ``Consent`` resource that records it in the FHIR store. An
authorization request asking for no more than what is remembered skips the consent screen; the
citizen's list of apps with access is these rows, and revoking an app deletes its row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fhir_server.authorization.store import AuthStore

__all__ = ["Approval", "Approvals"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS app_approval (
    subject TEXT NOT NULL, client_id TEXT NOT NULL, patient_id TEXT NOT NULL,
    scope TEXT NOT NULL, consent_id TEXT, approved_at REAL NOT NULL,
    PRIMARY KEY (subject, client_id));
"""


@dataclass(frozen=True)
class Approval:
    """A person's standing approval of an app."""

    subject: str
    client_id: str
    patient_id: str
    scope: str
    consent_id: str | None
    approved_at: float

    def covers(self, scope: str) -> bool:
        """Whether every word of ``scope`` was approved."""
        return set(scope.split()) <= set(self.scope.split())


class Approvals:
    """The remembered approvals."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store
        store.connection().executescript(_SCHEMA)

    def get(self, subject: str, client_id: str) -> Approval | None:
        """Return the person's approval of the app, or None."""
        row = self._store.connection().execute(
            "SELECT subject, client_id, patient_id, scope, consent_id, approved_at"
            " FROM app_approval WHERE subject = ? AND client_id = ?",
            (subject, client_id)).fetchone()
        return None if row is None else Approval(*row)

    def of_person(self, subject: str) -> list[Approval]:
        """Return the person's approvals, newest first."""
        rows = self._store.connection().execute(
            "SELECT subject, client_id, patient_id, scope, consent_id, approved_at"
            " FROM app_approval WHERE subject = ? ORDER BY approved_at DESC",
            (subject,)).fetchall()
        return [Approval(*row) for row in rows]

    def remember(self, approval: Approval) -> None:
        """Record (or replace) the person's approval of the app."""
        with self._store.transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO app_approval VALUES (?, ?, ?, ?, ?, ?)",
                (approval.subject, approval.client_id, approval.patient_id, approval.scope,
                 approval.consent_id, approval.approved_at or time.time()))

    def forget(self, subject: str, client_id: str) -> Approval | None:
        """Delete the approval; return what it was (None if there was none)."""
        approval = self.get(subject, client_id)
        if approval is not None:
            with self._store.transaction() as connection:
                connection.execute(
                    "DELETE FROM app_approval WHERE subject = ? AND client_id = ?",
                    (subject, client_id))
        return approval

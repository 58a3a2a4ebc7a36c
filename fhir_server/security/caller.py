"""The caller of a request: who it is and what the verified token lets it do.

One value per request, built by whatever brought the request (the HTTP adapter from the
bearer token, ``fhir-server load`` for itself) and passed down the request path; nothing reads
it from a context variable. The access policy (``security.policy``) decides with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fhir_server.security.scopes import Scope
from fhir_server.security.tokens import AccessContext

__all__ = ["SERVER", "Caller", "KnownCallers"]


@dataclass(frozen=True)
class Caller:
    """Who calls: the token's subject and issuer, its scopes, the patient it is bound to,
    the facility (``Organization/...``) and client it acts for, the user (``fhirUser``) and
    the network address.

    ``scopes`` None means no limit: access control is off (development), or the caller is
    the server's own tooling. ``verified`` tells whether a token was presented (what the
    AuditEvent's agent can name). ``identities``: the identifiers of its facility and user
    (``identifier|system|value``), by which a Consent may name it (``security.actors``).
    """

    subject: str = "fhir-server"
    issuer: str = ""
    scopes: tuple[Scope, ...] | None = None
    client_id: str | None = None
    patient_id: str | None = None
    organization: str | None = None
    fhir_user: str | None = None
    token_id: str | None = None
    address: str | None = None
    verified: bool = False
    identities: tuple[str, ...] = ()
    #: The App Launch authorization the token belongs to (its ``grant_id``), if any.
    grant_id: str | None = None

    @classmethod
    def from_token(cls, context: AccessContext, address: str | None = None) -> Caller:
        """The caller of a verified token (its patient id already resolved).

        A user who is a patient (``fhirUser`` ``Patient/123``) without a patient in the
        launch context is bound to their own record.
        """
        patient_id = context.patient_id
        user = context.fhir_user or ""
        if patient_id is None and user.startswith("Patient/"):
            patient_id = user.split("/")[1] or None
        return cls(
            subject=context.subject, issuer=context.issuer, scopes=context.scopes,
            client_id=context.client_id, patient_id=patient_id,
            organization=context.organization, fhir_user=context.fhir_user,
            token_id=context.token_id, address=address, verified=True,
            grant_id=context.grant_id,
        )

    @classmethod
    def anonymous(cls, address: str | None = None) -> Caller:
        """A caller without a token on a server whose access control is off."""
        return cls(address=address)

    @cached_property
    def visibilities(self) -> dict[tuple[int, int, str], Any]:  # Visibility | None, lower layer
        """The access policy's memo of what this caller may see (``security.policy``)."""
        return {}

    @cached_property
    def decisions(self) -> dict[Any, Any]:
        """The access policy's memo of the decisions made for this caller (its Accesses)."""
        return {}

    @property
    def unlimited(self) -> bool:
        """Whether nothing limits the caller (access control off, or the server itself)."""
        return self.scopes is None


SERVER = Caller()
"""The server's own tooling (loader, start-up seeding): no limit, audited as itself."""


class KnownCallers:
    """The caller of each verified token and network address, built once: while the token
    verifier hands out the same verified ``AccessContext`` (it keeps one per token text
    until the token expires, at most five minutes, and checks revocation on each use), its
    requests get the same ``Caller``, and with it what the access policy and the door
    derived for it (its names, its decisions, its visibilities: ``visibilities``,
    ``decisions``). A token verified anew, another token or another address is another
    caller. Entries of expired tokens are dropped when the memo is full (bounded).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._known: dict[tuple[int, str | None], tuple[AccessContext, Caller]] = {}

    def caller(self, context: AccessContext, address: str | None = None) -> Caller:
        """The caller of a verified token (its patient id already resolved)."""
        key = (id(context), address)  # the context is held: its id is not reused meanwhile
        known = self._known.get(key)
        if known is not None and known[0] is context:
            return known[1]
        caller = Caller.from_token(context, address)
        if len(self._known) >= self._limit:
            now = time.time()
            self._known = {k: v for k, v in self._known.items() if v[0].expires_at > now}
            if len(self._known) >= self._limit // 2:
                self._known.clear()
        self._known[key] = (context, caller)
        return caller

"""What the authorization server reads and writes in the FHIR store.

- :func:`patient_by_cccd`: the citizen's Patient, found by the CCCD identifier (as the API
  resolves a token's ``patient_identifier``); None unless exactly one Patient has it.
- :func:`save_consent`: the Consent recording an app's access, written as the citizen would
  write it through the app (create, then update): validated, stored, and audited in the same
  transaction (an AuditEvent whose agent is the citizen's Patient, with the app's id).

:func:`as_caller` is the one place this package enters the FHIR request path; it is what to
re-point at the router when requests carry an explicit caller.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.interactions import create, update
from fhir_server.interactions.context import Outcome, Services
from fhir_server.search.parse import parse_search
from fhir_server.security import guard
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.tokens import CCCD_SYSTEM, AccessContext

__all__ = ["as_caller", "patient_by_cccd", "save_consent"]


async def patient_by_cccd(services: Services, cccd: str) -> str | None:
    """Return the id of the one Patient whose identifier is this CCCD, else None."""
    parsed = parse_search("Patient", [("identifier", f"{CCCD_SYSTEM}|{cccd}")],
                          services.registry)
    result = await services.store.search(parsed.query)
    return result.matches[0].id if len(result.matches) == 1 else None


def citizen(services: Services, subject: str, patient_id: str, client_id: str) -> AccessContext:
    """The caller that records an app's access: the citizen, through that app."""
    return AccessContext(subject=subject, issuer=services.base_url,
                         scopes=parse_scopes("patient/Consent.cru"),
                         expires_at=int(time.time()) + 60, client_id=client_id,
                         patient_id=patient_id)


async def as_caller(services: Services, caller: AccessContext,
                    interaction: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """Run one interaction as ``caller`` (policy, ``meta.source`` and audit apply)."""
    security = guard.RequestSecurity(caller, audited=services.audit_trail is not None)
    token = guard.current.set(security)
    try:
        return await interaction()
    finally:
        guard.current.reset(token)


async def save_consent(services: Services, caller: AccessContext, consent: dict[str, Any],
                       consent_id: str | None) -> str:
    """Create the Consent (or update ``consent_id``); return its id."""
    if consent_id is None:
        outcome = await as_caller(services, caller,
                                  lambda: create.create(services, "Consent", consent))
    else:
        consent = {**consent, "id": consent_id}
        outcome = await as_caller(services, caller, lambda: update.update(
            services, "Consent", consent_id, consent))
    assert outcome.stored is not None
    return outcome.stored.id

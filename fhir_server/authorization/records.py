"""What the authorization server reads and writes in the FHIR store.

- :func:`patient_by_cccd`: the citizen's Patient, found by the CCCD identifier (as the API
  resolves a token's ``patient_identifier``); None unless exactly one Patient has it.
- :func:`save_consent`: the Consent recording an app's access, written as the citizen would
  write it through the app (create, then update) through the router: authorized, validated,
  stored, and audited in the same transaction (an AuditEvent whose agent is the citizen's
  Patient, with the app's id).
"""

from __future__ import annotations

import time
from typing import Any

from fhir_server.interactions.context import Services
from fhir_server.router.door import handle
from fhir_server.router.request import FhirRequest
from fhir_server.search.parse import parse_search
from fhir_server.security.caller import Caller
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.tokens import CCCD_SYSTEM, AccessContext

__all__ = ["citizen", "patient_by_cccd", "save_consent"]


async def patient_by_cccd(services: Services, cccd: str) -> str | None:
    """Return the id of the one Patient whose identifier is this CCCD, else None."""
    parsed = parse_search("Patient", [("identifier", f"{CCCD_SYSTEM}|{cccd}")],
                          services.registry)
    result = await services.store.search(parsed.query)
    return result.matches[0].id if len(result.matches) == 1 else None


def citizen(services: Services, subject: str, patient_id: str, client_id: str) -> Caller:
    """The caller that records an app's access: the citizen, through that app."""
    return Caller.from_token(AccessContext(
        subject=subject, issuer=services.base_url, scopes=parse_scopes("patient/Consent.cru"),
        expires_at=int(time.time()) + 60, client_id=client_id, patient_id=patient_id))


async def save_consent(services: Services, caller: Caller, consent: dict[str, Any],
                       consent_id: str | None) -> str:
    """Create the Consent (or update ``consent_id``) as ``caller``; return its id."""
    if consent_id is None:
        request = FhirRequest("POST", "create", "Consent", body=consent)
    else:
        request = FhirRequest("PUT", "update", "Consent", consent_id,
                              body={**consent, "id": consent_id})
    answer = await handle(services, request, caller)
    assert answer.stored is not None
    return answer.stored.id

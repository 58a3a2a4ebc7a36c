"""``[type]/[id]/$verify-signature``: check again the digital signatures about a resource and
the proof the server kept of them (docs/signatures.md, "What a verifier checks").

The answer is a ``Parameters``: ``verified`` (true when there is at least one signature and
every one verifies), then one ``signature`` part per signature: ``result`` (verified, invalid,
untrusted, expired, not-yet-valid, revoked, malformed, unsupported, unverifiable), its stable
``messageId`` and ``detail``, ``kind`` (jws, xmldsig, pdf), ``signer``, ``issuer``,
``signingTime``, ``trustAnchor``, the ``proof`` Provenance and ``changedSince`` (the resource
has a newer version than the one signed). A resource the caller may not read is 404.
"""

from __future__ import annotations

from fhir_server.interactions.context import Outcome, Services
from fhir_server.operations.parameters import OperationInput
from fhir_server.security.policy import Access
from fhir_server.signatures.recheck import recheck, report

__all__ = ["verify_signature"]


async def verify_signature(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``$verify-signature`` on one resource."""
    found = await recheck(services, access, str(call.resource_type), str(call.id))
    return Outcome(200, body=report(found))

"""The one place where the XML 130 bridge enters the request path.

A visit is committed as a FHIR transaction Bundle through the router, as the caller of the
request that brought the envelope: the same door as a hospital's FHIR push (the access
policy, validation, conditional references, race safety, audit).
"""

from __future__ import annotations

from typing import Any

from fhir_server.bridges.xml130.proven import PROVEN
from fhir_server.conformance.built import structure_built
from fhir_server.interactions.context import Services
from fhir_server.router.request import FhirRequest
from fhir_server.security.policy import Access

__all__ = ["commit"]


async def commit(services: Services, access: Access, bundle: dict[str, Any]) -> dict[str, Any]:
    """Commit a transaction Bundle the route built as the caller; return the
    transaction-response Bundle. Raises the push's ``FhirError``.

    The Bundle's resources are marked as built by the route (``conformance.built``): the
    push skips the structural walk for them, as the route checked each value it wrote
    (``lexical``), and the base invariants that hold by the route's construction
    (``proven``); the other invariants and the profiles run as for any push.
    """
    assert services.handle is not None, "the services were made without the router"
    resources = [e["resource"] for e in bundle.get("entry", ()) if "resource" in e]
    with structure_built(resources, PROVEN):
        answer = await services.handle(services, FhirRequest("POST", "bundle", body=bundle),
                                       access.caller)
    return answer.body if isinstance(answer.body, dict) else {}

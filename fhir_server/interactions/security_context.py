"""``Binary.securityContext`` (R4 binary.html#security): a Binary carries the access rules of
the resource it names. When that resource is a Patient the Binary is in that patient's
compartment (``search.indexing``); when it is another resource (the DocumentReference of a
discharge paper), the Binary is in the compartments of that resource, found here: at write
time into its search index, at read time for the access policy's judgement."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Services
from fhir_server.interactions.references import local_target
from fhir_server.search.indexing import SECURITY_CONTEXT, compartment_patients
from fhir_server.search.model import SearchIndex
from fhir_server.storage.port import StoreTransaction

__all__ = ["context_patients", "context_target", "with_context_patients"]


def context_target(resource: dict[str, Any], base_url: str) -> tuple[str, str] | None:
    """The resource (other than a Patient) whose rules apply to ``resource``, if any."""
    element = SECURITY_CONTEXT.get(str(resource.get("resourceType")))
    value = resource.get(element) if element else None
    reference = value.get("reference") if isinstance(value, dict) else None
    target = local_target(reference, base_url) if isinstance(reference, str) else None
    return target if target is not None and target[0] != "Patient" else None


async def context_patients(services: Services, resource: dict[str, Any]) -> frozenset[str]:
    """The patients of the resource ``resource``'s security context names (committed data;
    none when it names no such resource, or one that is gone)."""
    target = context_target(resource, services.base_url)
    if target is None:
        return frozenset()
    try:
        stored = await services.store.read(*target)
    except FhirError:
        return frozenset()
    return compartment_patients(stored.resource(), services.registry)


async def with_context_patients(
    tx: StoreTransaction, services: Services, resource: dict[str, Any], index: object | None
) -> object | None:
    """``index`` with the compartments of the resource's security context added (inside
    ``tx``, which sees a transaction's own earlier writes)."""
    target = context_target(resource, services.base_url)
    if target is None or not isinstance(index, SearchIndex):
        return index
    stored = await tx.read(*target)
    if stored is None or stored.deleted:
        return index
    patients = compartment_patients(stored.resource(), services.registry)
    return replace(index, compartments=tuple(sorted(set(index.compartments) | patients)))

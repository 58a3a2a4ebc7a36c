"""Make the project's conformance resources readable through the API.

At start-up every JSON resource in ``profiles/`` and ``terminology/`` (StructureDefinitions,
NamingSystems, CodeSystems, ValueSets, ConceptMaps, and the OperationDefinitions the
CapabilityStatement links to), and the SubscriptionTopics the server ships (Basic
resources), is stored under its own id, as an update:
unchanged files create no new version, so restarts and several workers are harmless. The
validator and the terminology service read the same files directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fhir_server.interactions.context import Services
from fhir_server.subscriptions.topics import shipped_topics

__all__ = ["conformance_resources", "search_parameter_resources", "seed_conformance"]

_TYPES = {"StructureDefinition", "NamingSystem", "CodeSystem", "ValueSet", "ConceptMap",
          "SearchParameter", "OperationDefinition"}


def conformance_resources(*directories: Path) -> Iterator[dict[str, Any]]:
    """Yield the conformance resources (with an id) found in ``directories``."""
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            resource = orjson.loads(path.read_bytes())
            if resource.get("resourceType") in _TYPES and resource.get("id"):
                yield resource


def search_parameter_resources(registry: Any) -> Iterator[dict[str, Any]]:
    """Yield a SearchParameter resource for every parameter of the search registry.

    ``base`` lists only the types the parameter is registered for (some AuditEvent
    parameters are deliberately not indexed, see ``search.registry.RESTRICTED_TYPES``).
    """
    for definition in registry:
        base = [b for b in definition.base
                if b in ("Resource", "DomainResource")
                or registry.for_type(b).get(definition.code) is definition]
        if not base or not definition.url:
            continue
        resource: dict[str, Any] = {
            "resourceType": "SearchParameter",
            "id": definition.url.rstrip("/").rsplit("/", 1)[-1][:64],
            "url": definition.url, "name": definition.code, "status": "active",
            "description": f"Search parameter {definition.code} of {', '.join(base)}",
            "code": definition.code, "base": base, "type": str(definition.type),
        }
        if definition.expression:
            resource["expression"] = definition.expression
        if definition.targets:
            resource["target"] = list(definition.targets)
        yield resource


async def seed_conformance(services: Services) -> int:
    """Store (or leave unchanged) every conformance resource; return how many changed."""
    settings = services.settings
    resources = list(conformance_resources(settings.profiles_dir, settings.terminology_dir))
    if services.registry is not None and settings.seed_search_parameters:
        resources += search_parameter_resources(services.registry)
    if settings.subscriptions:  # discoverable as Basic?code=...|SubscriptionTopic
        resources += shipped_topics()
    indexed = [(r, services.index(r)) for r in resources]
    changed = 0
    async with services.store.transaction() as tx:
        for resource, index in indexed:
            result = await tx.update(resource, index)
            changed += result.changed
    return changed

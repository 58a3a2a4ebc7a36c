"""create and conditional create (R4 http.html#create, http.html#ccreate).

The server assigns the id (an id in the body is ignored, as R4 requires). With
``If-None-Exist`` the search and the insert run in one write transaction, so concurrent
conditional creates of the same resource produce exactly one.
"""

from __future__ import annotations

from typing import Any

from fhir_server.interactions.context import Services, new_id
from fhir_server.interactions.prepare import parse_criteria, prepare_resource
from fhir_server.interactions.write import Write
from fhir_server.security.policy import Access
from fhir_server.security.scopes import Interaction

__all__ = ["prepare_create"]


def prepare_create(
    services: Services,
    access: Access,
    resource_type: str,
    resource: dict[str, Any],
    if_none_exist: str | None = None,
    indexed: bool = True,
) -> Write:
    """The create of ``resource`` (201), or of nothing when ``If-None-Exist`` matches one
    resource (200 with it). ``indexed`` False leaves the index to be computed later (a
    transaction's entries are indexed once their references are resolved)."""
    prepared = prepare_resource(services, access, resource, resource_type)
    resource["id"] = new_id()
    criteria = (parse_criteria(services, access, resource_type, if_none_exist)
                if if_none_exist is not None else None)
    return Write(Interaction.CREATE, resource_type, access, id=resource["id"],
                 resource=resource, index=services.index(resource) if indexed else None,
                 if_none_exist=criteria,
                 issues=prepared.issues, proofs=prepared.proofs)

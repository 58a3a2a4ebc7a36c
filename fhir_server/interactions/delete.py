"""delete and conditional delete (R4 http.html#delete, http.html#cdelete).

A deletion is a new version in history; later reads answer 410 Gone. Deleting a resource
that is already deleted succeeds again (204); deleting an unknown one answers 404.
Conditional delete removes the single match (none: 204; several: 412). With referential
integrity on, a resource that others refer to is not deleted (409).
"""

from __future__ import annotations

from collections.abc import Sequence

from fhir_server.interactions.context import Services
from fhir_server.interactions.prepare import parse_criteria
from fhir_server.interactions.write import Write
from fhir_server.security.policy import Access
from fhir_server.security.scopes import Interaction

__all__ = ["prepare_conditional_delete", "prepare_delete"]


def prepare_delete(
    access: Access, resource_type: str, id: str, if_match: int | None = None
) -> Write:
    """The deletion of ``resource_type/id``."""
    return Write(Interaction.DELETE, resource_type, access, id=id, expected_version=if_match,
                 if_match=if_match is not None)


def prepare_conditional_delete(
    services: Services, access: Access, resource_type: str,
    criteria: str | Sequence[tuple[str, str]],
) -> Write:
    """The deletion of the single match of ``criteria``."""
    query = parse_criteria(services, access, resource_type, criteria)
    return Write(Interaction.DELETE, resource_type, access, criteria=query)

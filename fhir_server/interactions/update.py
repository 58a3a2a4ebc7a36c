"""update, update-as-create and conditional update (R4 http.html#update, #cond-update).

An update whose content equals the current version creates no new version (200 with the
current one). ``If-Match`` is checked inside the write transaction, so of two concurrent
updates carrying the same version exactly one succeeds and the other gets 412.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.interactions.context import Services, new_id
from fhir_server.interactions.prepare import parse_criteria, prepare_resource
from fhir_server.interactions.write import Write
from fhir_server.security.policy import Access
from fhir_server.security.scopes import Interaction

__all__ = ["check_body_id", "prepare_conditional_update", "prepare_update"]


def check_body_id(resource: dict[str, Any], id: str) -> None:
    """Raise ``BadRequest`` unless the body carries ``id``."""
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource in an update must carry its id",
                         message_id="MSG_RES_ID_MISSING", expression=("id",))
    if body_id != id:
        raise BadRequest(
            f"The id in the body ({body_id}) differs from the id in the URL ({id})",
            message_id="MSG_RES_ID_MISMATCH", expression=("id",),
        )


def prepare_update(
    services: Services,
    access: Access,
    resource_type: str,
    id: str,
    resource: dict[str, Any],
    if_match: int | None = None,
    indexed: bool = True,
) -> Write:
    """A new version of ``resource_type/id`` (200), its creation with the client's id (201),
    or nothing when the content is unchanged (``indexed``: see ``prepare_create``)."""
    prepared = prepare_resource(services, access, resource, resource_type)
    check_body_id(resource, id)
    return Write(Interaction.UPDATE, resource_type, access, id=id, resource=resource,
                 index=services.index(resource) if indexed else None,
                 expected_version=if_match,
                 if_match=if_match is not None, issues=prepared.issues,
                 proofs=prepared.proofs)


def prepare_conditional_update(
    services: Services,
    access: Access,
    resource_type: str,
    criteria: str | Sequence[tuple[str, str]],
    resource: dict[str, Any],
    if_match: int | None = None,
) -> Write:
    """The update of the one match of ``criteria``; a create if none (with the body's id,
    or a new one); 412 if several."""
    prepared = prepare_resource(services, access, resource, resource_type)
    query = parse_criteria(services, access, resource_type, criteria)
    return Write(Interaction.UPDATE, resource_type, access, resource=resource, criteria=query,
                 expected_version=if_match, if_match=if_match is not None, fresh_id=new_id(),
                 issues=prepared.issues, proofs=prepared.proofs)

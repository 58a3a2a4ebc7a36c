"""patch and conditional patch with JSON Patch (R4 http.html#patch, RFC 6902).

The patch is applied to the current version and the result is validated like any update,
outside the write lock; the write expects the version the patch was applied to, so a
concurrent change is never lost (it surfaces as 409, or 412 when the client sent If-Match).
A conditional patch is applied under the lock to the one match of its criteria.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhir_server.errors import PreconditionFailed
from fhir_server.interactions.context import Services
from fhir_server.interactions.prepare import apply_patch, parse_criteria, prepare_resource
from fhir_server.interactions.read import read
from fhir_server.interactions.write import Write
from fhir_server.security.policy import Access
from fhir_server.security.scopes import Interaction

__all__ = ["prepare_conditional_patch", "prepare_patch"]


async def prepare_patch(
    services: Services,
    access: Access,
    resource_type: str,
    id: str,
    operations: object,
    if_match: int | None = None,
) -> Write:
    """The new version of ``resource_type/id`` that ``operations`` make of its current one."""
    current = (await read(services, access, resource_type, id)).stored
    assert current is not None
    content = current.resource()
    access.check_write(Interaction.PATCH, content, None)
    if if_match is not None and if_match != current.version:
        raise PreconditionFailed(
            f"{resource_type}/{id} is at version {current.version}, not {if_match}",
            message_id="MSG_VERSION_MISMATCH",
        )
    patched = apply_patch(content, operations, resource_type, id)
    prepared = prepare_resource(services, access, patched, resource_type)
    return Write(Interaction.PATCH, resource_type, access, id=id, resource=patched,
                 index=services.index(patched), expected_version=current.version,
                 if_match=if_match is not None, issues=prepared.issues,
                 proofs=prepared.proofs)


def prepare_conditional_patch(
    services: Services, access: Access, resource_type: str,
    criteria: str | Sequence[tuple[str, str]], operations: object,
) -> Write:
    """The patch of the one match of ``criteria`` (404 if none, 412 if several)."""
    query = parse_criteria(services, access, resource_type, criteria)
    return Write(Interaction.PATCH, resource_type, access, criteria=query, operations=operations)

"""patch with JSON Patch (R4 http.html#patch, RFC 6902).

The patch is applied to the current version and the result is validated like any update; the
write expects the version the patch was applied to, so a concurrent change is never lost
(it surfaces as 409, or 412 when the client sent If-Match).
"""

from __future__ import annotations

from typing import Any

import jsonpatch

from fhir_server.errors import BadRequest, PreconditionFailed, Unprocessable, VersionConflict
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.prepare import prepare_resource

__all__ = ["apply_patch", "patch"]


def _apply(current: dict[str, Any], operations: object) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document is an array", message_id="MSG_PATCH_INVALID")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(current)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Unprocessable(str(exc), message_id="MSG_PATCH_TEST_FAILED") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise Unprocessable(f"The patch cannot be applied: {exc}",
                            message_id="MSG_PATCH_FAILED") from None
    if not isinstance(patched, dict):
        raise Unprocessable("The patch did not produce a resource", message_id="MSG_PATCH_FAILED")
    return patched


def apply_patch(
    current: dict[str, Any], operations: object, resource_type: str, id: str
) -> dict[str, Any]:
    """Return ``current`` with the JSON Patch applied; it may not change type or id."""
    patched = _apply(current, operations)
    if patched.get("id") != id or patched.get("resourceType") != resource_type:
        raise Unprocessable("A patch may not change id or resourceType",
                            message_id="MSG_PATCH_ID_CHANGED")
    return patched


async def patch(
    services: Services,
    resource_type: str,
    id: str,
    operations: object,
    if_match: int | None = None,
) -> Outcome:
    """Apply ``operations`` to ``resource_type/id`` and store the result as a new version."""
    current = await services.store.read(resource_type, id)
    if if_match is not None and if_match != current.version:
        raise PreconditionFailed(
            f"{resource_type}/{id} is at version {current.version}, not {if_match}",
            message_id="MSG_VERSION_MISMATCH",
        )
    patched = apply_patch(current.resource(), operations, resource_type, id)
    warnings = prepare_resource(services, patched, resource_type, "patch")
    index = services.index(patched)
    try:
        async with services.store.transaction() as tx:
            result = await tx.update(patched, index, current.version, method="PATCH")
            await services.record_write(tx, result.stored, "patch")
    except VersionConflict as exc:
        if if_match is None:
            raise
        raise PreconditionFailed(exc.diagnostics, message_id="MSG_VERSION_MISMATCH") from None
    return Outcome(200, result.stored, issues=warnings)

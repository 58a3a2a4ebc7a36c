"""update, update-as-create and conditional update (R4 http.html#update, #cond-update).

An update whose content equals the current version creates no new version (200 with the
current one). ``If-Match`` is checked inside the write transaction, so of two concurrent
updates carrying the same version exactly one succeeds and the other gets 412.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.errors import BadRequest, PreconditionFailed, VersionConflict
from fhir_server.interactions.context import Outcome, Services, new_id
from fhir_server.interactions.prepare import match_single, parse_criteria, prepare_resource
from fhir_server.storage.port import StoreTransaction

__all__ = ["conditional_update", "resolve_conditional_id", "update", "update_in"]


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


async def update_in(
    tx: StoreTransaction,
    services: Services,
    resource: dict[str, Any],
    if_match: int | None = None,
    index: object | None = None,
) -> Outcome:
    """Inside ``tx``: store ``resource`` as a new version (or create it); 412 on If-Match."""
    if index is None:
        index = services.index(resource)
    try:
        result = await tx.update(resource, index, expected_version=if_match)
    except VersionConflict as exc:
        if if_match is None:
            raise
        raise PreconditionFailed(exc.diagnostics, message_id="MSG_VERSION_MISMATCH") from None
    await services.record_write(tx, result.stored, "update",
                                resource if result.changed else None)
    return Outcome(201 if result.created else 200, result.stored)


async def update(
    services: Services,
    resource_type: str,
    id: str,
    resource: dict[str, Any],
    if_match: int | None = None,
) -> Outcome:
    """Store a new version (200), create with the client's id (201), or change nothing."""
    warnings = prepare_resource(services, resource, resource_type, "update")
    check_body_id(resource, id)
    index = services.index(resource)
    async with services.store.transaction() as tx:
        outcome = await update_in(tx, services, resource, if_match, index)
    return replace(outcome, issues=warnings)


async def resolve_conditional_id(
    tx: StoreTransaction,
    resource: dict[str, Any],
    params: list[tuple[str, str]],
    fresh_id: str | None = None,
) -> None:
    """Set ``resource.id`` from the one match of ``params`` (or ``fresh_id``, else a new id);
    412 if several."""
    match = await match_single(tx, resource["resourceType"], params)
    body_id = resource.get("id")
    if match is not None:
        if body_id is not None and body_id != match:
            raise BadRequest(
                f"The id in the body ({body_id}) is not the matched resource ({match})",
                message_id="MSG_RES_ID_MISMATCH", expression=("id",),
            )
        resource["id"] = match
    elif body_id is None:
        resource["id"] = fresh_id or new_id()


async def conditional_update(
    services: Services,
    resource_type: str,
    criteria: str,
    resource: dict[str, Any],
    if_match: int | None = None,
) -> Outcome:
    """Update the one match of ``criteria``, create if none, 412 if several."""
    params = parse_criteria(criteria)
    warnings = prepare_resource(services, resource, resource_type, "update")
    async with services.store.transaction() as tx:
        await resolve_conditional_id(tx, resource, params)
        outcome = await update_in(tx, services, resource, if_match)
    return replace(outcome, issues=warnings)

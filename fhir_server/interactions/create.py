"""create and conditional create (R4 http.html#create, http.html#ccreate).

The server assigns the id (an id in the body is ignored, as R4 requires). With
``If-None-Exist`` the search and the insert run in one write transaction, so concurrent
conditional creates of the same resource produce exactly one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.interactions.context import Outcome, Services, new_id
from fhir_server.interactions.prepare import match_single, parse_criteria, prepare_resource
from fhir_server.storage.port import StoreTransaction

__all__ = ["create", "create_in"]


async def create_in(
    tx: StoreTransaction,
    services: Services,
    resource: dict[str, Any],
    criteria: list[tuple[str, str]] | None,
    index: object | None = None,
) -> Outcome:
    """Inside ``tx``: return 200 with the one existing match of ``criteria``, else create."""
    resource_type = resource["resourceType"]
    if criteria is not None:
        existing = await match_single(tx, resource_type, criteria)
        if existing is not None:
            return Outcome(200, await tx.read(resource_type, existing))
    if index is None:
        index = services.index(resource)
    stored = await tx.create(resource, index)
    await services.record_write(tx, stored, "create", resource)
    return Outcome(201, stored)


async def create(
    services: Services,
    resource_type: str,
    resource: dict[str, Any],
    if_none_exist: str | None = None,
) -> Outcome:
    """Store a new resource: 201 with it, or 200 with the existing match of If-None-Exist."""
    warnings = prepare_resource(services, resource, resource_type)
    resource["id"] = new_id()
    criteria = parse_criteria(if_none_exist) if if_none_exist is not None else None
    index = services.index(resource)
    async with services.store.transaction() as tx:
        outcome = await create_in(tx, services, resource, criteria, index)
    return replace(outcome, issues=warnings)

"""delete and conditional delete (R4 http.html#delete, http.html#cdelete).

A deletion is a new version in history; later reads answer 410 Gone. Deleting a resource
that is already deleted succeeds again (204); deleting an unknown one answers 404.
Conditional delete removes the single match (none: 204; several: 412).
"""

from __future__ import annotations

from fhir_server.errors import NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.prepare import match_single, parse_criteria

__all__ = ["conditional_delete", "delete"]


async def delete(services: Services, resource_type: str, id: str) -> Outcome:
    """Delete ``resource_type/id``; 204 on success."""
    async with services.store.transaction() as tx:
        current = await tx.read(resource_type, id)
        if current is None:
            raise NotFound(f"{resource_type}/{id} is not known", message_id="MSG_NO_EXIST")
        marker = await tx.delete(resource_type, id)
        await services.record_write(tx, marker or current, "delete")
    return Outcome(204, marker or current)


async def conditional_delete(services: Services, resource_type: str, criteria: str) -> Outcome:
    """Delete the single match of ``criteria``; 204 also when nothing matched."""
    params = parse_criteria(criteria)
    async with services.store.transaction() as tx:
        match = await match_single(tx, resource_type, params)
        marker = await tx.delete(resource_type, match) if match is not None else None
        if marker is not None:
            await services.record_write(tx, marker, "delete")
    return Outcome(204, marker)

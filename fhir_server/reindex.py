"""``fhir-server reindex``: the search index of every current resource computed again.

Used after a change of search parameters (or of how a parameter is indexed): each current
resource is read from the store, indexed by the registry of this release and its index rows
rewritten, 500 resources per transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fhir_server.interactions.context import Services
from fhir_server.loader import open_services
from fhir_server.progress import Progress
from fhir_server.search.parse import parse_search
from fhir_server.settings import Settings

__all__ = ["reindex"]


async def reindex(settings: Settings, resource_type: str | None,
                  progress: Progress | None = None) -> int:
    """Recompute and rewrite the search index of every current resource; return the count.

    ``progress`` is given the number of resources to do, then told of each batch done.
    """
    count = 0
    async with open_services(settings) as services:
        if progress is not None:
            progress.set_total(await _current_count(services, resource_type))
        batch: list[dict[str, Any]] = []
        async for stored in _scan(services, resource_type):
            batch.append(stored)
            if len(batch) >= 500:
                count += await _reindex_batch(services, batch, progress)
                batch = []
        count += await _reindex_batch(services, batch, progress)
    return count


async def _current_count(services: Services, resource_type: str | None) -> int | None:
    """The number of current resources (of one type, or all), as a ``_summary=count``
    search answers it."""
    parsed = parse_search(resource_type, [("_summary", "count")], services.registry)
    return (await services.store.search(parsed.query)).total


async def _scan(services: Services, resource_type: str | None) -> AsyncIterator[dict[str, Any]]:
    async for stored in services.store.scan(resource_type):
        yield stored.resource()


async def _reindex_batch(services: Services, resources: list[dict[str, Any]],
                         progress: Progress | None) -> int:
    indexes = [(r, services.index(r)) for r in resources]
    async with services.store.transaction() as tx:
        for resource, index in indexes:
            await tx.reindex(resource, index)
    if progress is not None:
        progress.advance(len(resources))
    return len(resources)

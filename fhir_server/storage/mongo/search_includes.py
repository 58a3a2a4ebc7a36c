"""``_include`` and ``_revinclude`` on MongoDB: each level set-wise, one query per parameter.

A level starts from a frontier of resource documents (the page's matches, then what the
previous level added, for ``:iterate``). ``_include`` reads the frontier's own reference rows
and fetches their targets by ``_id``; ``_revinclude`` asks for the resources whose reference
rows point at the frontier (the ``reference`` index). Each resource is returned once, and
never when it is already a match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.search.model import Include, ParamType, SearchQuery
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.mongo.documents import stored_from_page
from fhir_server.storage.mongo.search_filters import (
    all_of,
    include_filter,
    revinclude_filter,
    visibility_filter,
)
from fhir_server.storage.port import StoredResource

__all__ = ["MAX_INCLUDE_DEPTH", "included"]

MAX_INCLUDE_DEPTH = 4
_Doc = dict[str, Any]


async def included(
    db: Any, query: SearchQuery, registry: SearchParameterRegistry, matched: Sequence[_Doc]
) -> list[StoredResource]:
    """Return the resources named by ``_include``/``_revinclude``, each once."""
    seen = {doc["_id"] for doc in matched}
    found: list[StoredResource] = []
    frontier = list(matched)
    for depth in range(MAX_INCLUDE_DEPTH):
        level: list[_Doc] = []
        for item in query.includes:
            if frontier and (depth == 0 or item.iterate):
                level += await _forward(db, registry, item, frontier, query)
        for item in query.revincludes:
            if frontier and (depth == 0 or item.iterate):
                level += await _reverse(db, registry, item, frontier, query)
        frontier = []
        for doc in level:
            if doc["_id"] not in seen:
                seen.add(doc["_id"])
                frontier.append(doc)
                found.append(stored_from_page(doc))
        if not frontier:
            break
    return found


def _codes(registry: SearchParameterRegistry, item: Include) -> list[str]:
    """The reference parameters an include follows (``*``: every one of the source type)."""
    if item.code != "*":
        return [item.code]
    parameters = registry.for_type(item.source_type).values()
    return [p.code for p in parameters if p.type is ParamType.REFERENCE]


async def _forward(
    db: Any, registry: SearchParameterRegistry, item: Include, frontier: Sequence[_Doc],
    query: SearchQuery,
) -> list[_Doc]:
    """Return the resources that the frontier's ``source_type`` resources refer to (those
    the caller may see)."""
    codes = set(_codes(registry, item))
    targets = [
        (row["t"], row["i"])
        for doc in frontier
        if doc["type"] == item.source_type
        for row in ((doc.get("idx") or {}).get("references") or ())
        if row["p"] in codes and row.get("i")
        and (item.target_type is None or row["t"] == item.target_type)
    ]  # fmt: skip
    if not targets:
        return []
    seen = visibility_filter(query.visibility, item.target_type)
    return [doc async for doc in db["resources"].find(all_of([include_filter(targets), seen]))]


async def _reverse(
    db: Any, registry: SearchParameterRegistry, item: Include, frontier: Sequence[_Doc],
    query: SearchQuery,
) -> list[_Doc]:
    """Return the ``source_type`` resources that refer to the frontier (those the caller may
    see)."""
    targets = [
        (doc["type"], doc["id"])
        for doc in frontier
        if item.target_type is None or doc["type"] == item.target_type
    ]
    codes = _codes(registry, item)
    if not targets or not codes:
        return []
    filter_ = all_of([revinclude_filter(item.source_type, codes, targets),
                      visibility_filter(query.visibility, item.source_type)])
    return [doc async for doc in db["resources"].find(filter_)]

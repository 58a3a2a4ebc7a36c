"""Conditional searches of the MongoDB store (``find``): filter, then match exactly.

Candidates come from ``filters.query_filter`` (index-backed, possibly too wide) plus the
scope's own planned writes; ``search.matching`` then decides each one on its stored index.
Every search also yields a ``GuardWrite`` on a key derived from the search itself, so two
scopes that ran the same conditional search cannot both act on an empty result.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import TYPE_CHECKING, Any

from fhir_server.search.matching import matches
from fhir_server.search.model import Grant, SearchIndex, SearchQuery
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.mongo.documents import ROW_FIELDS
from fhir_server.storage.mongo.filters import query_filter
from fhir_server.storage.mongo.plans import GuardWrite

if TYPE_CHECKING:
    from fhir_server.storage.mongo.store import MongoStore

__all__ = ["default_registry", "find_ids", "guard_key", "search_index"]


@cache
def default_registry() -> SearchParameterRegistry:
    """Return the R4 registry, for a store whose ``registry`` was not set."""
    return SearchParameterRegistry.load()


def guard_key(query: SearchQuery) -> str:
    """Return the guard ``_id`` of a search: the same for the same clauses in any order."""
    seen = query.visibility.unresolved() if query.visibility is not None else None
    canonical = repr((sorted(repr(clause) for clause in query.clauses), seen))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return f"{query.resource_type}?{digest}"


def search_index(doc: dict[str, Any]) -> SearchIndex | None:
    """Return the ``SearchIndex`` stored in a resource document's ``idx`` (None if absent)."""
    idx = doc.get("idx")
    if idx is None:
        return None
    return _index_from(idx, doc["type"], doc["id"], doc.get("lastUpdated"))


def _index_from(
    idx: dict[str, Any], resource_type: str, id: str, last_updated: str | None
) -> SearchIndex:
    tables: dict[str, Any] = {
        name: tuple(tuple(row[f] for f in fields) for row in idx.get(name, ()))
        for name, fields in ROW_FIELDS.items()
    }
    tables["grants"] = tuple(Grant(*row) for row in tables["grants"])
    composites = tuple(
        (row["p"], _index_from(row["e"] or {}, "", "", None)) for row in idx.get("composites", ())
    )
    return SearchIndex(
        resource_type,
        id,
        last_updated,
        composites=composites,
        compartments=tuple(idx.get("compartments", ())),
        **tables,
    )


async def find_ids(
    store: MongoStore,
    query: SearchQuery,
    overlay: dict[str, dict[str, Any]],
) -> tuple[list[str], GuardWrite]:
    """Return the ids of current resources matching ``query``, and the search's guard."""
    candidates = {doc["_id"]: doc async for doc in store.db["resources"].find(query_filter(query))}
    candidates.update({k: d for k, d in overlay.items() if d["type"] == query.resource_type})
    ids = []
    for doc in candidates.values():
        index = None if doc["deleted"] else search_index(doc)
        if index is not None and matches(query, index):
            ids.append(doc["id"])
    key = guard_key(query)
    guard = await store.db["guards"].find_one({"_id": key})
    return sorted(ids), GuardWrite(key, int(guard["n"]) if guard else 0)

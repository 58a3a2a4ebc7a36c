"""Execute a ``SearchQuery`` on MongoDB: filter, sort, keyset paging, ``_total``, includes.

The filter is ``search_filters``' documents over ``resources`` (deleted resources never
match). Chains and ``_has`` are resolved first, set-wise: one query finds the resources the
inner clause selects, and the outer filter names them with ``$in``. A clause no filter can
express (``search_filters.clause_filter`` gives None: composites) narrows nothing; the
in-memory matcher decides it on each candidate's stored index, reading batches in the page's
order until the page is full.

Pages are found by keyset, as in the embedded store: sort by the ``_sort`` keys then ``rid``,
and "after the boundary of the previous page" as a comparison on those keys, carried in a
signed cursor. ``_include``/``_revinclude`` fetch each level with one query per include
parameter, following ``:iterate`` up to ``MAX_INCLUDE_DEPTH`` levels. Counting runs only
when ``_total`` asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.search.cursor import Cursor, decode_cursor, encode_cursor, page_window
from fhir_server.search.matching import matches
from fhir_server.search.model import (
    AnyClause,
    ChainClause,
    Clause,
    HasClause,
    ParamType,
    SearchQuery,
    SearchResult,
    SortKey,
    TotalMode,
    Visibility,
)
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.mongo.documents import stored_from_page
from fhir_server.storage.mongo.finding import search_index
from fhir_server.storage.mongo.search_filters import (
    NOTHING,
    Filter,
    all_of,
    chain_filter,
    clause_filter,
    has_filter,
    scope_filter,
    visibility_filter,
)
from fhir_server.storage.mongo.search_includes import included

__all__ = ["SearchPlan", "after_filter", "plan_search", "run_search", "sort_fields"]

_BATCH = 200  # candidates read at a time when the matcher decides a clause
_SORTABLE = frozenset(
    {ParamType.STRING, ParamType.TOKEN, ParamType.DATE, ParamType.NUMBER,
     ParamType.QUANTITY, ParamType.REFERENCE, ParamType.URI}
)  # fmt: skip
_DECIDING = {"type": 1, "id": 1, "lastUpdated": 1, "idx": 1}


@dataclass(frozen=True)
class SearchPlan:
    """The filter of a search, and the clauses the matcher decides on each candidate."""

    filter: Filter
    residual: tuple[Clause, ...] = ()

    def decides(self, doc: dict[str, Any]) -> bool:
        """Return whether a candidate passes the residual clauses."""
        if not self.residual:
            return True
        index = search_index(doc)
        return index is not None and matches(SearchQuery(None, self.residual), index)


async def plan_search(
    db: Any, scope: Filter, clauses: Sequence[AnyClause], visibility: Visibility | None = None
) -> SearchPlan:
    """Compile ``clauses`` within ``scope``, resolving chains and ``_has`` set-wise, their
    targets and sources within what the caller may see (``visibility``)."""
    parts, residual = [scope], []
    for clause in clauses:
        if isinstance(clause, ChainClause):
            parts.append(await _chain(db, clause, visibility))
        elif isinstance(clause, HasClause):
            parts.append(await _has(db, clause, visibility))
        else:
            compiled = clause_filter(clause)
            if compiled is None:
                residual.append(clause)
            else:
                parts.append(compiled)
    return SearchPlan(all_of(parts), tuple(residual))


async def _selected(
    db: Any, scope: Filter, clause: AnyClause, projection: dict[str, int],
    visibility: Visibility | None,
) -> list[dict[str, Any]]:
    """Return the live resources in ``scope`` for which ``clause`` holds (one query)."""
    plan = await plan_search(db, scope, [clause], visibility)
    fields = {**projection, **_DECIDING} if plan.residual else projection
    return [doc async for doc in db["resources"].find(plan.filter, projection=fields)
            if plan.decides(doc)]  # fmt: skip


async def _chain(db: Any, clause: ChainClause, visibility: Visibility | None) -> Filter:
    known = clause.target_types[0] if len(clause.target_types) == 1 else None
    scope = all_of([{"type": {"$in": list(clause.target_types)}}, {"deleted": False},
                    visibility_filter(visibility, known)])
    targets = await _selected(db, scope, clause.inner, {"type": 1, "id": 1}, visibility)
    return chain_filter(clause.code, [(doc["type"], doc["id"]) for doc in targets])


async def _has(db: Any, clause: HasClause, visibility: Visibility | None) -> Filter:
    scope = all_of([{"type": clause.resource_type}, {"deleted": False},
                    visibility_filter(visibility, clause.resource_type)])
    sources = await _selected(db, scope, clause.inner, {"idx": 1}, visibility)
    targets = [
        (row["t"], row["i"])
        for doc in sources
        for row in ((doc.get("idx") or {}).get("references") or ())
        if row["p"] == clause.reference and row.get("i")
    ]
    return has_filter(targets)


def sort_fields(query: SearchQuery, registry: SearchParameterRegistry) -> list[tuple[str, bool]]:
    """Return the document field and direction of each ``_sort`` key that orders anything.

    A parameter sorts by ``idx.sa.<code>`` (its least value) ascending and ``idx.sd.<code>``
    (its greatest) descending; an unknown or unsortable parameter orders nothing.
    """
    return [field for key in query.sort if (field := _sort_field(key, query, registry))]


def _sort_field(
    key: SortKey, query: SearchQuery, registry: SearchParameterRegistry
) -> tuple[str, bool] | None:
    if key.code == "_id":
        return "id", key.descending
    if key.code == "_lastUpdated":
        return "lastUpdated", key.descending
    definition = registry.get(query.resource_type or "Resource", key.code)
    if definition is None or definition.type not in _SORTABLE:
        return None
    return f"idx.{'sd' if key.descending else 'sa'}.{key.code}", key.descending


def after_filter(
    order: Sequence[tuple[str, bool]], keys: Sequence[Any], rid: int, rid_descending: bool
) -> Filter:
    """Return "the resource comes after ``keys``/``rid``" in ``order`` then ``rid``.

    MongoDB sorts a missing or null value first ascending and last descending, as SQLite
    sorts NULL, so a resource without the sort parameter lands where the embedded store
    puts it.
    """
    alternatives: list[Filter] = []
    for position in range(len(order) + 1):
        parts = [{field: keys[i]} for i, (field, _) in enumerate(order[:position])]
        if position < len(order):
            field, descending = order[position]
            parts.append(_beyond(field, descending, keys[position]))
        else:
            parts.append({"rid": {"$lt" if rid_descending else "$gt": rid}})
        if NOTHING not in parts:
            alternatives.append(all_of(parts))
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def _beyond(field: str, descending: bool, value: Any) -> Filter:
    if descending:
        return NOTHING if value is None else {"$or": [{field: {"$lt": value}}, {field: None}]}
    return {field: {"$ne": None}} if value is None else {field: {"$gt": value}}


def _field_value(doc: dict[str, Any], field: str) -> Any:
    value: Any = doc
    for name in field.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


async def run_search(
    db: Any, query: SearchQuery, registry: SearchParameterRegistry
) -> SearchResult:
    """Return one page of matches, the included resources, the cursors and the total.

    Raises ``BadRequest`` for an invalid cursor and ``Gone`` for an expired one.
    """
    cursor = decode_cursor(query, query.cursor) if query.cursor else None
    plan = await plan_search(db, scope_filter(query), query.clauses, query.visibility)
    fields = sort_fields(query, registry)
    fetched = await _page(db, query, plan, fields, cursor) if query.count > 0 else []
    rows, has_next, has_prev = page_window(fetched, query.count, cursor)
    return SearchResult(
        matches=tuple(stored_from_page(doc) for doc in rows),
        included=tuple(await included(db, query, registry, rows)),
        total=await _total(db, query, plan),
        next_cursor=_boundary(query, rows[-1:], fields, has_next),
        prev_cursor=_boundary(query, rows[:1], fields, has_prev, backward=True),
    )


async def _page(
    db: Any,
    query: SearchQuery,
    plan: SearchPlan,
    fields: list[tuple[str, bool]],
    cursor: Cursor | None,
) -> list[dict[str, Any]]:
    """Return up to ``count + 1`` resources after (or, backwards, before) the cursor."""
    forward = cursor is None or cursor.forward
    order = [(field, descending != (not forward)) for field, descending in fields]
    sort = [(field, -1 if descending else 1) for field, descending in order]
    sort.append(("rid", 1 if forward else -1))
    after = {} if cursor is None else after_filter(order, cursor.keys, cursor.rid, not forward)
    wanted, found = query.count + 1, []
    while True:
        limit = wanted if not plan.residual else _BATCH
        batch = [doc async for doc in db["resources"].find(
            all_of([plan.filter, after]), sort=sort, limit=limit)]  # fmt: skip
        found += [doc for doc in batch if plan.decides(doc)]
        if len(found) >= wanted or len(batch) < limit:
            return found[:wanted]
        last = batch[-1]
        keys = [_field_value(last, field) for field, _ in order]
        after = after_filter(order, keys, int(last["rid"]), not forward)


def _boundary(
    query: SearchQuery,
    rows: Sequence[dict[str, Any]],
    fields: list[tuple[str, bool]],
    wanted: bool,
    backward: bool = False,
) -> str | None:
    """Return the cursor of the page beyond ``rows[0]`` (if ``wanted`` and there is a row)."""
    if not wanted or not rows:
        return None
    doc = rows[0]
    keys = tuple(_field_value(doc, field) for field, _ in fields)
    return encode_cursor(query, Cursor(keys, int(doc["rid"]), forward=not backward))


async def _total(db: Any, query: SearchQuery, plan: SearchPlan) -> int | None:
    if query.total is TotalMode.NONE:
        return None
    if not plan.residual:
        return int(await db["resources"].count_documents(plan.filter))
    candidates = db["resources"].find(plan.filter, projection=_DECIDING)
    return sum([1 async for doc in candidates if plan.decides(doc)])

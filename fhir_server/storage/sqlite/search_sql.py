"""Execute a ``SearchQuery`` on SQLite: filter, keyset paging, ``_sort``, ``_total``, includes.

The filter is ``search_where``'s conditions over ``resources`` (deleted rows never match).
Pages are found by keyset: ``ORDER BY <sort keys>, rid`` and "after the last row of the previous
page" as a comparison on those keys, carried in a signed cursor; so page 100 costs what page 1
costs and concurrent writes neither skip nor repeat rows. ``_include``/``_revinclude`` fetch
each level set-wise (one statement per include parameter, never one per row), following
``:iterate`` up to ``MAX_INCLUDE_DEPTH`` levels. ``COUNT(*)`` runs only when ``_total`` asks.

Join shape relied on (owned by the store): ``resources(rid, type, id, version, last_updated,
deleted)`` and ``versions(rid, version, content)`` with the current content at
``versions.version = resources.version``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from fhir_server.search.cursor import Cursor, decode_cursor, encode_cursor, page_window
from fhir_server.search.model import (
    Include,
    ParamType,
    SearchQuery,
    SearchResult,
    SortKey,
    TotalMode,
)
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.port import StoredResource
from fhir_server.storage.sqlite.search_tables import TABLES, param_key
from fhir_server.storage.sqlite.search_where import Condition, Unions, WhereCompiler, param_keys

__all__ = [
    "MAX_INCLUDE_DEPTH",
    "after_condition",
    "find_ids",
    "page_boundary",
    "row_stored",
    "run_search",
]

MAX_INCLUDE_DEPTH = 4
_STORED = "r.rid, r.type, r.id, r.version, r.last_updated, v.content"
_CURRENT = "JOIN versions v ON v.rid = r.rid AND v.version = r.version"
_SORT_COLUMNS: dict[ParamType, tuple[str, str]] = {
    ParamType.STRING: ("folded", "folded"),
    ParamType.TOKEN: ("code", "code"),
    ParamType.DATE: ("low", "high"),
    ParamType.NUMBER: ("low", "high"),
    ParamType.QUANTITY: ("low", "high"),
    ParamType.REFERENCE: ("id", "id"),
    ParamType.URI: ("uri", "uri"),
}
_Row = tuple[object, ...]


def find_ids(
    conn: sqlite3.Connection, query: SearchQuery, unions: Unions | None = None
) -> list[str]:
    """Return the ids of the current resources matching the query's clauses (no paging).

    ``unions``: the codes whose rows are not stored, with the members searched instead
    (``SearchParameterRegistry.unions``); the same in every function here.
    """
    sql, params = _filter(query, unions or {})
    return [row[0] for row in conn.execute(f"SELECT r.id FROM resources r WHERE {sql}", params)]


def run_search(
    conn: sqlite3.Connection, query: SearchQuery, registry: SearchParameterRegistry,
    unions: Unions | None = None,
) -> SearchResult:
    """Return one page of matches, the included resources, the cursors and the total.

    Raises ``BadRequest`` for an invalid cursor and ``Gone`` for an expired one.
    """
    cursor = decode_cursor(query, query.cursor) if query.cursor else None
    unions = unions or {}
    keys = [_sort_key(key, query, registry, unions) for key in query.sort]
    fetched = _page(conn, query, keys, cursor, unions) if query.count > 0 else []
    rows, has_next, has_prev = page_window(fetched, query.count, cursor)
    included = _included(conn, query, registry, [int(str(row[0])) for row in rows], unions)
    return SearchResult(
        matches=tuple(row_stored(row) for row in rows),
        included=tuple(included),
        total=_total(conn, query, unions),
        next_cursor=page_boundary(query, rows[-1:], len(keys), has_next),
        prev_cursor=page_boundary(query, rows[:1], len(keys), has_prev, backward=True),
    )


def _filter(query: SearchQuery, unions: Unions) -> Condition:
    parts: list[Condition] = [("r.deleted = 0", [])]
    if query.resource_type is not None:
        parts.append(("r.type = ?", [query.resource_type]))
    elif query.types:
        parts.append((f"r.type IN ({', '.join('?' for _ in query.types)})", list(query.types)))
    if query.compartment is not None:
        parts.append(
            ("r.rid IN (SELECT rid FROM search_compartment WHERE patient = ?)",
             [query.compartment[1]])
        )  # fmt: skip
    compiler = WhereCompiler(unions, query.visibility)
    parts.append(compiler.clauses(query.clauses, "r"))
    parts.append(compiler.visible("r", query.resource_type or _only(query.types)))
    return " AND ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]


def _only(types: tuple[str, ...]) -> str | None:
    return types[0] if len(types) == 1 else None


def _sort_key(
    key: SortKey, query: SearchQuery, registry: SearchParameterRegistry, unions: Unions
) -> tuple[Condition, bool]:
    """Return the SQL value a resource sorts by, and whether descending.

    A parameter with several values sorts by its lowest value ascending and its highest
    descending (R4 3.1.1.4.9 leaves it to the server; this is the common choice).
    """
    if key.code == "_id":
        return ("r.id", []), key.descending
    if key.code == "_lastUpdated":
        return ("r.last_updated", []), key.descending
    definition = registry.get(query.resource_type or "Resource", key.code)
    if definition is None or definition.type not in _SORT_COLUMNS:
        return ("NULL", []), key.descending
    column = _SORT_COLUMNS[definition.type][1 if key.descending else 0]
    aggregate = "MAX" if key.descending else "MIN"
    table = TABLES[definition.type]
    keys = param_keys(key.code, unions)
    sql = f"(SELECT {aggregate}({column}) FROM {table} WHERE rid = r.rid AND {keys[0]})"
    return (sql, keys[1]), key.descending


def _page(
    conn: sqlite3.Connection,
    query: SearchQuery,
    keys: list[tuple[Condition, bool]],
    cursor: Cursor | None,
    unions: Unions,
) -> list[_Row]:
    """Return up to ``count + 1`` current resources after (or, backwards, before) the cursor."""
    where, params = _filter(query, unions)
    source = f"SELECT {_STORED}{{keys}} FROM resources r {_CURRENT} WHERE {where}"
    return keyset_page(conn, (source, params), keys, cursor, query.count)


def keyset_page(
    conn: sqlite3.Connection,
    source: Condition,
    keys: list[tuple[Condition, bool]],
    cursor: Cursor | None,
    count: int,
) -> list[_Row]:
    """Return up to ``count + 1`` rows of ``source`` after (or, backwards, before) the cursor.

    ``source`` selects the stored columns (``rid, type, id, version, last_updated, content``)
    and has a ``{keys}`` placeholder where the sort key expressions go, as ``k0``, ``k1``...
    Rows are ordered by the keys then ``rid``.
    """
    forward = cursor is None or cursor.forward
    order = [(f"k{i}", descending != (not forward)) for i, (_, descending) in enumerate(keys)]
    selected = "".join(f", {sql} AS k{i}" for i, ((sql, _), _) in enumerate(keys))
    params = [p for (_, ps), _ in keys for p in ps] + list(source[1])
    after: Condition = ("1", [])
    if cursor is not None:
        after = after_condition(order, cursor, rid_descending=not forward)
    order_sql = ", ".join(f"{name} {'DESC' if d else 'ASC'}" for name, d in order)
    rid_order = "rid DESC" if not forward else "rid ASC"
    sql = (
        f"SELECT * FROM ({source[0].replace('{keys}', selected)}) "
        f"WHERE {after[0]} ORDER BY {order_sql + ', ' if order_sql else ''}{rid_order} LIMIT ?"
    )
    return list(conn.execute(sql, [*params, *after[1], count + 1]))


def after_condition(
    order: list[tuple[str, bool]], cursor: Cursor, rid_descending: bool
) -> Condition:
    """Return "the row comes after the cursor" in the lexicographic ``order`` then rid.

    SQLite sorts NULL (a resource without the sort parameter) first ascending, last descending.
    """
    alternatives: list[Condition] = []
    for position in range(len(order) + 1):
        parts = [_equal(name, cursor.keys[i]) for i, (name, _) in enumerate(order[:position])]
        if position < len(order):
            name, descending = order[position]
            parts.append(_beyond(name, descending, cursor.keys[position]))
        else:
            parts.append((f"rid {'<' if rid_descending else '>'} ?", [cursor.rid]))
        alternatives.append(
            (" AND ".join(f"({s})" for s, _ in parts), [p for _, ps in parts for p in ps])
        )
    sql = " OR ".join(f"({s})" for s, _ in alternatives)
    return sql, [p for _, ps in alternatives for p in ps]


def _equal(name: str, value: object) -> Condition:
    return (f"{name} IS NULL", []) if value is None else (f"{name} = ?", [value])


def _beyond(name: str, descending: bool, value: object) -> Condition:
    if descending:
        return ("0", []) if value is None else (f"({name} < ? OR {name} IS NULL)", [value])
    return (f"{name} IS NOT NULL", []) if value is None else (f"{name} > ?", [value])


def page_boundary(
    query: SearchQuery, rows: Sequence[_Row], key_count: int, wanted: bool, backward: bool = False
) -> str | None:
    """Return the cursor of the page beyond ``rows[0]`` (if ``wanted`` and there is a row)."""
    if not wanted or not rows:
        return None
    row = rows[0]
    keys = tuple(row[6 : 6 + key_count])
    return encode_cursor(query, Cursor(keys, int(str(row[0])), forward=not backward))


def _total(conn: sqlite3.Connection, query: SearchQuery, unions: Unions) -> int | None:
    if query.total is TotalMode.NONE:
        return None
    where, params = _filter(query, unions)
    found = conn.execute(f"SELECT COUNT(*) FROM resources r WHERE {where}", params).fetchone()
    return int(found[0])


def row_stored(row: _Row) -> StoredResource:
    content = row[5]
    data = content.encode() if isinstance(content, str) else bytes(content)  # type: ignore[call-overload]
    return StoredResource(str(row[1]), str(row[2]), int(str(row[3])), str(row[4]), data)


def _included(
    conn: sqlite3.Connection,
    query: SearchQuery,
    registry: SearchParameterRegistry,
    match_rids: list[int],
    unions: Unions,
) -> list[StoredResource]:
    """Return the resources named by ``_include``/``_revinclude``, each once, set-wise."""
    seen, found, frontier = set(match_rids), [], match_rids
    for depth in range(MAX_INCLUDE_DEPTH):
        level: list[_Row] = []
        for item in query.includes:
            if frontier and (depth == 0 or item.iterate):
                level += _fetch_include(conn, registry, item, frontier, False, query, unions)
        for item in query.revincludes:
            if frontier and (depth == 0 or item.iterate):
                level += _fetch_include(conn, registry, item, frontier, True, query, unions)
        frontier = []
        for row in level:
            rid = int(str(row[0]))
            if rid not in seen:
                seen.add(rid)
                frontier.append(rid)
                found.append(row_stored(row))
        if not frontier:
            break
    return found


def _fetch_include(
    conn: sqlite3.Connection,
    registry: SearchParameterRegistry,
    item: Include,
    rids: list[int],
    reverse: bool,
    query: SearchQuery,
    unions: Unions,
) -> list[_Row]:
    """Return the rows one include parameter adds for the resources ``rids``."""
    seen = WhereCompiler(unions, query.visibility)
    return list(conn.execute(*include_sql(registry, item, rids, reverse, seen)))


def include_sql(
    registry: SearchParameterRegistry, item: Include, rids: list[int], reverse: bool,
    seen: WhereCompiler | None = None,
) -> tuple[str, list[object]]:
    """The query of one include step, read from the frontier ``rids`` outwards; only what
    the caller may see (``seen.visibility``) is included.

    ``CROSS JOIN`` keeps SQLite's join order: without statistics the planner would rather
    scan every resource of the other type and probe the frontier for each.
    """
    codes = [item.code]
    if item.code == "*":
        parameters = registry.for_type(item.source_type).values()
        codes = [p.code for p in parameters if p.type is ParamType.REFERENCE]
    keys = [param_key(code) for code in codes]
    params: list[object] = [json.dumps(rids), item.source_type, *keys]
    marks = ", ".join("?" for _ in keys) or "NULL"
    target = ""
    if item.target_type is not None:
        target, params = " AND ref.type = ?", [*params, item.target_type]
    if reverse:  # referring resources of source_type, pointing at the frontier
        sql = (
            f"SELECT {_STORED} FROM resources t CROSS JOIN search_reference ref "
            f"ON ref.id = t.id AND ref.type = t.type CROSS JOIN resources r ON r.rid = ref.rid "
            f"{_CURRENT} WHERE t.rid IN (SELECT value FROM json_each(?)) AND r.type = ? "
            f"AND ref.param IN ({marks}) AND r.deleted = 0{target}"
        )
        kind: str | None = item.source_type
    else:  # resources the frontier (of source_type) points at
        sql = (
            f"SELECT {_STORED} FROM search_reference ref CROSS JOIN resources s "
            f"ON s.rid = ref.rid CROSS JOIN resources r ON r.type = ref.type AND r.id = ref.id "
            f"{_CURRENT} WHERE ref.rid IN (SELECT value FROM json_each(?)) AND s.type = ? "
            f"AND ref.param IN ({marks}) AND r.deleted = 0{target}"
        )
        kind = item.target_type
    seen_sql, seen_params = seen.visible("r", kind) if seen is not None else ("1", [])
    if seen_sql != "1":
        sql, params = f"{sql} AND ({seen_sql})", [*params, *seen_params]
    return sql, params

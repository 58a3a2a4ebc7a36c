"""Execute a ``SearchQuery`` on SQLite: filter, keyset paging, ``_sort``, ``_total``, includes.

The filter is ``search_where``'s conditions over ``resources`` (deleted rows never match).
Pages are found by keyset: ``ORDER BY <sort keys>, rid`` and "after the last row of the previous
page" as a comparison on those keys, carried in a signed cursor; so page 100 costs what page 1
costs and concurrent writes neither skip nor repeat rows. ``_include``/``_revinclude`` fetch
each level set-wise (one statement per include parameter, never one per row), following
``:iterate`` up to ``MAX_INCLUDE_DEPTH`` levels. ``COUNT(*)`` runs only when ``_total`` asks.

A page costs in proportion to the page, not to the matches (``_page``): the matches of the
most selective clause's index are counted, streaming, up to ``candidates`` (about
``sqrt(_count * size of the type)``; the count is reused for a minute); fewer than that are
listed, ordered and the page taken from them (which gives the total for free). More than
that, and the search walks the resources in page order (``rid``, or down the sort
parameter's value index), probing every clause for each row by its primary key, and stops at
``_count + 1``: a page of 20 is found within the first ``20 / share`` rows of the type,
where ``share`` is the part of the type's resources that match (``Patient?name=nguyen``:
about 50 rows). The sort reads only ``rid`` and the sort keys; the page's contents are read
afterwards, for its rows only. All the statements of a search read one snapshot (one read
transaction).

Join shape relied on (owned by the store): ``resources(rid, type, id, version, last_updated,
deleted)`` and ``versions(rid, version, content)`` with the current content at
``versions.version = resources.version``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from fhir_server.search.cursor import Cursor, decode_cursor, page_window
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
from fhir_server.storage.sqlite.bodies import json_bytes
from fhir_server.storage.sqlite.consent_sql import GrantReader, focused, read_grants
from fhir_server.storage.sqlite.keyset import keyset_page, page_boundary
from fhir_server.storage.sqlite.search_tables import TABLES, param_key
from fhir_server.storage.sqlite.search_where import (
    Condition,
    Unions,
    WhereCompiler,
    as_unions,
    head_scan,
    lead_clause,
    param_keys,
)

__all__ = [
    "LEAST_CANDIDATES",
    "MAX_INCLUDE_DEPTH",
    "StoreConnection",
    "candidates",
    "compartments_of",
    "find_ids",
    "row_stored",
    "run_search",
]

MAX_INCLUDE_DEPTH = 4
#: The least number of matches from which a search walks in page order (``candidates``).
LEAST_CANDIDATES = 200
#: "No limit" for a LIMIT clause (SQLite takes -1 as none; a bound compared with counts).
_UNLIMITED = 2**62
#: How long a type's number of resources is reused before it is counted again.
_SIZE_TTL_S = 600.0
#: The number of resources of each type, with when it was counted, per database file.
_sizes: dict[tuple[str, str], tuple[int, float]] = {}
#: How long the count of a lead's list (``_lead_count``) is reused to choose a plan.
_COUNT_TTL_S = 60.0
#: The most counts of leads' lists remembered per process (the oldest are dropped first).
_COUNTS_KEPT = 4096
#: What reading a row costs, in tenths of a microsecond, as ``_head_page`` weighs its plans
#: (the 1M store, in-process; docs/performance.md): a row of a head (``search_string_head``),
#: a row of the lead the head reads (its resource's other rows probed), a row of the lead's
#: list (read into a sorted list).
_HEAD_ROW, _MATCH_ROW, _LIST_ROW = 1, 12, 3
#: The counts of leads' lists, keyed by database file, statement, values and bound, with when
#: each was counted; a lock, as a search may run in a thread (``store.run_timed``).
_counts: dict[tuple[object, ...], tuple[int, float]] = {}
_counts_lock = threading.Lock()
_NOBODY: frozenset[str] = frozenset()
_STORED = "r.rid, r.type, r.id, r.version, r.last_updated, v.content"
_CURRENT = "JOIN versions v ON v.rid = r.rid AND v.version = r.version"
_SORT_COLUMNS: dict[ParamType, tuple[str, str]] = {
    ParamType.STRING: ("folded", "folded"),
    ParamType.TOKEN: ("code", "code"),
    ParamType.DATE: ("low", "low"),
    ParamType.NUMBER: ("low", "low"),
    ParamType.QUANTITY: ("low", "low"),
    ParamType.REFERENCE: ("id", "id"),
    ParamType.URI: ("uri", "uri"),
}
_Row = tuple[object, ...]
#: The tables whose value index ``(param, column, tie...)`` lists rows in the order of a
#: descending sort (``_ordered_walk``), with the column that tells apart two rows of one
#: resource sharing the sort value (None: the key has no other column).
_ORDERED: dict[ParamType, tuple[str, str | None]] = {
    ParamType.STRING: ("search_string", "exact"),
    ParamType.TOKEN: ("search_token", "system"),
    ParamType.DATE: ("search_date", "high"),
    ParamType.NUMBER: ("search_number", "high"),
    ParamType.URI: ("search_uri", None),
}


def find_ids(
    conn: sqlite3.Connection, query: SearchQuery, unions: Unions | None = None
) -> list[str]:
    """Return the ids of the current resources matching the query's clauses (no paging).

    ``unions``: the codes whose rows are not stored, with the members searched instead
    (``SearchParameterRegistry.unions``); the same in every function here.
    """
    sql, params = _filter(query, as_unions(unions))
    return [row[0] for row in conn.execute(f"SELECT r.id FROM resources r WHERE {sql}", params)]


def run_search(
    conn: sqlite3.Connection, query: SearchQuery, registry: SearchParameterRegistry,
    unions: Unions | None = None, grants_of: GrantReader = read_grants,
) -> SearchResult:
    """Return one page of matches, the included resources, the cursors and the total
    (``grants_of`` reads the Consent grants of a query's patient: ``consent_sql.focused``).

    Raises ``BadRequest`` for an invalid cursor and ``Gone`` for an expired one.
    """
    cursor = decode_cursor(query, query.cursor) if query.cursor else None
    unions = as_unions(unions)
    keys = [_sort_key(key, query, registry, unions) for key in query.sort]
    with _snapshot(conn):  # the grants of the focus too: one read transaction
        judged = focused(conn, query, grants_of)  # the cursors are the query's as asked
        fetched, total = _page(conn, judged, keys, cursor, registry, unions)
        rows, has_next, has_prev = page_window(fetched, query.count, cursor)
        included = _included(conn, judged, registry, [int(str(row[0])) for row in rows],
                             unions)
        patients = compartments_of(conn, [row[0] for row in (*rows, *included)])
        if total is None and query.total is not TotalMode.NONE:
            total = _total(conn, judged, unions)
    return SearchResult(
        matches=tuple(row_stored(row, patients) for row in rows),
        included=tuple(row_stored(row, patients) for row in included),
        total=total if query.total is not TotalMode.NONE else None,
        next_cursor=page_boundary(query, rows[-1:], len(keys), has_next),
        prev_cursor=page_boundary(query, rows[:1], len(keys), has_prev, backward=True),
    )


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the statements inside in one read transaction (unless one is open already)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _filter(query: SearchQuery, unions: Unions, walk: bool = False) -> Condition:
    """The filter's condition; a search Consent governs needs no lead (it never walks)."""
    governed = query.visibility is not None and query.visibility.consent is not None
    return _compiled(query, unions, walk, bound=None if governed else LEAST_CANDIDATES)[0]


def candidates(conn: sqlite3.Connection, query: SearchQuery) -> int:
    """The number of rows of the lead's list from which walking in page order costs less
    than reading the page from that list: a walk reads about ``count * size / matches``
    resources of a type of ``size`` (each one probed, about 1 us), the list reads its ``rows``
    index entries into a sorted list (about 0.25 us each; ``rows >= matches``) and then probes
    only until the page is full, so the list costs less below ``2 * sqrt(count * size)`` rows
    (at least ``LEAST_CANDIDATES``). A type's size is counted once per ``_SIZE_TTL_S``.

    Each further clause (up to two) lets the walk keep only part of the lead's matches it
    reads, taken as half: the walk reads twice the rows for a page and the list about as many
    as before, so the bound is ``sqrt(2)`` times greater for each (``name=hoang&birthdate=
    ge1990&_count=50`` on the 1M store, 3,916 rows of the lead: 2.1 ms from the list, 3.2 ms
    by the walk; docs/performance.md)."""
    kinds = (query.resource_type,) if query.resource_type else query.types
    size = sum(_type_size(conn, kind) for kind in kinds) if kinds else _type_size(conn, "")
    narrowing = 2 ** min(2, max(0, len(query.clauses) - 1))
    return max(LEAST_CANDIDATES, 2 * math.isqrt(max(1, query.count) * size * narrowing))


def _type_size(conn: sqlite3.Connection, kind: str) -> int:
    """The resources of type ``kind`` (every type for ""), remembered per database file (a
    database in memory is counted every time)."""
    path = _database_path(conn)
    found = _sizes.get((path, kind)) if path else None
    if found is None or time.monotonic() - found[1] > _SIZE_TTL_S:
        sql = "SELECT COUNT(*) FROM resources" + (" WHERE type = ?" if kind else "")
        found = (int(conn.execute(sql, (kind,) if kind else ()).fetchone()[0]), time.monotonic())
        if path:
            _sizes[(path, kind)] = found
    return found[0]


def _compiled(
    query: SearchQuery, unions: Unions, walk: bool = False, bound: int | None = LEAST_CANDIDATES,
    by_rid: bool = False,
) -> tuple[Condition, Condition | None]:
    """The filter's condition on ``r``, and the list its first clause drives from
    (``WhereCompiler.lead``; None without a ``bound``: not wanted); ``walk``: every clause a
    probe, for a walk in ``rid`` order; ``by_rid``: the rows come by ``rid`` from elsewhere
    (``_head_page``), so the type is tested on each as with a list.

    With a list to drive from, the type is tested on each listed row (``+r.type``) rather
    than used to look the row up in the ``(type, rid)`` index: the list gives ``rid``, the
    primary key, so that index would only add a probe per row (3.2 against 2.1 ms for the
    1,154 Patients named Vu of the 1M store). ``r.deleted = 0`` comes last: a walk reads
    ``rid`` from that index and probes the clauses first, so SQLite loads the table row only
    for the rows that pass them (a walk for a page of Patients named Hoang born since 1990:
    4.4 against 2.1 ms).
    """
    compiler = WhereCompiler(unions, query.visibility, probes_only=walk)
    compiler.types["r"] = _types(query)
    lead = None if bound is None else compiler.lead(query.clauses, "r", bound)
    parts: list[Condition] = []
    if query.resource_type is not None:
        parts.append(("+r.type = ?" if lead or by_rid else "r.type = ?", [query.resource_type]))
    elif query.types:
        parts.append((f"r.type IN ({', '.join('?' for _ in query.types)})", list(query.types)))
    if query.compartment is not None:
        parts.append(
            ("r.rid IN (SELECT rid FROM search_compartment WHERE patient = ?)",
             [query.compartment[1]])
        )  # fmt: skip
    parts.append(compiler.clauses(query.clauses, "r"))
    parts.append(compiler.visible("r", query.resource_type or _only(query.types)))
    parts.append(("r.deleted = 0", []))
    where = " AND ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    return where, lead


def _types(query: SearchQuery) -> tuple[str, ...] | None:
    """The types the query's resources may have (None: any)."""
    return (query.resource_type,) if query.resource_type else query.types or None


def _only(types: tuple[str, ...]) -> str | None:
    return types[0] if len(types) == 1 else None


def _sort_key(
    key: SortKey, query: SearchQuery, registry: SearchParameterRegistry, unions: Unions
) -> tuple[Condition, bool]:
    """Return the SQL value a resource sorts by, and whether descending.

    A parameter with several values sorts by its lowest value ascending and its highest
    descending (R4 3.1.1.4.9 leaves it to the server; this is the common choice); a range (a
    date of some precision, a period, a number's precision) sorts by its low end both ways.
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
    groups = unions.by_alias(key.code, _types(query))
    if len(groups) == 1 and (groups[0][0] or groups[0][1] is None):
        keys = param_keys(key.code, unions, groups[0][1])
    else:  # an alias in some of the types: each type's own rows (the row is r's)
        parts = [(f"r.type IN ({', '.join('?' for _ in kinds or ())}) AND {sql}",
                  [*(kinds or ()), *params])
                 for kinds, alias in groups
                 for sql, params in [param_keys(key.code, unions, alias)]]
        keys = " OR ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    sql = f"(SELECT {aggregate}({column}) FROM {table} WHERE rid = r.rid AND ({keys[0]}))"
    return (sql, keys[1]), key.descending


def _page(
    conn: sqlite3.Connection,
    query: SearchQuery,
    keys: list[tuple[Condition, bool]],
    cursor: Cursor | None,
    registry: SearchParameterRegistry,
    unions: Unions,
) -> tuple[list[_Row], int | None]:
    """Return up to ``count + 1`` current resources after (or, backwards, before) the cursor,
    and the number of matches when it came for free (a search Consent governs).

    Fewer than ``candidates`` matches in the lead's list: the page is read from that list
    (``rid IN (list)`` with the type tested per row, ``_compiled``), which SQLite holds
    sorted by ``rid``, so a page in ``rid`` order probes the other clauses of about
    ``(count + 1) / share`` listed rows and stops (the 1,154 Patients named Vu, half of them
    born since 1990, a page of 50: 0.9 ms, against 3.0 ms to list every match first). A sort
    by other keys reads the whole list. Without such a clause (no clauses, only negations or
    ``:missing``) the search walks at once.

    A caller Consent governs never walks: the matches of its clauses may be many while those
    it may see are few, and a walk would judge Consent row after row for them; its matches
    are listed, as every search's were before the walk (docs/search.md).
    """
    governed = query.visibility is not None and query.visibility.consent is not None
    limit = _UNLIMITED if governed else candidates(conn, query)
    (where, params), lead = _compiled(query, unions, bound=None if governed else limit)
    total: int | None = None
    if governed:
        listed = conn.execute(f"SELECT r.rid FROM resources r WHERE {where}", params).fetchall()
        rids = json.dumps([row[0] for row in listed])
        source: Condition = (
            "SELECT r.rid{keys} FROM resources r WHERE r.rid IN (SELECT value FROM json_each(?))",
            [rids])
        total = len(listed)
    elif lead is not None and (scan := _head_page(conn, query, keys, unions, counted := (
            _lead_count(conn, lead, limit)), limit)) is not None:
        source = scan
    elif lead is not None and counted < limit:
        # The page straight from the lead's list: its rids come sorted (SQLite's IN list),
        # so in rid order the other clauses are probed only until the page is full.
        source = (f"SELECT r.rid{{keys}} FROM resources r WHERE {where}", params)
    else:
        walk = _filter(query, unions, walk=True)
        ordered = _ordered_walk(conn, query, walk, cursor, registry, unions)
        if ordered is not None:
            return _with_content(conn, ordered), total
        source = (f"SELECT r.rid{{keys}} FROM resources r WHERE {walk[0]}", walk[1])
    found = keyset_page(conn, source, keys, cursor, query.count) if query.count > 0 else []
    return _with_content(conn, found), total


def _head_page(
    conn: sqlite3.Connection, query: SearchQuery, keys: list[tuple[Condition, bool]],
    unions: Unions, counted: int, limit: int,
) -> Condition | None:
    """The page of a search in ``rid`` order whose lead is a starts-with string clause of
    at least ``HEAD_CHARS`` characters (``name=tran``), read from ``search_string_head``:
    the rows of the value's first characters in ``rid`` order, the rest of the value tested
    on each, a resource's other matching rows skipped, the other clauses probed for the rows
    that pass, stopped when the page is full (``search_where.head_scan``). None when the
    search is of another kind, or when the lead's list (``counted`` rows) is the cheaper
    read.

    At ``limit`` rows or more the lead would be walked (about ``count * size / matches``
    resources, each probed by its primary key): the head is always the cheaper read (at
    most every row of the parameter, a step of an index each, against a probe of a B-tree
    each). Under ``limit`` the list reads its ``counted`` rows (``_LIST_ROW`` each); the head
    reads the ``rows`` of the lead the page needs (``_MATCH_ROW`` each: the resource's
    other rows are probed) and about ``head * rows / counted`` rows of the head
    (``_HEAD_ROW`` each), so the head's rows are counted up to where it would cost more,
    remembered as the lead's count is. A caller whose visibility restricts the rows (a
    patient's compartment, SMART restrictions) keeps the plans of before: the head would
    read rows until it found the few it may see.
    """
    if keys or query.count <= 0 or query.compartment is not None or not query.clauses:
        return None
    first = lead_clause(query.clauses)
    found = head_scan(first, unions, _types(query))
    if found is None:
        return None
    kind = query.resource_type or _only(query.types)
    if WhereCompiler(unions, query.visibility).visible("r", kind)[0] != "1":
        return None
    scan, head = found
    if counted < limit:
        needed = (query.count + 1) * 2 ** min(2, len(query.clauses) - 1)
        rows = min(counted, 2 * needed)  # a Patient has about two rows of a name it matches
        room = _LIST_ROW * counted - _MATCH_ROW * rows
        if room <= 0:
            return None
        bound = room * counted // (_HEAD_ROW * rows) + 1
        if _lead_count(conn, head, bound) >= bound:
            return None
    rest = dataclasses.replace(query, clauses=tuple(c for c in query.clauses if c is not first))
    where, params = _compiled(rest, unions, walk=True, bound=None, by_rid=True)[0]
    return (f"SELECT h.rid{{keys}} FROM search_string h CROSS JOIN resources r "
            f"ON r.rid = h.rid WHERE {scan[0]} AND {where}", [*scan[1], *params])


def _ordered_walk(
    conn: sqlite3.Connection, query: SearchQuery, walk: Condition, cursor: Cursor | None,
    registry: SearchParameterRegistry, unions: Unions,
) -> list[_Row] | None:
    """A page of a search sorted descending by one parameter, read from the parameter's value
    index in that order and stopped at ``count + 1`` rows: each resource at its greatest
    value (its row with no greater one), then the resources without the parameter (they
    sort last), in ``rid`` order. None when the sort is not of that kind.
    """
    if len(query.sort) != 1 or not query.sort[0].descending or query.count <= 0:
        return None
    code = query.sort[0].code
    definition = registry.get(query.resource_type or "Resource", code)
    if (definition is None or definition.type not in _ORDERED or code in unions
            or code in ("_id", "_lastUpdated")):
        return None
    groups = unions.by_alias(code, _types(query))
    aliased = groups[0][1]
    if len(groups) > 1 or (not groups[0][0] and aliased is not None) or (
            aliased is not None and aliased.target is not None):
        return None  # an alias in some of the types only: sorted the general way
    table, tie = _ORDERED[definition.type]
    column = _SORT_COLUMNS[definition.type][1]
    key = param_key(code if aliased is None else aliased.member)
    greater = f"e.{column} > d.{column}" + (
        f" OR (e.{column} = d.{column} AND e.{tie} > d.{tie})" if tie else "")
    valued: Condition = (
        f"SELECT r.rid{{keys}} FROM {table} d CROSS JOIN resources r ON r.rid = d.rid "
        f"WHERE d.param = ? AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.rid = d.rid "
        f"AND e.param = d.param AND ({greater})) AND {walk[0]}", [key, *walk[1]])
    unvalued: Condition = (
        f"SELECT r.rid{{keys}} FROM resources r WHERE {walk[0]} AND NOT EXISTS "
        f"(SELECT 1 FROM {table} WHERE rid = r.rid AND param = ?)", [*walk[1], key])
    parts = [(valued, f"d.{column}"), (unvalued, "NULL")]
    if cursor is not None and not cursor.forward:
        parts.reverse()
    found: list[_Row] = []
    for source, value in parts:
        if len(found) <= query.count:
            found += keyset_page(conn, source, [((value, []), True)], cursor,
                                 query.count - len(found))
    return found


def _lead_count(conn: sqlite3.Connection, lead: Condition, limit: int) -> int:
    """The rows of the lead's list up to ``limit`` (``_bounded_count``), remembered per
    database file for ``_COUNT_TTL_S`` (a database in memory is counted every time).

    The count only chooses the plan, and both plans give the same page, so a count a minute
    old costs at most a slower plan, never a different answer. Counting costs about 0.1 us a
    row, up to ``limit`` rows: 0.45-0.5 ms of the 2-4 ms of a page of 50 Patients by a common
    name on the 1M store (docs/performance.md), paid again by every search of that name.
    """
    path = _database_path(conn)
    if not path:
        return _bounded_count(conn, lead, limit)
    key = (path, lead[0], *lead[1], limit)
    with _counts_lock:
        found = _counts.get(key)
    if found is not None and time.monotonic() - found[1] <= _COUNT_TTL_S:
        return found[0]
    counted = _bounded_count(conn, lead, limit)
    with _counts_lock:
        _counts.pop(key, None)
        while len(_counts) >= _COUNTS_KEPT:
            del _counts[next(iter(_counts))]
        _counts[key] = (counted, time.monotonic())
    return counted


class StoreConnection(sqlite3.Connection):
    """A connection that remembers the file of its main database (``_database_path``), which
    a search asks for two or three times (the type's size, the lead's count): one ``PRAGMA``
    per connection instead of per ask. The store opens its connections so."""

    main_path: str | None = None


def _database_path(conn: sqlite3.Connection) -> str:
    """The file of the connection's main database ("" for one in memory); read once per
    ``StoreConnection`` (a connection's main database never changes), else every time."""
    known = getattr(conn, "main_path", None)
    if known is None:
        known = str(conn.execute("PRAGMA database_list").fetchone()[2])
        if isinstance(conn, StoreConnection):
            conn.main_path = known
    return known


def _bounded_count(conn: sqlite3.Connection, rows: Condition, limit: int) -> int:
    """The number of rows of the ``SELECT`` ``rows``, counted up to ``limit``."""
    sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM ({rows[0]}) LIMIT ?)"
    return int(conn.execute(sql, [*rows[1], limit]).fetchone()[0])


def _with_content(conn: sqlite3.Connection, found: list[_Row]) -> list[_Row]:
    """Return the rows ``(rid, sort keys...)`` as stored rows (``_STORED``) then their keys."""
    if not found:
        return []
    rids = json.dumps([row[0] for row in found])
    stored = {row[0]: row for row in conn.execute(
        f"SELECT {_STORED} FROM resources r {_CURRENT} "
        "WHERE r.rid IN (SELECT value FROM json_each(?))", [rids])}
    return [(*stored[row[0]], *row[1:]) for row in found if row[0] in stored]


def _total(conn: sqlite3.Connection, query: SearchQuery, unions: Unions) -> int | None:
    if query.total is TotalMode.NONE:
        return None
    where, params = _filter(query, unions)
    found = conn.execute(f"SELECT COUNT(*) FROM resources r WHERE {where}", params).fetchone()
    return int(found[0])


def row_stored(row: _Row, patients: Mapping[object, frozenset[str]] | None = None
               ) -> StoredResource:
    """The stored resource of a row of ``_STORED``; with ``patients`` (of
    :func:`compartments_of`), the patients of its compartments."""
    data = json_bytes(row[5])  # type: ignore[arg-type]
    return StoredResource(str(row[1]), str(row[2]), int(str(row[3])), str(row[4]), data,
                          patients=None if patients is None else patients.get(row[0], _NOBODY))


def compartments_of(conn: sqlite3.Connection, rids: list[object]) -> dict[object, frozenset[str]]:
    """The patients in whose compartments the resources ``rids`` are, as indexed (resources
    in none are left out): what the page's AuditEvents name, read in one statement (about
    0.1 ms for 50 resources) instead of found in each resource's JSON (about 20 us each)."""
    if not rids:
        return {}
    found: dict[object, set[str]] = {}
    for rid, patient in conn.execute(
            "SELECT rid, patient FROM search_compartment "
            "WHERE rid IN (SELECT value FROM json_each(?))", [json.dumps(rids)]):
        found.setdefault(rid, set()).add(patient)
    return {rid: frozenset(patients) for rid, patients in found.items()}


def _included(
    conn: sqlite3.Connection,
    query: SearchQuery,
    registry: SearchParameterRegistry,
    match_rids: list[int],
    unions: Unions,
) -> list[_Row]:
    """Return the rows (``_STORED``) of the resources named by ``_include``/``_revinclude``,
    each once, set-wise."""
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
                found.append(row)
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
    unions = seen.unions if seen is not None else None
    aliased = None if unions is None else unions.alias(item.source_type, item.code)
    codes = [item.code if aliased is None else aliased.member]
    if item.code == "*":  # an alias's rows are among its member's
        parameters = registry.for_type(item.source_type).values()
        codes = [p.code for p in parameters if p.type is ParamType.REFERENCE
                 and (unions is None or unions.alias(item.source_type, p.code) is None)]
    keys = [param_key(code) for code in codes]
    params: list[object] = [json.dumps(rids), item.source_type, *keys]
    marks = ", ".join("?" for _ in keys) or "NULL"
    target = ""
    if item.target_type is not None:
        target, params = " AND ref.type = ?", [*params, item.target_type]
    if aliased is not None and aliased.target is not None:
        # ``+``: not a constant for the planner to carry over to ``t.type`` (it would then
        # read every resource of the type instead of the frontier's).
        target, params = f"{target} AND +ref.type = ?", [*params, aliased.target]
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

"""Keyset paging over SQLite: a page is "the rows after the previous page's last one" in the
order of the sort keys then ``rid``, carried in a signed cursor; so page 100 costs what page 1
costs and concurrent writes neither skip nor repeat rows (resource searches, the audit log).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fhir_server.search.cursor import Cursor, encode_cursor
from fhir_server.search.model import SearchQuery
from fhir_server.storage.sqlite.search_where import Condition

__all__ = ["after_condition", "keyset_page", "page_boundary"]

_Row = tuple[object, ...]


def keyset_page(
    conn: sqlite3.Connection,
    source: Condition,
    keys: list[tuple[Condition, bool]],
    cursor: Cursor | None,
    count: int,
) -> list[_Row]:
    """Return up to ``count + 1`` rows of ``source`` after (or, backwards, before) the cursor.

    ``source`` selects ``rid`` first (then any other columns) and has a ``{keys}`` placeholder
    where the sort key expressions go, as ``k0``, ``k1``... Rows are ordered by the keys then
    ``rid``.
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

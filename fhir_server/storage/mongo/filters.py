"""Filter documents over ``resources`` for a search: built by functions, never from strings.

``query_filter`` narrows the candidates of a ``SearchQuery`` with the clauses an index can
answer exactly (tokens, ``:exact`` strings, references, ``_id``, the patient compartment).
The filter may let through more than the query matches, never less: the store then applies
``search.matching`` to each candidate, the executable statement of search semantics.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.model import (
    AnyClause,
    Clause,
    Modifier,
    ParamType,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
)

__all__ = ["clause_filter", "query_filter", "reference_filter", "token_filter"]


def query_filter(query: SearchQuery) -> dict[str, Any]:
    """Return the filter of current resources that may match ``query``."""
    clauses: list[dict[str, Any]] = [{"deleted": False}]
    if query.resource_type is not None:
        clauses.insert(0, {"type": query.resource_type})
    elif query.types:
        clauses.insert(0, {"type": {"$in": list(query.types)}})
    if query.compartment is not None:
        clauses.append({"idx.compartments": query.compartment[1]})
    for clause in query.clauses:
        narrowed = clause_filter(clause)
        if narrowed is not None:
            clauses.append(narrowed)
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def clause_filter(clause: AnyClause) -> dict[str, Any] | None:
    """Return a filter every resource matching ``clause`` passes, or None (no narrowing)."""
    if not isinstance(clause, Clause) or clause.modifier not in (None, Modifier.EXACT):
        return None
    if clause.code == "_id":
        ids = [v.code for v in clause.values if isinstance(v, TokenValue)]
        return {"id": {"$in": ids}} if clause.modifier is None else None
    if clause.type is ParamType.TOKEN and clause.modifier is None:
        return _any_of([token_filter(clause.code, v) for v in clause.values])
    if clause.type is ParamType.STRING and clause.modifier is Modifier.EXACT:
        return _any_of([_exact_string_filter(clause.code, v) for v in clause.values])
    if clause.type is ParamType.REFERENCE and clause.modifier is None:
        return _any_of([reference_filter(clause.code, v) for v in clause.values])
    return None


def _any_of(filters: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    if not filters or any(f is None for f in filters):
        return None
    present = [f for f in filters if f is not None]
    return present[0] if len(present) == 1 else {"$or": present}


def token_filter(code: str, value: object) -> dict[str, Any] | None:
    """Return ``idx.tokens`` rows with this code, system and value (None parts: any)."""
    if not isinstance(value, TokenValue):
        return None
    row: dict[str, Any] = {"p": code}
    if value.system is not None:
        row["s"] = value.system
    if value.code is not None:
        row["c"] = value.code
    return {"idx.tokens": {"$elemMatch": row}}


def _exact_string_filter(code: str, value: object) -> dict[str, Any] | None:
    if not isinstance(value, StringValue):
        return None
    return {"idx.strings": {"$elemMatch": {"p": code, "e": value.text}}}


def reference_filter(code: str, value: object) -> dict[str, Any] | None:
    """Return ``idx.references`` rows pointing at ``Type/id``, a bare id, or a url."""
    if not isinstance(value, ReferenceValue):
        return None
    if value.url is not None:
        return {"idx.references": {"$elemMatch": {"p": code, "u": value.url}}}
    row: dict[str, Any] = {"p": code, "i": value.id}
    if value.type is not None:
        row["t"] = value.type
    return {"idx.references": {"$elemMatch": row}}

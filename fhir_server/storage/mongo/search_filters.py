"""Compile search clauses into MongoDB filter documents over the ``idx`` sub-document.

Each function returns a filter document (a dict, built here, never parsed from text) that a
resource passes exactly when the clause holds, as ``search.matching`` states it; ``None``
means "not expressible as a filter": the executor then narrows by the other clauses and lets
the matcher decide that one (today: composite parameters only). The meaning of the prefixes
is ``search.ranges``'s, as in the SQLite compiler, so the stores cannot disagree.

A row condition is one ``$elemMatch`` over a row table (``idx.tokens``, ``idx.dates``...), so
the parameter code, system and value must hold in the same row, as MongoDB's multikey
indexes (``p`` first) can answer. Chains and ``_has`` are resolved by the executor to the
resources they lead to; ``chain_filter`` and ``has_filter`` phrase those sets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeAlias

from fhir_server.search.dates import instant_bound
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import (
    Clause,
    ClauseValue,
    DateValue,
    Modifier,
    NumberValue,
    ParamType,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    UriValue,
    Visibility,
)
from fhir_server.search.ranges import Bound, RangePredicate, range_predicate
from fhir_server.storage.mongo.consent_filter import consent_filter
from fhir_server.storage.mongo.documents import resource_key

__all__ = [
    "NOTHING",
    "Filter",
    "all_of",
    "any_of",
    "chain_filter",
    "clause_filter",
    "has_filter",
    "include_filter",
    "revinclude_filter",
    "scope_filter",
    "visibility_filter",
]

Filter: TypeAlias = dict[str, Any]

NOTHING: Filter = {"_id": {"$in": []}}
"""A filter no document passes."""

_PREFIX_END = "\U0010ffff"  # the greatest code point: "starts with p" is p <= x < p + this
_TABLES: dict[ParamType, str] = {
    ParamType.STRING: "strings",
    ParamType.TOKEN: "tokens",
    ParamType.DATE: "dates",
    ParamType.NUMBER: "numbers",
    ParamType.QUANTITY: "quantities",
    ParamType.REFERENCE: "references",
    ParamType.URI: "uris",
    ParamType.COMPOSITE: "composites",
}
_COLUMNS = {"low": "lo", "high": "hi"}
_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_NEGATED = {"<": "$gte", "<=": "$gt", ">": "$lte", ">=": "$lt"}


def all_of(filters: Sequence[Filter]) -> Filter:
    """Return the AND of ``filters`` (empty ones, which hold always, are dropped)."""
    present = [f for f in filters if f]
    if not present:
        return {}
    return present[0] if len(present) == 1 else {"$and": present}


def any_of(filters: Sequence[Filter | None]) -> Filter | None:
    """Return the OR of ``filters``; None if any is None (not expressible), NOTHING if empty."""
    if any(f is None for f in filters):
        return None
    present = [f for f in filters if f is not None]
    if not present:
        return NOTHING
    return present[0] if len(present) == 1 else {"$or": present}


def scope_filter(query: SearchQuery) -> Filter:
    """Return the current resources of the query's type(s) and compartment."""
    parts: list[Filter] = []
    if query.resource_type is not None:
        parts.append({"type": query.resource_type})
    elif query.types:
        parts.append({"type": {"$in": list(query.types)}})
    parts.append({"deleted": False})
    if query.compartment is not None:
        parts.append({"idx.compartments": query.compartment[1]})
    kinds = query.types if query.resource_type is None else (query.resource_type,)
    parts.append(visibility_filter(query.visibility, kinds[0] if len(kinds) == 1 else None))
    return all_of(parts)


def visibility_filter(visibility: Visibility | None, kind: str | None = None) -> Filter:
    """Return "the caller may see the resource" for resources of type ``kind`` (any type
    when None): ``Visibility`` as a filter. A restriction no filter expresses (a chain, a
    composite) hides the type it restricts: the adapter fails closed. A ``consent`` rule
    needs its grants resolved (``MongoStore.resolve``); without them only what the caller
    may see without a Consent passes."""
    if visibility is None or visibility.everything:
        return {}
    if kind is not None:
        if not visibility.readable(kind):
            return NOTHING
        parts = [_compartment(kind in compartment_types(), str(visibility.patient))
                 if visibility.bound(kind) else {}]
        consent = visibility.consent
        if consent is not None and kind not in consent.open_types:
            parts.append(consent_filter(consent))
        alternatives = visibility.restricted(kind)
        if alternatives is not None:
            parts.append(_alternatives(alternatives) or NOTHING)
        return all_of(parts)
    parts = []
    if visibility.types is not None:
        parts.append({"type": {"$in": sorted(visibility.types)}})
    if visibility.patient is not None:
        parts.append(_compartment_rule(visibility))
    if visibility.consent is not None:
        parts.append(consent_filter(visibility.consent))
    own_entries = sorted(kind for kind, _ in visibility.restrictions if kind != "*")
    for restricted, alternatives in visibility.restrictions:
        exempt = ({"type": {"$in": own_entries}} if restricted == "*"
                  else {"type": {"$ne": restricted}})
        parts.append({"$or": [exempt, _alternatives(alternatives) or NOTHING]})
    return all_of(parts)


def _compartment(patient_data: bool, patient: str) -> Filter:
    """A type of the Patient compartment: in this patient's; any other type: in nobody
    else's (a Binary about another patient)."""
    if patient_data:
        return {"idx.compartments": patient}
    return {"$nor": [{"idx.compartments": {"$elemMatch": {"$ne": patient}}}]}


def _compartment_rule(visibility: Visibility) -> Filter:
    patient, types = str(visibility.patient), sorted(compartment_types())
    rules: list[Filter] = [
        {"$and": [{"type": {"$in": types}}, _compartment(True, patient)]},
        {"$and": [{"type": {"$nin": types}}, _compartment(False, patient)]},
    ]
    if visibility.unbound:
        rules.insert(0, {"type": {"$in": sorted(visibility.unbound)}})
    return {"$or": rules}


def _alternatives(alternatives: tuple[tuple[Any, ...], ...]) -> Filter | None:
    compiled: list[Filter | None] = []
    for clauses in alternatives:
        parts = [clause_filter(c) if isinstance(c, Clause) else None for c in clauses]
        compiled.append(None if any(p is None for p in parts)
                        else all_of([p for p in parts if p is not None]))
    return any_of(compiled)


def clause_filter(clause: Clause, base: str = "idx") -> Filter | None:
    """Return the filter of one plain clause, or None where the matcher must decide."""
    if clause.code in ("_id", "_lastUpdated"):
        return _resource_field(clause)
    if clause.modifier is Modifier.MISSING:
        return _missing(clause, base)
    if clause.type is ParamType.COMPOSITE:
        return None
    found = any_of([_value(clause, value, base) for value in clause.values])
    if found is None or clause.modifier is not Modifier.NOT:
        return found
    return {"$nor": [found]}


def _missing(clause: Clause, base: str) -> Filter | None:
    table = _TABLES.get(clause.type)
    if table is None:
        return None
    field = f"{base}.{table}.p"
    return {field: {"$ne": clause.code}} if clause.values[0] is True else {field: clause.code}


def _rows(base: str, table: str, row: Filter) -> Filter:
    return {f"{base}.{table}": {"$elemMatch": row}}


def _value(clause: Clause, value: ClauseValue, base: str) -> Filter | None:
    """Return the filter of one value: some row of the clause's parameter matches it."""
    code = clause.code
    if isinstance(value, StringValue):
        return _rows(base, "strings", {"p": code, **_string(clause.modifier, value)})
    if isinstance(value, TokenValue):
        return _token(clause.modifier, code, value, base)
    if isinstance(value, DateValue | NumberValue):
        table = "dates" if isinstance(value, DateValue) else "numbers"
        predicate = range_predicate(value.prefix, value.low, value.high)
        return _rows(base, table, {"p": code, **_range(predicate)})
    if isinstance(value, QuantityValue):
        return _rows(base, "quantities", {"p": code, **_quantity(value)})
    if isinstance(value, ReferenceValue):
        row = _reference(clause.target_type, value)
        return NOTHING if row is None else _rows(base, "references", {"p": code, **row})
    if isinstance(value, UriValue):
        return _rows(base, "uris", {"p": code, "u": _uri(clause.modifier, value)})
    return None


def _starts_with(prefix: str) -> Filter:
    return {"$gte": prefix, "$lt": prefix + _PREFIX_END}


def _string(modifier: Modifier | None, value: StringValue) -> Filter:
    if modifier is Modifier.EXACT:
        return {"e": value.text}
    if modifier is Modifier.CONTAINS:
        return {"f": {"$regex": re.escape(value.folded)}}
    return {"f": _starts_with(value.folded)}


def _token(modifier: Modifier | None, code: str, value: TokenValue, base: str) -> Filter:
    if modifier is Modifier.TEXT:
        return _rows(base, "texts", {"p": code, "t": _starts_with(value.code or "")})
    if modifier in (Modifier.IDENTIFIER, Modifier.OF_TYPE):
        code = f"{code}:{modifier}"
    row: Filter = {"p": code}
    if value.system is not None:
        row["s"] = value.system
    if value.code is not None:
        row["c"] = value.code
    return _rows(base, "tokens", row)


def _bounds(bounds: Sequence[Bound]) -> Filter:
    """The AND of bounds on ``lo``/``hi`` of one row: ``{"lo": {"$gte": a}, "hi": {...}}``."""
    out: Filter = {}
    for bound in bounds:
        out.setdefault(_COLUMNS[bound.column], {})[_OPERATORS[bound.op]] = bound.value
    return out


def _negated(bounds: Sequence[Bound]) -> Filter:
    """Not (the AND of bounds): some bound fails, ``{"$or": [{"lo": {"$lt": a}}, ...]}``."""
    return {"$or": [{_COLUMNS[b.column]: {_NEGATED[b.op]: b.value}} for b in bounds]}


def _range(predicate: RangePredicate) -> Filter:
    """The row conditions of a prefix: alternatives ORed, or (``ne``) their negation."""
    alternatives = predicate.alternatives
    if predicate.negated:
        negations = [_negated(bounds) for bounds in alternatives]
        return negations[0] if len(negations) == 1 else {"$and": negations}
    if len(alternatives) == 1:
        return _bounds(alternatives[0])
    return {"$or": [_bounds(bounds) for bounds in alternatives]}


def _quantity(value: QuantityValue) -> Filter:
    number = value.number
    row = _range(range_predicate(number.prefix, number.low, number.high))
    if value.system is not None:
        row = {"s": value.system, **row}
    if value.code is not None:
        row = {"c": value.code, **row}
    return row


def _reference(target_type: str | None, value: ReferenceValue) -> Filter | None:
    """The row of a reference value; None when ``:[type]`` contradicts the value's type."""
    if value.url is not None:
        row: Filter = {"u": value.url}
    else:
        row = {"i": value.id}
        if value.type is not None:
            row["t"] = value.type
    if target_type is not None:
        if row.get("t", target_type) != target_type:
            return None
        row["t"] = target_type
    return row


def _uri(modifier: Modifier | None, value: UriValue) -> Any:
    if modifier is Modifier.BELOW:
        return _starts_with(value.uri)
    if modifier is Modifier.ABOVE:  # the stored uri is a prefix of the value: one of these
        return {"$in": [value.uri[:end] for end in range(1, len(value.uri) + 1)]}
    return value.uri


def _last_updated(bounds: Sequence[Bound]) -> Filter:
    # The stored instant t stands for [t, t + 1 microsecond): "high op v" is "t op v - 1",
    # and instants of one fixed width compare as text.
    out: Filter = {}
    for b in bounds:
        value = b.value if b.column == "low" else b.value - 1
        out.setdefault("lastUpdated", {})[_OPERATORS[b.op]] = instant_bound(value)
    return out


def _resource_field(clause: Clause) -> Filter | None:
    """``_id`` and ``_lastUpdated`` are fields of the resource document, not index rows."""
    if clause.modifier is Modifier.MISSING:
        return NOTHING if clause.values[0] is True else {}
    if clause.code == "_id":
        ids = [v.code for v in clause.values if isinstance(v, TokenValue)]
        return {"id": {"$nin" if clause.modifier is Modifier.NOT else "$in": ids}}
    found: list[Filter | None] = []
    for value in clause.values:
        if isinstance(value, DateValue):
            predicate = range_predicate(value.prefix, value.low, value.high)
            matching = any_of([_last_updated(bounds) for bounds in predicate.alternatives])
            found.append({"$nor": [matching]} if predicate.negated and matching else matching)
    return any_of(found)


def _by_type(targets: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for kind, id in targets:
        grouped.setdefault(kind, []).append(id)
    return grouped


def chain_filter(code: str, targets: Sequence[tuple[str, str]]) -> Filter:
    """Return "``code`` refers to one of ``targets`` (type, id)", one row per target type."""
    return any_of([
        _rows("idx", "references", {"p": code, "t": kind, "i": {"$in": ids}})
        for kind, ids in _by_type(targets).items()
    ]) or NOTHING  # fmt: skip


def has_filter(targets: Sequence[tuple[str, str]]) -> Filter:
    """Return "the resource is one of ``targets`` (type, id)" by ``_id`` (its own index)."""
    return {"_id": {"$in": [resource_key(kind, id) for kind, id in dict.fromkeys(targets)]}}


def include_filter(targets: Sequence[tuple[str, str]]) -> Filter:
    """Return the live resources ``targets`` (type, id) that ``_include`` adds, by ``_id``."""
    return all_of([has_filter(targets), {"deleted": False}])


def revinclude_filter(
    source_type: str, codes: Sequence[str], targets: Sequence[tuple[str, str]]
) -> Filter:
    """Return the live ``source_type`` resources whose ``codes`` refer to one of ``targets``."""
    refers = any_of([
        _rows("idx", "references", {"p": {"$in": list(codes)}, "t": kind, "i": {"$in": ids}})
        for kind, ids in _by_type(targets).items()
    ]) or NOTHING  # fmt: skip
    return all_of([{"type": source_type}, {"deleted": False}, refers])

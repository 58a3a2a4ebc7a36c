"""The in-memory matcher: whether a resource's ``SearchIndex`` satisfies a ``SearchQuery``.

This is the executable statement of search semantics (clauses ANDed, values ORed), used for
conditional references inside a transaction and for subscription criteria; the SQL compiler
must agree with it (a property test checks that). Chained parameters and ``_has`` need other
resources: pass an ``IndexSource`` to follow references, or ``NotSupported`` is raised.
Result shaping (``_sort``, ``_count``, ``_include``...) does not affect matching.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from fhir_server.errors import NotSupported
from fhir_server.search.consent import consent_allows
from fhir_server.search.dates import date_range
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import (
    AnyClause,
    ChainClause,
    Clause,
    ClauseValue,
    CompositeValue,
    DateValue,
    Grant,
    HasClause,
    Modifier,
    NumberValue,
    ParamType,
    QuantityValue,
    ReferenceValue,
    SearchIndex,
    SearchQuery,
    StringValue,
    TokenValue,
    UriValue,
    Visibility,
)
from fhir_server.search.ranges import range_predicate

__all__ = ["IndexSource", "matches", "visible"]


class IndexSource(Protocol):
    """Access to the indexes of other resources, for chains and ``_has``."""

    def get(self, resource_type: str, id: str) -> SearchIndex | None:
        """Return the index of the current version of a resource, or None."""
        ...

    def referring(
        self, resource_type: str, code: str, target: SearchIndex
    ) -> Iterable[SearchIndex]:
        """Return the indexes of ``resource_type`` resources whose ``code`` refers to target."""
        ...


def matches(query: SearchQuery, index: SearchIndex, source: IndexSource | None = None) -> bool:
    """Return whether the resource indexed as ``index`` matches every clause of ``query``."""
    if query.resource_type is not None and query.resource_type != index.resource_type:
        return False
    if query.types and index.resource_type not in query.types:
        return False
    if query.compartment is not None and query.compartment[1] not in index.compartments:
        return False
    if query.visibility is not None:
        if not visible(query.visibility, index):
            return False
        source = _VisibleSource(source, query.visibility) if source is not None else None
    return all(clause_matches(clause, index, source) for clause in query.clauses)


def visible(visibility: Visibility, index: SearchIndex, grants: Iterable[Grant] = ()) -> bool:
    """Return whether the caller may see the resource indexed as ``index`` (the rule is
    ``Visibility``'s; the stores compile the same rule into their queries).

    ``grants``: the Consent grants of the patients in whose compartment the resource is,
    for a ``consent`` rule (without them, and without grants resolved in the rule, only
    what the caller may see without a Consent is visible).
    """
    kind = index.resource_type
    if visibility.consent is not None and not consent_allows(
            visibility.consent, index, grants, time.time_ns() // 1000):
        return False
    if not visibility.readable(kind):
        return False
    if visibility.bound(kind):
        patient = visibility.patient
        if kind in compartment_types():
            if patient not in index.compartments:
                return False
        elif any(other != patient for other in index.compartments):
            return False
    alternatives = visibility.restricted(kind)
    return alternatives is None or any(
        all(clause_matches(c, index, None) for c in clauses) for clauses in alternatives)


class _VisibleSource:
    """An ``IndexSource`` that yields only what the caller may see (chain targets, ``_has``
    sources), as the stores' queries do."""

    def __init__(self, source: IndexSource, visibility: Visibility) -> None:
        self._source = source
        self._visibility = visibility

    def get(self, resource_type: str, id: str) -> SearchIndex | None:
        found = self._source.get(resource_type, id)
        return found if found is not None and visible(self._visibility, found) else None

    def referring(
        self, resource_type: str, code: str, target: SearchIndex
    ) -> Iterable[SearchIndex]:
        return [other for other in self._source.referring(resource_type, code, target)
                if visible(self._visibility, other)]


def clause_matches(clause: AnyClause, index: SearchIndex, source: IndexSource | None) -> bool:
    """Return whether one clause (plain, chained or ``_has``) holds for ``index``."""
    if isinstance(clause, ChainClause):
        return _chain_matches(clause, index, _need(source))
    if isinstance(clause, HasClause):
        return _has_matches(clause, index, _need(source))
    if clause.modifier is Modifier.MISSING:
        present = clause.code in ("_id", "_lastUpdated") or clause.code in index.codes()
        return (not present) == clause.values[0]
    if clause.code == "_id":
        return _id_matches(clause, index)
    if clause.code == "_lastUpdated":
        return _last_updated_matches(clause, index)
    found = any(value_matches(clause, value, clause.code, index) for value in clause.values)
    return not found if clause.modifier is Modifier.NOT else found


def _need(source: IndexSource | None) -> IndexSource:
    if source is None:
        raise NotSupported(
            "Chained parameters and _has cannot be evaluated here",
            message_id="MSG_SEARCH_CHAIN_UNSUPPORTED",
        )
    return source


def _chain_matches(clause: ChainClause, index: SearchIndex, source: IndexSource) -> bool:
    for _, kind, ident, _ in (r for r in index.references if r[0] == clause.code):
        if kind not in clause.target_types:
            continue
        target = source.get(kind, ident)
        if target is not None and clause_matches(clause.inner, target, source):
            return True
    return False


def _has_matches(clause: HasClause, index: SearchIndex, source: IndexSource) -> bool:
    referring = source.referring(clause.resource_type, clause.reference, index)
    return any(clause_matches(clause.inner, other, source) for other in referring)


def _id_matches(clause: Clause, index: SearchIndex) -> bool:
    found = any(isinstance(v, TokenValue) and v.code == index.id for v in clause.values)
    return not found if clause.modifier is Modifier.NOT else found


def _last_updated_matches(clause: Clause, index: SearchIndex) -> bool:
    if index.last_updated is None:
        return False
    low, high = date_range(index.last_updated)
    return any(
        isinstance(v, DateValue) and range_predicate(v.prefix, v.low, v.high).holds(low, high)
        for v in clause.values
    )


def value_matches(clause: Clause, value: ClauseValue, code: str, index: SearchIndex) -> bool:
    """Return whether one value of ``clause`` matches a row of ``code`` in ``index``."""
    if isinstance(value, StringValue):
        return _string_matches(clause.modifier, value, code, index)
    if isinstance(value, TokenValue):
        return _token_matches(clause.modifier, value, code, index)
    if isinstance(value, DateValue):
        predicate = range_predicate(value.prefix, value.low, value.high)
        return any(predicate.holds(lo, hi) for c, lo, hi in index.dates if c == code)
    if isinstance(value, NumberValue):
        predicate = range_predicate(value.prefix, value.low, value.high)
        return any(predicate.holds(lo, hi) for c, lo, hi in index.numbers if c == code)
    if isinstance(value, QuantityValue):
        return _quantity_matches(value, code, index)
    if isinstance(value, ReferenceValue):
        return _reference_matches(clause, value, code, index)
    if isinstance(value, UriValue):
        return _uri_matches(clause.modifier, value, code, index)
    if isinstance(value, CompositeValue):
        return _composite_matches(value, code, index)
    return False


def _string_matches(
    modifier: Modifier | None, value: StringValue, code: str, index: SearchIndex
) -> bool:
    rows = [row for row in index.strings if row[0] == code]
    if modifier is Modifier.EXACT:
        return any(text == value.text for _, _, text in rows)
    if modifier is Modifier.CONTAINS:
        return any(value.folded in folded for _, folded, _ in rows)
    return any(folded.startswith(value.folded) for _, folded, _ in rows)


def _token_matches(
    modifier: Modifier | None, value: TokenValue, code: str, index: SearchIndex
) -> bool:
    if modifier is Modifier.TEXT:
        return any(c == code and text.startswith(value.code or "") for c, text in index.texts)
    if modifier in (Modifier.IDENTIFIER, Modifier.OF_TYPE):
        code = f"{code}:{modifier}"
    return any(
        c == code
        and (value.system is None or system == value.system)
        and (value.code is None or token == value.code)
        for c, system, token in index.tokens
    )


def _quantity_matches(value: QuantityValue, code: str, index: SearchIndex) -> bool:
    predicate = range_predicate(value.number.prefix, value.number.low, value.number.high)
    return any(
        c == code
        and (value.system is None or system == value.system)
        and (value.code is None or unit == value.code)
        and predicate.holds(low, high)
        for c, system, unit, low, high in index.quantities
    )


def _reference_matches(
    clause: Clause, value: ReferenceValue, code: str, index: SearchIndex
) -> bool:
    for c, kind, ident, url in index.references:
        if c != code or (clause.target_type is not None and kind != clause.target_type):
            continue
        if value.url is not None:
            if url == value.url:
                return True
        elif ident == value.id and (value.type is None or kind == value.type):
            return True
    return False


def _uri_matches(modifier: Modifier | None, value: UriValue, code: str, index: SearchIndex) -> bool:
    uris = [uri for c, uri in index.uris if c == code]
    if modifier is Modifier.BELOW:
        return any(uri.startswith(value.uri) for uri in uris)
    if modifier is Modifier.ABOVE:
        return any(value.uri.startswith(uri) for uri in uris)
    return value.uri in uris


def _composite_matches(value: CompositeValue, code: str, index: SearchIndex) -> bool:
    plain = Clause(code, ParamType.COMPOSITE, ())  # component values carry their own type
    if value.codes is not None:  # a composite over the whole resource
        return all(
            value_matches(plain, part, part_code, index)
            for part, part_code in zip(value.parts, value.codes, strict=True)
        )
    return any(
        c == code
        and all(
            value_matches(plain, part, str(position), element)
            for position, part in enumerate(value.parts)
        )
        for c, element in index.composites
    )

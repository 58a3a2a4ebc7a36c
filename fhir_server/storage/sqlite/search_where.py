"""Compile search clauses into SQL conditions over the search index tables.

Every condition is SQL text made only of constants of this module and ``?`` placeholders, plus
the list of bound values: user input never becomes SQL text. Conditions are phrased on the
resources row alias they are given (``r``, or ``t1``/``s2``... inside chains and ``_has``), so
chains and reverse chains nest to any depth. The meaning of each value mirrors
``fhir_server.search.matching`` (the property test holds the two together).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import TypeAlias

from fhir_server.search.dates import instant_bound
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import (
    AnyClause,
    ChainClause,
    Clause,
    ClauseValue,
    CompositeValue,
    DateValue,
    HasClause,
    Modifier,
    NumberValue,
    ParamType,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    Visibility,
)
from fhir_server.search.normalize import absolute_target_id
from fhir_server.search.ranges import RangePredicate, range_predicate
from fhir_server.search.registry import Alias, SearchParameterRegistry
from fhir_server.storage.sqlite.consent_sql import consent_condition
from fhir_server.storage.sqlite.search_tables import TABLES, param_key, system_key

__all__ = [
    "HEAD_CHARS", "Condition", "Unions", "WhereCompiler", "as_unions", "head_scan",
    "last_updated_condition", "lead_clause", "param_keys", "range_condition",
]  # fmt: skip

Condition: TypeAlias = tuple[str, list[object]]
"""SQL text with ``?`` placeholders, and the values to bind to them in order."""


class Unions(dict[str, tuple[str, ...]]):
    """Codes whose rows the store does not keep, with the codes whose rows hold their values.

    Plain unions (``combo-code``: ``code`` and ``component-code``,
    ``SearchParameterRegistry.unions``) are searched through their members' rows; composite
    unions (``combo-code-value-quantity``: ``code-value-quantity`` and
    ``component-code-value-quantity``, ``SearchParameterRegistry.composite_unions``) through
    their member composites' elements. ``over_resource`` gives, for a member composite over
    the whole resource (``code-value-quantity``, which has no elements), its component codes
    and the table of each: the resource is then its one element.
    """

    def __init__(self, members: Mapping[str, tuple[str, ...]] | None = None,
                 over_resource: Mapping[str, tuple[tuple[str, str], ...]] | None = None,
                 aliases: Mapping[str, Mapping[str, Alias]] | None = None,
                 holders: Mapping[str, tuple[str, ...]] | None = None) -> None:
        super().__init__(members or {})
        self.over_resource: dict[str, tuple[tuple[str, str], ...]] = dict(over_resource or {})
        #: Per type, the codes searched through another code's rows of that type
        #: (``SearchParameterRegistry.aliases``), and for each code aliased in some type,
        #: every type that has it.
        self.aliases: dict[str, dict[str, Alias]] = {
            kind: dict(codes) for kind, codes in (aliases or {}).items()}
        self.holders: dict[str, tuple[str, ...]] = dict(holders or {})
        self._skips: dict[str, frozenset[str]] = {}

    def skipped(self, resource_type: str) -> frozenset[str]:
        """The codes whose rows a resource of ``resource_type`` does not store: the unions,
        and the type's aliases (a duplicate's ``:identifier`` and ``:of-type`` rows too; a
        restriction's are its own)."""
        found = self._skips.get(resource_type)
        if found is None:
            codes = set(self)
            for code, alias in self.aliases.get(resource_type, {}).items():
                codes.add(code)
                if alias.target is None:
                    codes |= {f"{code}:identifier", f"{code}:of-type"}
            found = self._skips[resource_type] = frozenset(codes)
        return found

    def alias(self, resource_type: str, code: str) -> Alias | None:
        """The alias of ``code`` (``code:identifier`` and the like too) in ``resource_type``."""
        base, _, variant = code.partition(":")
        alias = self.aliases.get(resource_type, {}).get(base)
        if alias is None or (variant and alias.target is not None):
            return None
        return alias

    def by_alias(
        self, code: str, types: tuple[str, ...] | None
    ) -> list[tuple[tuple[str, ...] | None, Alias | None]]:
        """``types`` (every type that has ``code`` when None or empty) grouped by the alias
        of ``code`` each gives; one group, ``types`` as given, for a code aliased nowhere."""
        holders = self.holders.get(code.partition(":")[0])
        if holders is None:
            return [(types, None)]
        groups: dict[Alias | None, list[str]] = {}
        for kind in types or holders:
            groups.setdefault(self.alias(kind, code), []).append(kind)
        if len(groups) == 1 and types:
            return [(types, next(iter(groups)))]
        return [(tuple(kinds), alias) for alias, kinds in groups.items()]

    @classmethod
    def of(cls, registry: SearchParameterRegistry) -> Unions:
        """The unions a store of ``registry``'s parameters keeps no rows of."""
        members = dict(registry.unions())
        over_resource: dict[str, tuple[tuple[str, str], ...]] = {}
        for code, composites in registry.composite_unions().items():
            found = {member: _over_resource(registry, member) for member in composites}
            if all(parts != () for parts in found.values()):
                members[code] = composites
                over_resource.update({m: p for m, p in found.items() if p is not None})
        aliases = registry.aliases()
        codes = {code for by_code in aliases.values() for code in by_code}
        holders = {code: tuple(kind for kind in registry.resource_types()
                               if code in registry.for_type(kind)) for code in codes}
        return cls(members, over_resource, aliases, holders)


def as_unions(unions: Mapping[str, tuple[str, ...]] | None) -> Unions:
    """``unions`` as ``Unions`` (a plain mapping of union codes: no aliases)."""
    if isinstance(unions, Unions):
        return unions
    return Unions(unions)


def _over_resource(
    registry: SearchParameterRegistry, code: str
) -> tuple[tuple[str, str], ...] | None:
    """The components (code, table) of ``code`` if it is over the whole resource in every type
    that has it, None if in none, ``()`` if the types disagree (then not a union)."""
    answers: set[tuple[tuple[str, str], ...] | None] = set()
    for resource_type in registry.resource_types():
        if registry.get(resource_type, code) is None:
            continue
        codes = registry.resource_composite(resource_type, code)
        if codes is None:
            answers.add(None)
            continue
        parts = []
        for part in codes:
            definition = registry.get(resource_type, part)
            assert definition is not None  # resource_composite checked it
            parts.append((part, TABLES[definition.type]))
        answers.add(tuple(parts))
    return next(iter(answers)) if len(answers) == 1 else ()


def param_keys(code: str, unions: Unions, alias: Alias | None = None) -> Condition:
    """``param = ?`` for the rows of ``code`` (``code:identifier`` and ``code:of-type``
    too); for a union (``combo-code``), ``param IN (...)`` over its members' rows; for an
    ``alias`` of ``code`` (``Unions.alias``), the member's rows, of its target type only
    when it has one (a reference table's ``type``)."""
    base, colon, variant = code.partition(":")
    if alias is not None:
        key = param_key(f"{alias.member}{colon}{variant}")
        if alias.target is None:
            return "param = ?", [key]
        return "param = ? AND type = ?", [key, alias.target]
    members = unions.get(base)
    if not members:
        return "param = ?", [param_key(code)]
    keys: list[object] = [param_key(f"{member}{colon}{variant}") for member in members]
    return f"param IN ({', '.join('?' for _ in keys)})", keys

_PREFIX_END = "\U0010ffff"  # the greatest code point: "starts with p" is p <= x < p + this
#: The characters of a folded string by which ``search_string_head`` groups its rows, each
#: group in ``rid`` order (``head_scan``; ``search_tables``).
HEAD_CHARS = 2
_VALUE_TABLES: dict[type, str] = {
    StringValue: "search_string",
    TokenValue: "search_token",
    DateValue: "search_date",
    NumberValue: "search_number",
    QuantityValue: "search_quantity",
    ReferenceValue: "search_reference",
    UriValue: "search_uri",
}


class WhereCompiler:
    """Compiles clauses; holds the counter that names nested aliases uniquely, and what the
    caller may see (``visibility``), which every chain target and ``_has`` source meets."""

    def __init__(self, unions: Unions | None = None, visibility: Visibility | None = None,
                 probes_only: bool = False, bound: int | None = None) -> None:
        self._aliases = itertools.count(1)
        self._unions: Unions = as_unions(unions)
        self.visibility = visibility
        #: Phrase every clause as a probe of the row at hand (``EXISTS``), none as a list to
        #: drive from: for a walk of the resources in ``rid`` order that stops at a page.
        self.probes_only = probes_only
        #: Cut every list at this many rows (``lead``: an estimate, not an answer).
        self.bound = bound
        #: The types a resources row alias may have (None: any), for the aliases of codes
        #: (``Unions.by_alias``): set for ``r`` by the caller, for chains and ``_has`` here.
        self.types: dict[str, tuple[str, ...] | None] = {}

    @property
    def unions(self) -> Unions:
        """The codes whose rows the store does not keep (unions and aliases)."""
        return self._unions

    def clauses(self, clauses: tuple[AnyClause, ...], alias: str) -> Condition:
        """Return the AND of ``clauses`` on the resources row ``alias``.

        The likely most selective clause is phrased ``rid IN (...)`` so that SQLite drives
        the query from its index; the others are ``EXISTS`` probes by ``rid`` (the primary
        key), which avoids materializing large lists such as every ``birthdate`` row.
        """
        ordered = sorted(clauses, key=_selectivity_rank)
        parts = [self.clause(c, alias, probe=n > 0 or self.probes_only)
                 for n, c in enumerate(ordered)]
        return _join(" AND ", parts, "1")

    def lead(self, clauses: tuple[AnyClause, ...], alias: str, bound: int) -> Condition | None:
        """Return a ``SELECT`` listing about the rows that ``clauses(clauses, alias)`` drives
        from (its first clause's list), or None when that clause is not a list (a probe, a
        negation, ``_id``). Counting its first rows (``LIMIT``) streams from the index,
        whereas ``rid IN (list)`` builds the whole list before the first row; lists nested in
        it (``_has``, chains) are cut at ``bound`` rows, so the count is an estimate."""
        if not clauses or self.probes_only:
            return None
        first = lead_clause(clauses)
        if isinstance(first, (HasClause, ChainClause)):
            # The resources the inner clause lists (a _has's sources, a chain's targets),
            # without joining each to its references: a cheaper count, of about as many.
            listed = self.lead((first.inner,), f"{alias}_", bound)
            if listed is not None:
                return listed
        cut = WhereCompiler(self._unions, self.visibility, bound=bound)
        cut.types = self.types
        sql, params = cut.clause(first, alias)
        for head in (f"{alias}.rid IN (", f"({alias}.type, {alias}.id) IN ("):
            inner = sql[len(head):-1]
            if sql.startswith(head) and sql.endswith(")") and _balanced(inner):
                return inner, params
        return None

    def clause(self, clause: AnyClause, alias: str, probe: bool = False) -> Condition:
        """Return the condition of one clause on the resources row ``alias``.

        A code that is an alias (``Unions.aliases``) in some of the row's possible types and
        not in others, or of different members (or in some type, when the row's types are
        not known), is asked per group of types, each part with its types:
        ``(r.type IN (...) AND ...) OR ...``.
        """
        code = _lookup_code(clause)
        groups = (self._unions.by_alias(code, self.types.get(alias)) if code is not None
                  else [(None, None)])
        unknown = not self.types.get(alias) and groups[0][1] is not None
        if len(groups) > 1 or unknown:  # a row of any type: each group guarded by its types
            saved, parts = self.types.get(alias), []
            try:
                for kinds, _ in groups:
                    self.types[alias] = kinds
                    sql, params = self.clause(clause, alias, probe)
                    where, kinds_params = _in(f"{alias}.type", list(kinds or ()))
                    parts.append((f"{where} AND ({sql})", [*kinds_params, *params]))
            finally:
                self.types[alias] = saved
            return _join(" OR ", parts, "0")
        return self._clause(clause, alias, probe, groups[0][1])

    def _clause(
        self, clause: AnyClause, alias: str, probe: bool, aliased: Alias | None
    ) -> Condition:
        if isinstance(clause, ChainClause):
            return self.chain(clause, alias, probe, aliased)
        if isinstance(clause, HasClause):
            return self.has(clause, alias, probe)
        if clause.code in ("_id", "_lastUpdated"):
            return _resource_column(clause, alias)
        if clause.type is ParamType.COMPOSITE and clause.code in self._unions:
            return self.composite_union(clause, alias)
        if clause.modifier is Modifier.MISSING:
            table = TABLES[clause.type]
            missing = clause.values[0] is True
            keys = param_keys(clause.code, self._unions, aliased)
            # The reference index leads with the target id, which :missing does not name:
            # probe each resource's own rows (primary key) instead of scanning the index.
            probe = probe or clause.type is ParamType.REFERENCE
            return _rows_exist(alias, table, ("1", []), missing, probe, keys)
        if clause.type is ParamType.COMPOSITE:
            parts = [_composite(clause.code, value, alias) for value in clause.values]
            return _join(" OR ", parts, "0")
        table, code = _table_and_code(clause)
        if clause.type is ParamType.TOKEN and clause.modifier in (None, Modifier.NOT):
            inner = _token_set(clause.values)
        else:
            inner = _join(" OR ", [_value(clause, value) for value in clause.values], "0")
        keys = param_keys(code, self._unions, aliased)
        found = _rows_exist(alias, table, inner, clause.modifier is Modifier.NOT, probe, keys)
        if self.bound is not None and not probe and clause.modifier is not Modifier.NOT:
            return f"{found[0][:-1]} LIMIT {int(self.bound)})", found[1]
        return found

    def composite_union(self, clause: Clause, alias: str) -> Condition:
        """A composite union (``Unions``) holds where one of its member composites does: on
        a member's elements, or, for a member over the whole resource, on the resource's
        rows of its components. ``:missing=false``: some member has an element."""
        members = self._unions[clause.code]
        if clause.modifier is Modifier.MISSING:
            present = _join(" OR ", [self._element_exists(m, alias) for m in members], "0")
            return (f"NOT ({present[0]})", present[1]) if clause.values[0] else present
        parts = []
        for value in clause.values:
            if not isinstance(value, CompositeValue):
                continue
            for member in members:
                over = self._unions.over_resource.get(member)
                codes = None if over is None else tuple(code for code, _ in over)
                parts.append(_composite(member, CompositeValue(value.parts, codes), alias))
        return _join(" OR ", parts, "0")

    def _element_exists(self, member: str, alias: str) -> Condition:
        over = self._unions.over_resource.get(member)
        if over is None:
            return (f"EXISTS (SELECT 1 FROM search_composite WHERE rid = {alias}.rid "
                    "AND param = ?)", [param_key(member)])
        return _join(" AND ", [
            _rows_exist(alias, table, ("1", []), False, True, param_keys(code, self._unions))
            for code, table in over], "1")

    def chain(self, clause: ChainClause, alias: str, probe: bool = False,
              aliased: Alias | None = None) -> Condition:
        """``code.inner``: a reference to a live target of the given types where inner holds
        (as a probe: this row's references, by its primary key). ``aliased``: ``code``'s
        alias in the row's types, whose member's rows are read instead."""
        target = f"t{next(self._aliases)}"
        target_types = clause.target_types
        if aliased is not None and aliased.target is not None:
            target_types = tuple(kind for kind in target_types if kind == aliased.target)
        self.types[target] = target_types
        inner_sql, inner_params = self.clause(clause.inner, target, probe=probe)
        known = target_types[0] if len(target_types) == 1 else None
        seen_sql, seen_params = self.visible(target, known)
        types = ", ".join("?" for _ in target_types) or "NULL"
        head = (f"EXISTS (SELECT 1 FROM search_reference ref CROSS JOIN resources {target} "
                f"ON {target}.type = ref.type AND {target}.id = ref.id WHERE ref.rid = "
                f"{alias}.rid AND " if probe else
                f"{alias}.rid IN (SELECT ref.rid FROM search_reference ref JOIN resources "
                f"{target} ON {target}.type = ref.type AND {target}.id = ref.id WHERE ")
        sql = (
            f"{head}ref.param = ? AND ref.type IN ({types}) AND {target}.deleted = 0 "
            f"AND {inner_sql} AND ({seen_sql}))"
        )
        code = clause.code if aliased is None else aliased.member
        return sql, [param_key(code), *target_types, *inner_params, *seen_params]

    def has(self, clause: HasClause, alias: str, probe: bool = False) -> Condition:
        """``_has:Type:ref:inner``: a live ``Type`` resource referring here where inner holds
        (as a probe: the references to this row, by the target index)."""
        source = f"s{next(self._aliases)}"
        self.types[source] = (clause.resource_type,)
        aliased = self._unions.alias(clause.resource_type, clause.reference)
        inner_sql, inner_params = self.clause(clause.inner, source, probe=probe)
        seen_sql, seen_params = self.visible(source, clause.resource_type)
        head = (f"EXISTS (SELECT 1 FROM search_reference ref CROSS JOIN resources {source} "
                f"ON {source}.rid = ref.rid WHERE ref.id = {alias}.id AND ref.type = "
                f"{alias}.type AND " if probe else
                f"({alias}.type, {alias}.id) IN (SELECT ref.type, ref.id FROM search_reference "
                f"ref JOIN resources {source} ON {source}.rid = ref.rid WHERE ")
        reference, kind = clause.reference, ""
        if aliased is not None:
            reference = aliased.member
            if aliased.target is not None:
                kind = "ref.type = ? AND "
        sql = (
            f"{head}ref.param = ? AND {kind}{source}.type = ? AND {source}.deleted = 0 AND "
            f"{inner_sql} AND ({seen_sql}))"
        )
        targets = [aliased.target] if aliased is not None and aliased.target else []
        return sql, [param_key(reference), *targets, clause.resource_type, *inner_params,
                     *seen_params]

    def visible(self, alias: str, kind: str | None) -> Condition:
        """Return "the caller may see the resources row ``alias``" (of type ``kind``, or of
        any type when None): ``Visibility`` as SQL (the rule is stated there)."""
        seen = self.visibility
        if seen is None or seen.everything:
            return "1", []
        if kind is not None:
            return self._visible_of_type(seen, alias, kind)
        parts: list[Condition] = []
        if seen.types is not None:
            parts.append(_in(f"{alias}.type", sorted(seen.types)))
        if seen.patient is not None:
            parts.append(_compartment_rule(alias, seen))
        if seen.consent is not None:
            parts.append(consent_condition(alias, seen.consent))
        own_entries = sorted(kind for kind, _ in seen.restrictions if kind != "*")
        for restricted, alternatives in seen.restrictions:
            exempt: Condition = (_in(f"{alias}.type", own_entries) if restricted == "*"
                                 else (f"{alias}.type <> ?", [restricted]))
            kinds = None if restricted == "*" else (restricted,)
            parts.append(_join(" OR ", [exempt, self._alternatives(alternatives, alias, kinds)],
                               "1"))
        return _join(" AND ", parts, "1")

    def _visible_of_type(self, seen: Visibility, alias: str, kind: str) -> Condition:
        if not seen.readable(kind):
            return "0", []
        parts: list[Condition] = []
        if seen.bound(kind):
            parts.append(_in_compartment(alias, kind in compartment_types(), str(seen.patient)))
        if seen.consent is not None and kind not in seen.consent.open_types:
            parts.append(consent_condition(alias, seen.consent))
        alternatives = seen.restricted(kind)
        if alternatives is not None:
            parts.append(self._alternatives(alternatives, alias, (kind,)))
        return _join(" AND ", parts, "1")

    def _alternatives(self, alternatives: tuple[tuple[AnyClause, ...], ...],
                      alias: str, kinds: tuple[str, ...] | None) -> Condition:
        """The restrictions of the types ``kinds`` (None: of any type) on the row ``alias``."""
        saved = self.types.get(alias)
        self.types[alias] = kinds
        try:
            return _join(" OR ", [self.clauses(clauses, alias) for clauses in alternatives],
                         "0")
        finally:
            self.types[alias] = saved


def lead_clause(clauses: tuple[AnyClause, ...]) -> AnyClause:
    """The clause a search drives from (``WhereCompiler.lead``): the likely most selective."""
    return min(clauses, key=_selectivity_rank)


def _lookup_code(clause: AnyClause) -> str | None:
    """The code whose rows a clause reads on its own row (for ``Unions.by_alias``), or None."""
    if isinstance(clause, ChainClause):
        return clause.code
    if isinstance(clause, HasClause) or clause.type is ParamType.COMPOSITE:
        return None
    if clause.modifier is Modifier.MISSING:
        return clause.code
    return _table_and_code(clause)[1]


def _balanced(sql: str) -> bool:
    """Whether every parenthesis of ``sql`` closes within it (no user text is in SQL)."""
    depth = 0
    for char in sql:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _in(column: str, values: list[str]) -> Condition:
    return f"{column} IN ({', '.join('?' for _ in values) or 'NULL'})", [*values]


def _in_compartment(alias: str, patient_data: bool, patient: str) -> Condition:
    """A type of the Patient compartment: in this patient's; any other type: in nobody
    else's (a Binary about another patient)."""
    if patient_data:
        return f"{alias}.rid IN (SELECT rid FROM search_compartment WHERE patient = ?)", [patient]
    return (f"NOT EXISTS (SELECT 1 FROM search_compartment c WHERE c.rid = {alias}.rid "
            f"AND c.patient <> ?)", [patient])  # fmt: skip


def _compartment_rule(alias: str, seen: Visibility) -> Condition:
    """``_in_compartment`` for a row of any type; ``unbound`` types are exempt."""
    patient, types = str(seen.patient), sorted(compartment_types())
    own = _in_compartment(alias, True, patient)
    nobody_else = _in_compartment(alias, False, patient)
    type_in, type_params = _in(f"{alias}.type", types)
    rules = [(f"{type_in} AND {own[0]}", [*type_params, *own[1]]),
             (f"NOT {type_in} AND {nobody_else[0]}", [*type_params, *nobody_else[1]])]
    if seen.unbound:
        rules.insert(0, _in(f"{alias}.type", sorted(seen.unbound)))
    return _join(" OR ", rules, "0")


_RANKS: dict[ParamType, int] = {
    ParamType.TOKEN: 1,
    ParamType.REFERENCE: 1,
    ParamType.URI: 2,
    ParamType.STRING: 3,
    ParamType.COMPOSITE: 4,
    ParamType.QUANTITY: 5,
    ParamType.NUMBER: 5,
    ParamType.DATE: 6,
}


def _selectivity_rank(clause: AnyClause) -> int:
    """Order clauses by how few rows they usually select (a heuristic, without statistics)."""
    if not isinstance(clause, Clause):
        return 7
    if clause.code == "_id":
        return 0
    if clause.modifier in (Modifier.MISSING, Modifier.NOT, Modifier.CONTAINS, Modifier.TEXT):
        return 8
    return 7 if clause.code == "_lastUpdated" else _RANKS.get(clause.type, 7)


def _rows_exist(
    alias: str, table: str, condition: Condition, negate: bool, probe: bool, keys: Condition
) -> Condition:
    """Return "``alias`` has (or, negated, has no) rows of ``keys`` meeting ``condition``".

    A negation is always a probe: as a list it would hold every row of the parameter.
    """
    not_ = "NOT " if negate else ""
    if probe or negate:
        sql = (f"{not_}EXISTS (SELECT 1 FROM {table} WHERE rid = {alias}.rid AND {keys[0]} "
               f"AND ({condition[0]}))")  # fmt: skip
    else:
        sql = (f"{alias}.rid {not_}IN (SELECT rid FROM {table} WHERE {keys[0]} "
               f"AND ({condition[0]}))")  # fmt: skip
    return sql, [*keys[1], *condition[1]]


#: SQLite parses ``a OR b OR c...`` as a chain as deep as it is long, and refuses an
#: expression deeper than 1,000: longer lists are joined in parenthesized groups of this many.
_GROUP = 64


def _join(operator: str, parts: list[Condition], empty: str) -> Condition:
    if not parts:
        return empty, []
    if len(parts) > _GROUP:
        parts = [_join(operator, parts[i:i + _GROUP], empty)
                 for i in range(0, len(parts), _GROUP)]
        return _join(operator, parts, empty)
    sql = operator.join(f"({text})" for text, _ in parts)
    return sql, [value for _, values in parts for value in values]


def _table_and_code(clause: Clause) -> tuple[str, str]:
    if clause.modifier is Modifier.TEXT:
        return "search_text", clause.code
    if clause.modifier in (Modifier.IDENTIFIER, Modifier.OF_TYPE):
        return "search_token", f"{clause.code}:{clause.modifier}"
    return TABLES[clause.type], clause.code


def _value(clause: Clause, value: ClauseValue) -> Condition:
    """Return the condition on one table row for one value (the row's param is checked)."""
    if isinstance(value, StringValue):
        return _string(clause.modifier, value)
    if isinstance(value, TokenValue):
        return _token(clause.modifier, value)
    if isinstance(value, DateValue):
        return range_condition(range_predicate(value.prefix, value.low, value.high))
    if isinstance(value, NumberValue):
        return range_condition(range_predicate(value.prefix, value.low, value.high))
    if isinstance(value, QuantityValue):
        return _quantity(value)
    if isinstance(value, ReferenceValue):
        return _reference(clause.target_type, value)
    if isinstance(value, UriValue):
        return _uri(clause.modifier, value)
    return "0", []


def head_scan(clause: AnyClause, unions: Unions, types: tuple[str, ...] | None
              ) -> tuple[Condition, Condition] | None:
    """The rows of ``search_string h`` that a starts-with clause of one value of at least
    ``HEAD_CHARS`` characters matches, one per resource and in ``rid`` order, read from
    ``search_string_head`` (its rows of the value's first characters, in ``rid`` order, the
    rest of the value tested on each row); and a ``SELECT`` of the rows of that head, whose
    number the plan weighs. None for any other clause (other modifiers, several values, a
    union, an alias in some of ``types`` only, a shorter value).

    A resource with several matching rows (a Patient's family name and whole name) is read
    at its first, in ``(folded, exact)`` order: the others are skipped by a probe of the
    resource's own rows by its primary key. The value's range is written ``+h.folded`` so
    that SQLite does not read it from the value index (``(param, folded)``, a range of rows
    in ``folded`` order, then sorted by ``rid``: every match, not a page).
    """
    if (not isinstance(clause, Clause) or clause.type is not ParamType.STRING
            or clause.modifier is not None or len(clause.values) != 1):
        return None
    value = clause.values[0]
    if not isinstance(value, StringValue) or len(value.folded) < HEAD_CHARS:
        return None
    groups = unions.by_alias(clause.code, types)
    if len(groups) != 1 or (not groups[0][0] and groups[0][1] is not None):
        return None
    keys = param_keys(clause.code, unions, groups[0][1])
    if keys[0] != "param = ?":
        return None
    key, head = keys[1][0], value.folded[:HEAD_CHARS]
    rows = (f"h.param = ? AND substr(h.folded, 1, {HEAD_CHARS}) = ? AND +h.folded >= ? "
            "AND +h.folded < ? AND NOT EXISTS (SELECT 1 FROM search_string e WHERE e.rid = "
            "h.rid AND e.param = h.param AND e.folded >= ? AND (e.folded, e.exact) < "
            "(h.folded, h.exact))")
    listed = (f"SELECT rid FROM search_string WHERE param = ? "
              f"AND substr(folded, 1, {HEAD_CHARS}) = ?")
    return ((rows, [key, head, value.folded, value.folded + _PREFIX_END, value.folded]),
            (listed, [key, head]))


def _string(modifier: Modifier | None, value: StringValue) -> Condition:
    if modifier is Modifier.EXACT:
        return "exact = ?", [value.text]
    if modifier is Modifier.CONTAINS:
        return "instr(folded, ?) > 0", [value.folded]
    return "folded >= ? AND folded < ?", [value.folded, value.folded + _PREFIX_END]


def _token_set(values: tuple[ClauseValue, ...]) -> Condition:
    """The ORed token values of a clause: the ``system|code`` ones of each system as one
    ``code IN`` list (an ICD-10 range or a ValueSet can give thousands: as single
    conditions SQLite took more than 30 s over them), the others one by one."""
    by_system: dict[str, list[str]] = {}
    parts: list[Condition] = []
    for value in values:
        if isinstance(value, TokenValue) and value.system is not None and value.code is not None:
            by_system.setdefault(value.system, []).append(value.code)
        else:
            parts.append(_token(None, value) if isinstance(value, TokenValue) else ("0", []))
    for system, codes in by_system.items():
        if len(codes) == 1:
            parts.append(("code = ? AND system = ?", [codes[0], system_key(system)]))
        else:
            parts.append(("code IN (SELECT value FROM json_each(?)) AND system = ?",
                          [json.dumps(codes), system_key(system)]))
    return _join(" OR ", parts, "0")


def _token(modifier: Modifier | None, value: TokenValue) -> Condition:
    if modifier is Modifier.TEXT:
        text = value.code or ""
        return "text >= ? AND text < ?", [text, text + _PREFIX_END]
    parts: list[Condition] = []
    if value.code is not None:
        parts.append(("code = ?", [value.code]))
    if value.system is not None:
        parts.append(("system = ?", [system_key(value.system)]))
    return _join(" AND ", parts, "1")


def range_condition(
    predicate: RangePredicate, columns: tuple[str, str] = ("low", "high")
) -> Condition:
    """The predicate over the target range held in ``columns`` (low, high)."""
    names = dict(zip(("low", "high"), columns, strict=True))
    alternatives = [
        _join(" AND ", [(f"{names[b.column]} {b.op} ?", [b.value]) for b in bounds], "1")
        for bounds in predicate.alternatives
    ]
    sql, params = _join(" OR ", alternatives, "0")
    return (f"NOT ({sql})" if predicate.negated else sql), params


def _quantity(value: QuantityValue) -> Condition:
    number = value.number
    parts = [range_condition(range_predicate(number.prefix, number.low, number.high))]
    if value.code is not None:
        parts.append(("code = ?", [value.code]))
    if value.system is not None:
        parts.append(("system = ?", [system_key(value.system)]))
    return _join(" AND ", parts, "1")


def _reference(target_type: str | None, value: ReferenceValue) -> Condition:
    parts: list[Condition] = []
    if value.url is not None:
        parts.append(("id = ? AND url = ?", [absolute_target_id(value.url), value.url]))
    else:
        parts.append(("id = ?", [value.id]))
        if value.type is not None:
            parts.append(("type = ?", [value.type]))
    if target_type is not None:
        parts.append(("type = ?", [target_type]))
    return _join(" AND ", parts, "1")


def _uri(modifier: Modifier | None, value: UriValue) -> Condition:
    if modifier is Modifier.BELOW:
        return "uri >= ? AND uri < ?", [value.uri, value.uri + _PREFIX_END]
    if modifier is Modifier.ABOVE:
        return "substr(?, 1, length(uri)) = uri", [value.uri]
    return "uri = ?", [value.uri]


def _composite(code: str, value: ClauseValue, alias: str) -> Condition:
    """All parts must match rows of the same composite element (see ``search_tables``)."""
    if not isinstance(value, CompositeValue):
        return "0", []
    plain = Clause(code, ParamType.COMPOSITE, ())
    if value.codes is not None:  # over the whole resource: each part on its own parameter
        return _join(" AND ", [
            (f"{alias}.rid IN (SELECT rid FROM {_VALUE_TABLES[type(part)]} "
             f"WHERE param = ? AND ({sql}))", [param_key(part_code), *params])
            for part, part_code in zip(value.parts, value.codes, strict=True)
            for sql, params in [_value(plain, part)]
        ], "1")  # fmt: skip
    parts: list[Condition] = []
    for position, part in enumerate(value.parts):
        table = _VALUE_TABLES[type(part)]
        sql, params = _value(plain, part)
        parts.append(
            (f"element IN (SELECT rid FROM {table} WHERE param = ? AND ({sql}))",
             [param_key(str(position)), *params])
        )  # fmt: skip
    inner_sql, inner_params = _join(" AND ", parts, "1")
    sql = f"{alias}.rid IN (SELECT rid FROM search_composite WHERE param = ? AND {inner_sql})"
    return sql, [param_key(code), *inner_params]


def _resource_column(clause: Clause, alias: str) -> Condition:
    """``_id`` and ``_lastUpdated`` are columns of ``resources``, not index rows."""
    if clause.modifier is Modifier.MISSING:
        return ("0" if clause.values[0] else "1"), []
    if clause.code == "_id":
        ids = [v.code for v in clause.values if isinstance(v, TokenValue)]
        negate = "NOT " if clause.modifier is Modifier.NOT else ""
        return f"{alias}.id {negate}IN ({', '.join('?' for _ in ids) or 'NULL'})", list(ids)
    parts: list[Condition] = []
    for value in clause.values:
        if isinstance(value, DateValue):
            predicate = range_predicate(value.prefix, value.low, value.high)
            parts.append(last_updated_condition(predicate, alias))
    return _join(" OR ", parts, "0")


def last_updated_condition(predicate: RangePredicate, alias: str) -> Condition:
    """The predicate over ``<alias>.last_updated``, a stored instant."""
    # The stored instant t stands for the range [t, t + 1 microsecond): "high op v" is
    # "t op v - 1", and instants of fixed width compare as text.
    alternatives = [
        _join(
            " AND ",
            [
                (f"{alias}.last_updated {b.op} ?",
                 [instant_bound(b.value if b.column == "low" else b.value - 1)])
                for b in bounds
            ],
            "1",
        )
        for bounds in predicate.alternatives
    ]  # fmt: skip
    sql, params = _join(" OR ", alternatives, "0")
    return (f"NOT ({sql})" if predicate.negated else sql), params

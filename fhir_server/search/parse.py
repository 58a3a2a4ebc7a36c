"""Parse a search query string into a ``SearchQuery`` (R4 3.1.1, "Search").

Parsing is driven by each parameter's declared type in the registry, never by the value's
shape. Unknown parameters and unsupported modifiers are collected as issues under lenient
handling (the default) and raised under ``Prefer: handling=strict``; a value that does not fit
its parameter's type (``birthdate=abc``) is always a 400 naming the parameter.

A query beyond one of its ``SearchLimits`` (parameters, ORed values, sort keys, includes,
chain and ``_has`` depth) is a 400 ``too-costly`` naming the limit, checked before any work
grows with it.

Message ids: ``MSG_PARAM_UNKNOWN``, ``MSG_PARAM_MODIFIER_INVALID``, ``MSG_PARAM_UNSUPPORTED``,
``MSG_PARAM_MODIFIER_UNSUPPORTED``, ``MSG_PARAM_INVALID``, ``MSG_LIMIT_EXCEEDED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fhir_server.errors import BadRequest, FhirError, Issue, LimitExceeded, NotSupported
from fhir_server.search import values
from fhir_server.search.model import (
    DEFAULT_LIMITS,
    AnyClause,
    ChainClause,
    Clause,
    ClauseValue,
    CompositeValue,
    HasClause,
    Include,
    Modifier,
    ParamType,
    ParsedSearch,
    SearchLimits,
    SearchQuery,
    SortKey,
    TokenValue,
    TotalMode,
)
from fhir_server.search.registry import SearchParameterDef, SearchParameterRegistry

__all__ = ["UNSUPPORTED_PARAMETERS", "parse_search"]

_IGNORED = frozenset({"_format", "_pretty", "_type"})
UNSUPPORTED_PARAMETERS = frozenset(
    {"_text", "_content", "_query", "_list", "_filter", "_contained"}
)
_ALLOWED: dict[ParamType, frozenset[Modifier]] = {
    ParamType.STRING: frozenset({Modifier.EXACT, Modifier.CONTAINS, Modifier.MISSING}),
    ParamType.TOKEN: frozenset({Modifier.NOT, Modifier.TEXT, Modifier.OF_TYPE, Modifier.MISSING,
                                Modifier.IN, Modifier.NOT_IN, Modifier.ABOVE, Modifier.BELOW}),
    ParamType.DATE: frozenset({Modifier.MISSING}),
    ParamType.NUMBER: frozenset({Modifier.MISSING}),
    ParamType.QUANTITY: frozenset({Modifier.MISSING}),
    ParamType.REFERENCE: frozenset({Modifier.IDENTIFIER, Modifier.TYPE, Modifier.MISSING}),
    ParamType.URI: frozenset({Modifier.BELOW, Modifier.ABOVE, Modifier.MISSING}),
    ParamType.COMPOSITE: frozenset({Modifier.MISSING}),
}
_SUMMARY = frozenset({"true", "text", "data", "count", "false"})


def parse_search(
    resource_type: str | None,
    params: Sequence[tuple[str, str]],
    registry: SearchParameterRegistry,
    *,
    strict: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
    base_url: str | None = None,
    limits: SearchLimits = DEFAULT_LIMITS,
) -> ParsedSearch:
    """Return the query for ``params`` (name, value pairs in request order) on a type.

    ``resource_type`` None is a system search (``_type`` names the types). A reference value
    that is an absolute URL on ``base_url`` (this server) is read as the relative reference
    it stands for, so it matches resources that refer to it relatively. Raises
    ``BadRequest``/``NotSupported`` for invalid values, and under ``strict`` for unknown
    parameters or unsupported modifiers, and ``LimitExceeded`` beyond ``limits``. ``_count=0``
    asks for the total (and no entries) unless ``_total`` says otherwise.
    """
    if len(params) > limits.parameters:
        raise LimitExceeded.of(f"The search has {len(params)} parameters, which",
                               limits.parameters, "search_max_parameters")
    parser = _Parser(registry, strict, base_url.rstrip("/") + "/" if base_url else None, limits)
    query = SearchQuery(resource_type, count=default_count)
    for name, value in params:
        query = parser.apply(query, name, value, max_count)
    if query.count == 0 and not any(name == "_total" for name, _ in params):
        query = replace(query, total=TotalMode.ACCURATE)
    return ParsedSearch(parser.wildcard_includes(query), tuple(parser.issues))


class _Parser:
    """Turns one parameter at a time into an update of the query, collecting issues."""

    def __init__(self, registry: SearchParameterRegistry, strict: bool, base: str | None,
                 limits: SearchLimits) -> None:
        self.registry = registry
        self.strict = strict
        self.base = base
        self.limits = limits
        self.issues: list[Issue] = []

    def problem(self, error: FhirError) -> None:
        """Raise under strict handling; otherwise remember the issue as a warning."""
        if self.strict:
            raise error
        self.issues.append(Issue("warning", error.issue_code, error.message_id, str(error)))

    def apply(self, query: SearchQuery, name: str, value: str, max_count: int) -> SearchQuery:
        """Return ``query`` with the parameter ``name=value`` applied."""
        depth = name.count(".") + name.count("_has:")
        if depth > self.limits.chain_depth:
            raise LimitExceeded.of(f"The chain or _has depth of {name[:60]!r} ({depth})",
                                   self.limits.chain_depth, "search_max_chain_depth")
        if name.startswith("_") and not name.startswith("_has:"):
            return self.control(query, name, value, max_count)
        clause = self.clause(query.resource_type or "Resource", name, value)
        if clause is None:
            return query
        return replace(query, clauses=(*query.clauses, clause))

    def control(self, query: SearchQuery, name: str, value: str, max_count: int) -> SearchQuery:
        """Apply a result parameter (``_count``, ``_sort``...) or a common search parameter."""
        base = name.split(":", 1)[0]
        if base == "_count":
            return replace(query, count=min(_count(value), max_count))
        if base == "_sort":
            sort = (*query.sort, *self.sort(query, value))
            if len(sort) > self.limits.sort_keys:
                raise LimitExceeded.of(f"The search has {len(sort)} _sort keys, which",
                                       self.limits.sort_keys, "search_max_sort_keys")
            return replace(query, sort=sort)
        if base in ("_include", "_revinclude"):
            if len(query.includes) + len(query.revincludes) >= self.limits.includes:
                raise LimitExceeded.of("The number of _include and _revinclude parameters",
                                       self.limits.includes, "search_max_includes")
            return self.include(query, name, value)
        if base == "_total":
            return replace(query, total=_total(value))
        if base == "_summary":
            return self.summary(query, value)
        if base == "_elements":
            parts = tuple(p.strip() for p in value.split(",") if p.strip())
            return replace(query, elements=(*query.elements, *parts))
        if base == "_cursor":
            return replace(query, cursor=value)
        if base == "_type":
            kinds = tuple(p.strip() for p in value.split(",") if p.strip())
            return replace(query, types=(*query.types, *kinds))
        if base in _IGNORED:
            return query
        if base in UNSUPPORTED_PARAMETERS:
            self.problem(
                NotSupported(
                    f"The parameter {name} is not supported", message_id="MSG_PARAM_UNSUPPORTED"
                )
            )
            return query
        clause = self.clause(query.resource_type or "Resource", name, value)
        return query if clause is None else replace(query, clauses=(*query.clauses, clause))

    def clause(self, resource_type: str, name: str, raw: str) -> AnyClause | None:
        """Return the clause of ``name=raw`` on ``resource_type`` (None if it was ignored)."""
        if name.startswith("_has:"):
            return self.has(resource_type, name, raw)
        head, dot, rest = name.partition(".")
        code, _, modifier_text = head.partition(":")
        definition = self.registry.get(resource_type, code)
        if definition is None:
            self.problem(_unknown(resource_type, code))
            return None
        if dot:
            return self.chain(resource_type, definition, modifier_text, rest, raw)
        self.ored(name, raw)
        modifier, target_type = self.modifier(definition, modifier_text, name)
        if modifier_text and modifier is None:
            return None
        if modifier is Modifier.MISSING:
            return Clause(code, definition.type, (_boolean(name, raw),), modifier)
        if modifier in (Modifier.IN, Modifier.NOT_IN):
            return _value_set_clause(code, modifier, name, raw)
        if modifier in (Modifier.ABOVE, Modifier.BELOW) and definition.type is ParamType.TOKEN:
            try:
                return _hierarchy_clause(code, modifier, name, raw)
            except NotSupported as unsupported:
                self.problem(unsupported)
                return None
        parsed = tuple(
            self.value(resource_type, definition, (modifier, target_type), name, part)
            for part in values.split_unescaped(raw, ",")
        )
        return Clause(code, definition.type, parsed, modifier, target_type)

    def ored(self, name: str, raw: str) -> list[str]:
        """Return the comma-separated values of ``raw``, within ``limits.values``."""
        parts = values.split_unescaped(raw, ",")
        if len(parts) > self.limits.values:
            raise LimitExceeded.of(f"{name[:60]} has {len(parts)} values, which",
                                   self.limits.values, "search_max_values")
        return parts

    def modifier(
        self, definition: SearchParameterDef, text: str, name: str
    ) -> tuple[Modifier | None, str | None]:
        """Return the modifier of ``name`` (and the type of ``:[type]``), if it is allowed."""
        if not text:
            return None, None
        if definition.type is ParamType.REFERENCE and text[:1].isupper():
            return Modifier.TYPE, text
        allowed = _ALLOWED.get(definition.type, frozenset())
        if text in {m.value for m in allowed}:
            return Modifier(text), None
        known = text in {m.value for m in Modifier}
        message = f"The modifier :{text} is not supported on the {definition.type} parameter {name}"
        self.problem(
            NotSupported(message, message_id="MSG_PARAM_MODIFIER_UNSUPPORTED")
            if known
            else BadRequest(
                f"Unknown modifier :{text} on {name}", message_id="MSG_PARAM_MODIFIER_INVALID"
            )
        )
        return None, None

    def value(
        self,
        resource_type: str,
        definition: SearchParameterDef,
        modifiers: tuple[Modifier | None, str | None],
        name: str,
        text: str,
    ) -> ClauseValue:
        """Parse one OR-ed value by the parameter's type; raise a 400 naming the parameter."""
        try:
            return self.typed_value(resource_type, definition, *modifiers, text)
        except ValueError as error:
            raise BadRequest(
                f"Invalid value {text!r} for the search parameter {name}: {error}",
                message_id="MSG_PARAM_INVALID",
            ) from None

    def typed_value(
        self,
        resource_type: str,
        definition: SearchParameterDef,
        modifier: Modifier | None,
        target_type: str | None,
        text: str,
    ) -> ClauseValue:
        kind = definition.type
        if kind is ParamType.STRING:
            return values.parse_string(text)
        if kind is ParamType.TOKEN or modifier is Modifier.IDENTIFIER:
            return values.parse_token(text, modifier)
        if kind is ParamType.DATE:
            return values.parse_date(text)
        if kind is ParamType.NUMBER:
            return values.parse_number(text)
        if kind is ParamType.QUANTITY:
            return values.parse_quantity(text)
        if kind is ParamType.REFERENCE:
            only = definition.targets[0] if len(definition.targets) == 1 else None
            if self.base and text.startswith(self.base):
                text = text[len(self.base) :]
            return values.parse_reference(text, target_type or only)
        if kind is ParamType.URI:
            return values.parse_uri(text)
        if kind is ParamType.COMPOSITE:
            return self.composite(resource_type, definition, text)
        raise ValueError(f"parameters of type {kind} are not supported")

    def composite(
        self, resource_type: str, definition: SearchParameterDef, text: str
    ) -> CompositeValue:
        """Parse ``a$b``: each part by the type of its component's definition."""
        parts = values.split_unescaped(text, "$")
        if len(parts) != len(definition.components):
            raise ValueError(f"expected {len(definition.components)} parts separated by '$'")
        parsed: list[ClauseValue] = []
        for component, part in zip(definition.components, parts, strict=True):
            component_def = self.registry.by_url(component.definition)
            if component_def is None:
                raise ValueError(f"unknown component {component.definition}")
            parsed.append(self.typed_value(resource_type, component_def, None, None, part))
        codes = self.registry.resource_composite(resource_type, definition.code)
        return CompositeValue(tuple(parsed), codes)

    def chain(
        self,
        resource_type: str,
        definition: SearchParameterDef,
        modifier_text: str,
        rest: str,
        raw: str,
    ) -> AnyClause | None:
        """Parse ``ref[:Type].inner``: the inner parameter on each possible target type."""
        name = f"{definition.code}.{rest}"
        if definition.type is not ParamType.REFERENCE:
            self.problem(
                BadRequest(f"{definition.code} is not a reference: cannot chain {name}",
                           message_id="MSG_PARAM_INVALID")
            )  # fmt: skip
            return None
        candidates = (modifier_text,) if modifier_text else definition.targets
        inner_code = rest.partition(".")[0].partition(":")[0]
        targets = tuple(t for t in candidates if self.registry.get(t, inner_code) is not None)
        if not targets:
            self.problem(_unknown(" or ".join(candidates) or resource_type, inner_code))
            return None
        inner = self.clause(targets[0], rest, raw)
        return None if inner is None else ChainClause(definition.code, targets, inner)

    def has(self, resource_type: str, name: str, raw: str) -> AnyClause | None:
        """Parse ``_has:Type:reference:inner`` (the inner part may be another ``_has``)."""
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise BadRequest(f"Malformed {name}: expected _has:Type:reference:parameter",
                             message_id="MSG_PARAM_INVALID")  # fmt: skip
        _, source_type, reference, rest = parts
        definition = self.registry.get(source_type, reference)
        if definition is None or definition.type is not ParamType.REFERENCE:
            self.problem(_unknown(source_type, reference))
            return None
        inner = self.clause(source_type, rest, raw)
        return None if inner is None else HasClause(source_type, reference, inner)

    def sort(self, query: SearchQuery, value: str) -> list[SortKey]:
        """Parse ``_sort=a,-b``; unknown codes are problems."""
        keys = []
        for part in (p.strip() for p in value.split(",")):
            code = part.removeprefix("-")
            known = code in ("_id", "_lastUpdated") or self.registry.get(
                query.resource_type or "Resource", code
            )
            if not code or not known:
                self.problem(_unknown(query.resource_type or "Resource", code or part))
                continue
            keys.append(SortKey(code, part.startswith("-")))
        return keys

    def include(self, query: SearchQuery, name: str, value: str) -> SearchQuery:
        """Parse ``_include[:iterate]=Source:code[:Target]``, ``Source:*`` and the wildcards
        ``*`` and ``*:*`` (every reference of the searched types; ``wildcard_includes``)."""
        base, _, flag = name.partition(":")
        parts = ["*", "*"] if value == "*" else value.split(":")
        if parts[0] == "*" and len(parts) in (2, 3) and parts[1] == "*":
            if base == "_revinclude" or flag == "iterate":
                self.problem(NotSupported(f"{name}={value} is not supported: name the source "
                                          "type (Type:*)", message_id="MSG_PARAM_UNSUPPORTED"))
                return query
            item = Include("*", "*", parts[2] if len(parts) == 3 else None)
            return replace(query, includes=(*query.includes, item))
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise BadRequest(f"Invalid {base} value {value!r}: expected Type:parameter[:Target]",
                             message_id="MSG_PARAM_INVALID")  # fmt: skip
        definition = self.registry.get(parts[0], parts[1])
        if parts[1] != "*" and (definition is None or definition.type is not ParamType.REFERENCE):
            self.problem(_unknown(parts[0], parts[1]))
            return query
        item = Include(parts[0], parts[1], parts[2] if len(parts) == 3 else None, flag == "iterate")
        if base == "_include":
            return replace(query, includes=(*query.includes, item))
        return replace(query, revincludes=(*query.revincludes, item))

    def wildcard_includes(self, query: SearchQuery) -> SearchQuery:
        """Give each ``_include=*`` the searched types as sources (``Type:*`` each)."""
        if not any(item.source_type == "*" for item in query.includes):
            return query
        types = (query.resource_type,) if query.resource_type else query.types
        if not types:
            self.problem(NotSupported("_include=* needs the searched types: search a type, "
                                      "or give _type", message_id="MSG_PARAM_UNSUPPORTED"))
        includes = tuple(
            expanded
            for item in query.includes
            for expanded in ([replace(item, source_type=t) for t in types]
                             if item.source_type == "*" else [item])
        )
        return replace(query, includes=includes)

    def summary(self, query: SearchQuery, value: str) -> SearchQuery:
        """Apply ``_summary``; ``count`` asks for the total and no entries."""
        if value not in _SUMMARY:
            raise BadRequest(f"Invalid _summary value {value!r}", message_id="MSG_PARAM_INVALID")
        if value == "count":
            return replace(query, summary=value, count=0, total=TotalMode.ACCURATE)
        return replace(query, summary=value)


def _value_set_clause(code: str, modifier: Modifier, name: str, raw: str) -> Clause:
    """``:in``/``:not-in``: the codes of the ValueSets held by the server, as a token clause.

    ``:in`` becomes the OR of every (system, code) of the expansions; ``:not-in`` the same
    under ``:not``. An unknown ValueSet is a 400 naming the parameter.
    """
    from fhir_server.conformance.terminology import default_terminology
    from fhir_server.errors import NotFound

    codes: list[TokenValue] = []
    for url in values.split_unescaped(raw, ","):
        try:
            codes += [TokenValue(c.system, c.code) for c in default_terminology().expand(url)]
        except NotFound:
            raise BadRequest(f"The search parameter {name} names an unknown ValueSet {url!r}",
                             message_id="MSG_PARAM_INVALID") from None
    negate = Modifier.NOT if modifier is Modifier.NOT_IN else None
    return Clause(code, ParamType.TOKEN, tuple(codes) or (TokenValue("", ""),), negate)


ICD10 = "http://hl7.org/fhir/sid/icd-10"


def _hierarchy_clause(code: str, modifier: Modifier, name: str, raw: str) -> Clause:
    """Token ``:below``/``:above`` on ICD-10 (the one hierarchical system the server knows):
    the code with its descendants (``:below``) or its ancestors (``:above``), as an OR."""
    from fhir_server.conformance.profiles import icd10_hierarchy

    codes: list[TokenValue] = []
    for part in values.split_unescaped(raw, ","):
        system, bar, value = part.rpartition("|")
        family = icd10_hierarchy(value, below=modifier is Modifier.BELOW) if bar else None
        if system != ICD10 or family is None:
            raise NotSupported(
                f"{name}: :{modifier} is supported for ICD-10 codes ({ICD10}|<code>) only",
                message_id="MSG_PARAM_MODIFIER_UNSUPPORTED")
        codes += [TokenValue(ICD10, c) for c in (value, *family)]
    return Clause(code, ParamType.TOKEN, tuple(codes), None)


def _unknown(resource_type: str, code: str) -> BadRequest:
    return BadRequest(
        f"Unknown search parameter {code!r} for {resource_type}", message_id="MSG_PARAM_UNKNOWN"
    )


def _count(value: str) -> int:
    """The number of ``_count``; a number of more than 9 digits is above any page size."""
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"Invalid _count {value[:40]!r}: expected a non-negative integer",
                         message_id="MSG_PARAM_INVALID")  # fmt: skip
    return int(value) if len(value) <= 9 else 10**9


def _total(value: str) -> TotalMode:
    try:
        return TotalMode(value)
    except ValueError:
        raise BadRequest(f"Invalid _total {value!r}: expected none, estimate or accurate",
                         message_id="MSG_PARAM_INVALID") from None  # fmt: skip


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise BadRequest(f"Invalid value {value!r} for {name}: expected true or false",
                         message_id="MSG_PARAM_INVALID")  # fmt: skip
    return value == "true"

"""The search IR and the normalized search index: plain frozen values you can print.

A ``SearchQuery`` is what ``parse_search`` makes of a query string: clauses that are ANDed, each
holding values that are ORed. A ``SearchIndex`` is what ``index_resource`` makes of a resource.
``matching`` evaluates the first against the second in memory; the SQLite adapter compiles the
first into SQL over tables holding the rows of the second.

Normalized forms (shared by indexing, matching and every adapter):

- strings: ``fold(text)`` for the default and ``:contains`` searches, the text as is for ``:exact``;
- tokens: ``(system, code)`` with ``""`` for "no system"; ``:text`` searches folded display text;
- dates: half-open ``[low, high)`` ranges in integer microseconds since 1970-01-01T00:00Z;
  a value without a time zone is read in the server's zone (+07:00, Vietnam);
- numbers and quantities: closed ``[low, high]`` float ranges (a point has ``low == high``);
- references: ``(type, id)`` for relative and resolvable absolute references, plus the absolute
  URL (``url``) where one was given; a reference's ``identifier`` is a token row under
  ``<code>:identifier``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple, TypeAlias

from fhir_server.errors import Issue
from fhir_server.storage.port import StoredResource

__all__ = [
    "DEFAULT_LIMITS",
    "OPEN_END",
    "OPEN_START",
    "AnyClause",
    "ChainClause",
    "Clause",
    "ClauseValue",
    "CompositeValue",
    "ConsentFocus",
    "ConsentRule",
    "DateValue",
    "Grant",
    "HasClause",
    "Include",
    "Modifier",
    "NumberValue",
    "ParamType",
    "ParsedSearch",
    "Prefix",
    "QuantityValue",
    "ReferenceValue",
    "SearchIndex",
    "SearchLimits",
    "SearchQuery",
    "SearchResult",
    "SortKey",
    "StringValue",
    "TokenValue",
    "TotalMode",
    "UriValue",
    "Visibility",
]


class ParamType(StrEnum):
    """SearchParameter.type (R4 value set search-param-type)."""

    NUMBER = "number"
    DATE = "date"
    STRING = "string"
    TOKEN = "token"
    REFERENCE = "reference"
    COMPOSITE = "composite"
    QUANTITY = "quantity"
    URI = "uri"
    SPECIAL = "special"


class Modifier(StrEnum):
    """Search modifiers (R4 3.1.1.5.5); ``TYPE`` stands for ``:[type]`` on references."""

    MISSING = "missing"
    EXACT = "exact"
    CONTAINS = "contains"
    TEXT = "text"
    NOT = "not"
    ABOVE = "above"
    BELOW = "below"
    IN = "in"
    NOT_IN = "not-in"
    OF_TYPE = "of-type"
    IDENTIFIER = "identifier"
    TYPE = "type"


class Prefix(StrEnum):
    """Comparison prefixes of number, date and quantity values (R4 3.1.1.4.1)."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    LT = "lt"
    GE = "ge"
    LE = "le"
    SA = "sa"
    EB = "eb"
    AP = "ap"


class TotalMode(StrEnum):
    """``_total``: none (the default here), estimate or accurate."""

    NONE = "none"
    ESTIMATE = "estimate"
    ACCURATE = "accurate"


@dataclass(frozen=True)
class StringValue:
    """A string search value: ``folded`` for starts-with/contains, ``text`` for ``:exact``."""

    text: str
    folded: str


@dataclass(frozen=True)
class TokenValue:
    """``[system|]code``: ``system`` None means any system, ``""`` means no system.

    ``code`` None means any code (``system|``). Under ``:text`` the folded text is ``code``;
    under ``:of-type`` (``system|code|value``) the type system is ``system`` and ``code`` is
    ``"code|value"``, matching the rows indexed under ``<param>:of-type``.
    """

    system: str | None
    code: str | None


@dataclass(frozen=True)
class DateValue:
    """A date search value: prefix and the half-open range ``[low, high)`` in microseconds."""

    prefix: Prefix
    low: int
    high: int


@dataclass(frozen=True)
class NumberValue:
    """A number value: prefix, the value, and its significant-figure range ``[low, high)``."""

    prefix: Prefix
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class QuantityValue:
    """A quantity value: a number plus optional unit ``system`` and ``code`` (None = any)."""

    number: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True)
class ReferenceValue:
    """A reference value: ``Type/id``, a bare ``id`` (type None) or an absolute ``url``."""

    type: str | None
    id: str | None
    url: str | None = None


@dataclass(frozen=True)
class UriValue:
    """A uri value (compared exactly, or by path prefix under ``:below``/``:above``)."""

    uri: str


@dataclass(frozen=True)
class CompositeValue:
    """A composite value: one value per component, in the component order.

    ``codes`` names the component parameters when the composite is over the whole resource
    (see ``SearchParameterRegistry.resource_composite``): each part is then matched against
    that parameter's rows instead of the rows of a composite element.
    """

    parts: tuple[ClauseValue, ...]
    codes: tuple[str, ...] | None = None


ClauseValue: TypeAlias = (
    StringValue
    | TokenValue
    | DateValue
    | NumberValue
    | QuantityValue
    | ReferenceValue
    | UriValue
    | CompositeValue
    | bool
)
"""One value of a clause; ``bool`` is the value of ``:missing``."""


@dataclass(frozen=True)
class Clause:
    """``code[:modifier]=v1,v2``: true when any value matches (values are ORed).

    ``target_type`` is the type of ``:[type]`` on a reference parameter.
    """

    code: str
    type: ParamType
    values: tuple[ClauseValue, ...]
    modifier: Modifier | None = None
    target_type: str | None = None


@dataclass(frozen=True)
class ChainClause:
    """``code[:Type].inner``: a reference (``code``) to a resource of ``target_types``
    for which ``inner`` holds."""

    code: str
    target_types: tuple[str, ...]
    inner: AnyClause


@dataclass(frozen=True)
class HasClause:
    """``_has:Type:reference:inner``: some ``resource_type`` resource whose ``reference``
    parameter points to the resource, and for which ``inner`` holds."""

    resource_type: str
    reference: str
    inner: AnyClause


AnyClause: TypeAlias = Clause | ChainClause | HasClause


@dataclass(frozen=True)
class SortKey:
    """One ``_sort`` key: a parameter code (or ``_id``/``_lastUpdated``) and its direction."""

    code: str
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """``_include``/``_revinclude=Source:code[:Target]``; ``code`` ``*`` means every reference."""

    source_type: str
    code: str
    target_type: str | None = None
    iterate: bool = False


Alternatives: TypeAlias = tuple[tuple[AnyClause, ...], ...]
"""SMART v2 query restrictions of one type: alternatives (ORed), each clauses (ANDed)."""


class Grant(NamedTuple):
    """One rule of a patient's Consent, flattened for one actor (``search.consent``): whether
    it permits or denies reading, and which resources it covers.

    ``consent`` is the Consent's id and ``patient`` the id of the patient it is about;
    ``actor`` a name of whom it concerns (``Organization/1``, ``identifier|system|value``,
    or ``*``: everyone); ``scope`` the Consent's scope code (``patient-privacy``,
    ``research``). The rule holds from ``start`` (included) to ``end`` (excluded), in
    microseconds since 1970 (``OPEN_START``/``OPEN_END`` when unbounded), for requests of
    ``purpose`` ("" any). It covers the resources of ``resource_type`` ("" any type), the
    one ``target`` (``Type/id``, "" any), having a token ``code`` (``system|code``, "" any)
    and carrying the security ``label`` (``system|code``, "" any).
    """

    consent: str
    patient: str
    actor: str
    permit: bool
    scope: str
    start: int
    end: int
    purpose: str = ""
    resource_type: str = ""
    target: str = ""
    code: str = ""
    label: str = ""


class ConsentFocus(NamedTuple):
    """What the grants of one ``patient`` decide for a caller now, read once for a query
    about that patient: ``everything`` (a permit of everything, no deny that applies) but
    the resources carrying one of ``hidden`` (sensitive labels no unconditional permit
    names), or ``nothing`` (no permit applies). Other grants (a deny, a permit of some
    classes only) are not summarised: the store judges them resource by resource."""

    patient: str
    everything: bool
    hidden: tuple[str, ...] = ()


#: The bounds of a Consent period that has no start or no end.
OPEN_START, OPEN_END = -(2**62), 2**62


@dataclass(frozen=True)
class ConsentRule:
    """What a clinician or facility may see of patients' data (``search.consent`` states the
    rule): a resource of an ``open_types`` type, one the caller wrote itself (``meta.source``
    is ``own``), one in no patient's compartment, or one that every patient in whose
    compartment it is lets the caller read with a Consent of ``scope``: some permit applies
    to it (the caller is one of its ``actors``, the period holds now, ``purpose`` fits, the
    resource is of its class, code, label and target), no deny applies, and each of the
    ``sensitive`` labels the resource carries is named by a permit that applies.

    ``grants``: the grants of the caller, resolved beforehand (a store that cannot join its
    grant index, tests); None where the store joins its own index of grants. ``focus``: what
    one patient's grants decide, resolved by a store that joins its index for the rest
    (``ConsentFocus``; None: nothing resolved; not compared: the rule is the same).
    """

    own: str | None
    actors: frozenset[str]
    scope: str = "patient-privacy"
    purpose: str = "TREAT"
    sensitive: frozenset[str] = frozenset()
    open_types: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] | None = None
    focus: ConsentFocus | None = field(default=None, compare=False)

    def applies_to(self, grant: Grant, now: int) -> bool:
        """Whether a grant concerns this caller now (actor, scope, period, purpose)."""
        return ((grant.actor == "*" or grant.actor in self.actors)
                and grant.scope == self.scope and grant.start <= now < grant.end
                and grant.purpose in ("", self.purpose))


@dataclass(frozen=True)
class Visibility:
    """What a caller may see. Every store applies it to each resource a search reaches: the
    matches (and so the totals and paging), chain targets, ``_has`` sources and included
    resources; the access policy applies the same rule to single resources in memory.

    ``types``: the readable types (None: every type). ``patient``: the Patient of a
    compartment-bound caller. A resource of a type that can be in a Patient compartment is
    then visible only in that patient's compartment; a resource of another type only when
    it is in no other patient's compartment (a Binary whose ``securityContext`` is another
    patient's). ``unbound`` types are exempt from that rule (a broader scope grants them).
    ``restrictions``: the SMART v2 query restrictions per type (``*`` for every type
    without an entry of its own). ``consent``: for a clinician or a facility, what patients'
    Consents let it see (``ConsentRule``), on top of the rest.
    """

    types: frozenset[str] | None = None
    patient: str | None = None
    unbound: frozenset[str] = frozenset()
    restrictions: tuple[tuple[str, Alternatives], ...] = ()
    consent: ConsentRule | None = None

    def readable(self, resource_type: str) -> bool:
        """Whether resources of the type may be seen at all."""
        return self.types is None or resource_type in self.types

    def bound(self, resource_type: str | None) -> bool:
        """Whether the compartment rule applies to resources of the type."""
        return self.patient is not None and resource_type not in self.unbound

    def restricted(self, resource_type: str) -> Alternatives | None:
        """The restriction a resource of the type must meet (some alternative), or None.

        A type's own entry wins over the ``*`` entry (``((),)`` marks a type a scope grants
        without restriction while ``*`` is restricted).
        """
        own = next((alts for kind, alts in self.restrictions if kind == resource_type), None)
        if own is not None:
            return own
        return next((alts for kind, alts in self.restrictions if kind == "*"), None)

    def unresolved(self) -> Visibility:
        """The rule as stated, without the grants a store resolved into it (what cursors
        and guards are keyed by)."""
        if self.consent is None or (self.consent.grants is None and self.consent.focus is None):
            return self
        return replace(self, consent=replace(self.consent, grants=None, focus=None))

    @property
    def everything(self) -> bool:
        """Whether nothing is hidden."""
        return (self.types is None and self.patient is None and not self.restrictions
                and self.consent is None)


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: the clauses (ANDed) plus the result-shaping parameters.

    ``resource_type`` None is a system search over ``types`` (all types when empty);
    ``compartment`` is ``("Patient", id)`` for a compartment search; ``cursor`` is the opaque
    paging cursor of a next/previous link; ``visibility`` what the caller may see (None:
    everything; the access policy sets it on every search it lets through).
    """

    resource_type: str | None
    clauses: tuple[AnyClause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    total: TotalMode = TotalMode.NONE
    summary: str | None = None
    elements: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    compartment: tuple[str, str] | None = None
    cursor: str | None = None
    visibility: Visibility | None = None


@dataclass(frozen=True)
class SearchLimits:
    """Bounds on what one search may ask (each exceeded bound is a 400 naming it).

    ``parameters`` counts every name=value pair, repetitions included; ``values`` the ORed
    values of one parameter; ``sort_keys`` the ``_sort`` keys; ``includes`` the
    ``_include`` and ``_revinclude`` parameters; ``chain_depth`` the links of a chain and the
    nesting of ``_has`` (``a.b.c`` has depth 2). Set from ``Settings.search_limits``.
    """

    parameters: int = 64
    values: int = 200
    sort_keys: int = 8
    includes: int = 16
    chain_depth: int = 4


#: The bounds of a search when no settings give others.
DEFAULT_LIMITS = SearchLimits()


@dataclass(frozen=True)
class ParsedSearch:
    """The query and the issues of parameters ignored under lenient handling."""

    query: SearchQuery
    issues: tuple[Issue, ...] = ()


@dataclass(frozen=True)
class SearchIndex:
    """The normalized search index of one resource; each row starts with the parameter code.

    ``strings`` (code, folded, text); ``tokens`` (code, system, code) with ``""`` for no
    system; ``texts`` (code, folded display text) for ``:text``; ``dates`` (code, low, high);
    ``numbers`` (code, low, high); ``quantities`` (code, system, unit code, low, high);
    ``references`` (code, type, id, url); ``uris`` (code, uri); ``composites`` (code, one
    element's components as an index whose codes are the component positions "0", "1"...);
    ``compartments`` the ids of the patients whose compartment holds it; ``grants`` the
    reading rules of a Consent (``search.consent``).
    """

    resource_type: str
    id: str
    last_updated: str | None = None
    strings: tuple[tuple[str, str, str], ...] = ()
    tokens: tuple[tuple[str, str, str], ...] = ()
    texts: tuple[tuple[str, str], ...] = ()
    dates: tuple[tuple[str, int, int], ...] = ()
    numbers: tuple[tuple[str, float, float], ...] = ()
    quantities: tuple[tuple[str, str, str, float, float], ...] = ()
    references: tuple[tuple[str, str, str, str], ...] = ()
    uris: tuple[tuple[str, str], ...] = ()
    composites: tuple[tuple[str, SearchIndex], ...] = ()
    compartments: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    def codes(self) -> frozenset[str]:
        """Return the codes of every parameter that has at least one row (for ``:missing``)."""
        tables: Sequence[Sequence[tuple[object, ...]]] = (
            self.strings, self.tokens, self.dates, self.numbers, self.quantities,
            self.references, self.uris, self.composites,
        )  # fmt: skip
        return frozenset(str(row[0]) for table in tables for row in table)


@dataclass(frozen=True)
class SearchResult:
    """A page of matches, the included resources, and the paging state.

    ``next_cursor``/``prev_cursor`` are opaque signed strings for the ``_cursor`` parameter;
    ``total`` is set only when ``_total`` asked for it; ``issues`` are lenient-mode warnings.
    """

    matches: tuple[StoredResource, ...]
    included: tuple[StoredResource, ...] = ()
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None
    issues: tuple[Issue, ...] = field(default=())

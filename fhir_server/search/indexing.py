"""Turn a resource into its normalized ``SearchIndex`` (see ``model`` for the normal forms).

Each search parameter of the resource's type selects elements with its compiled expression
(``expressions``); the parameter's type then normalizes each element by its JSON shape:
a token from a code, Coding, CodeableConcept, Identifier or ContactPoint; a string from a
string, HumanName or Address; a date range from a date, dateTime, instant, Period or Timing;
and so on. ``_id`` and ``_lastUpdated`` are not index rows: stores keep them as columns.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server.search import normalize
from fhir_server.search.consent import consent_grants
from fhir_server.search.expressions import Walker, compile_expression, root_fields
from fhir_server.search.model import Grant, ParamType, SearchIndex
from fhir_server.search.normalize import Tables
from fhir_server.search.registry import SearchParameterDef, SearchParameterRegistry
from fhir_server.search.subscription_patients import criteria_patients

__all__ = [
    "CRITERIA_COMPARTMENT",
    "SECURITY_CONTEXT",
    "compartment_patients",
    "compartment_types",
    "index_resource",
    "renamed_index",
]

_NOT_INDEXED = frozenset({"_id", "_lastUpdated", "_text", "_content", "_query"})


@dataclass(frozen=True)
class _Plan:
    """One parameter of a type: its code, type and compiled expression."""

    code: str
    type: ParamType
    walker: Walker
    roots: frozenset[str] | None
    components: tuple[tuple[Normalizer, Walker], ...] = ()

    def step(self) -> _Step:
        """The plan as :func:`index_resource` runs it (composites have no normalizer)."""
        normalizer = None if self.type is ParamType.COMPOSITE else _NORMALIZERS[self.type]
        return self.code, self.walker, normalizer, self


Normalizer = Callable[[Tables, str, Any], None]
#: A plan unpacked: code, walker, normalizer (None for a composite), the plan.
_Step = tuple[str, Walker, "Normalizer | None", _Plan]


def _tables() -> Tables:
    """The rows collected for one resource (or one composite element), deduplicated."""
    return {"strings": {}, "tokens": {}, "texts": {}, "dates": {}, "numbers": {},
            "quantities": {}, "references": {}, "uris": {}, "composites": {}}


def _frozen(tables: Tables) -> dict[str, tuple[tuple[Any, ...], ...]]:
    return {name: tuple(rows) for name, rows in tables.items()}


def index_resource(resource: dict[str, Any], registry: SearchParameterRegistry) -> SearchIndex:
    """Return the search index of ``resource`` under the parameters of ``registry``."""
    resource_type = resource["resourceType"]
    tables = _tables()
    selected: dict[Walker, list[Any]] = {}  # parameters sharing an expression walk it once
    # The plans run as unpacked tuples calling their normalizer directly, only those whose
    # root keys the resource has: the loop over a type's 30 to 50 parameters was a fifth of
    # the indexing (docs/performance.md).
    for code, walker, normalizer, plan in _applicable(registry, resource_type, resource.keys()):
        values = selected.get(walker)
        if values is None:
            values = selected[walker] = walker(resource)
        if normalizer is None:
            _add_composites(tables, plan, values)
        else:
            for value in values:
                normalizer(tables, code, value)
    meta = resource.get("meta") or {}
    return SearchIndex(
        resource_type=resource_type,
        id=resource.get("id", ""),
        last_updated=meta.get("lastUpdated"),
        compartments=_compartments(resource, tables),
        grants=_grants(resource, tables) if resource_type == "Consent" else (),
        **_frozen(tables),
    )


def _grants(consent: dict[str, Any], tables: Tables) -> tuple[Grant, ...]:
    """The reading rules of a Consent about the patient its ``patient`` names."""
    patients = [row[2] for row in tables["references"]
                if row[0] == "patient" and row[1] == "Patient" and not row[3]]
    return consent_grants(consent, patients)


def renamed_index(index: SearchIndex, renames: Mapping[str, str]) -> SearchIndex:
    """Return ``index`` as if the references it holds to ``renames``' keys named its values.

    ``renames`` maps ``Type/id`` to ``Type/id``. Equal to indexing the resource with those
    references rewritten, provided the old ids occur in the resource only as relative
    references (a Bundle's planned ids, which are new UUIDs): only reference rows, the
    compartments derived from them and composite elements hold reference targets.
    """
    def row(value: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
        code, kind, ident, url = value
        target = renames.get(f"{kind}/{ident}")
        if target is None or url:
            return value
        new_kind, new_ident = target.split("/", 1)
        return code, new_kind, new_ident, url

    patients = {old.split("/", 1)[1]: new.split("/", 1)[1] for old, new in renames.items()
                if old.startswith("Patient/") and new.startswith("Patient/")}
    return replace(
        index,
        references=tuple(dict.fromkeys(row(r) for r in index.references)),
        compartments=tuple(sorted({patients.get(p, p) for p in index.compartments})),
        grants=tuple(g._replace(patient=patients.get(g.patient, g.patient))
                     for g in index.grants),
        composites=tuple((code, renamed_index(element, renames))
                         for code, element in index.composites),
    )


def _add_composites(tables: Tables, plan: _Plan, elements: list[Any]) -> None:
    for element in elements:
        parts = _tables()
        for position, (normalizer, walker) in enumerate(plan.components):
            for value in walker(element):
                normalizer(parts, str(position), value)
        # A component takes no modifier, so the ``:text`` rows of its tokens would never be
        # read: not storing them saves about 11 rows per visit Bundle.
        parts["texts"].clear()
        element_index = SearchIndex(resource_type="", id="", **_frozen(parts))  # type: ignore[arg-type]
        if len(element_index.codes()) == len(plan.components):
            tables["composites"][(plan.code, element_index)] = None


_TYPE_PLANS: weakref.WeakKeyDictionary[SearchParameterRegistry, dict[str, tuple[_Plan, ...]]] = (
    weakref.WeakKeyDictionary()
)
_APPLICABLE: weakref.WeakKeyDictionary[
    SearchParameterRegistry, dict[tuple[str, frozenset[str]], tuple[_Step, ...]]
] = weakref.WeakKeyDictionary()
#: The same, keeping only the parameters that place a resource in a Patient compartment.
_COMPARTMENT_STEPS: weakref.WeakKeyDictionary[
    SearchParameterRegistry, dict[tuple[str, frozenset[str]], tuple[_Step, ...]]
] = weakref.WeakKeyDictionary()
#: Distinct (type, top-level keys) shapes remembered per registry before the memo starts over.
_SHAPES = 4096


def _plans(registry: SearchParameterRegistry, resource_type: str) -> tuple[_Plan, ...]:
    """Return (and cache per registry) the compiled parameters of a resource type."""
    by_type = _TYPE_PLANS.setdefault(registry, {})
    plans = by_type.get(resource_type)
    if plans is None:
        plans = by_type[resource_type] = tuple(_build_plans(registry, resource_type))
    return plans


def _memoized(
    memos: weakref.WeakKeyDictionary[
        SearchParameterRegistry, dict[tuple[str, frozenset[str]], tuple[_Step, ...]]],
    registry: SearchParameterRegistry,
    shape: tuple[str, frozenset[str]],
    build: Callable[[], tuple[_Step, ...]],
) -> tuple[_Step, ...]:
    """Return ``memos[registry][shape]``, built on first use; at most ``_SHAPES`` per registry."""
    memo = memos.get(registry)
    if memo is None:
        memo = memos[registry] = {}
    steps = memo.get(shape)
    if steps is None:
        if len(memo) >= _SHAPES:
            memo.clear()
        steps = memo[shape] = build()
    return steps


def _applicable(
    registry: SearchParameterRegistry, resource_type: str, keys: Iterable[str]
) -> tuple[_Step, ...]:
    """The plans of the type that can select something from a resource with these top-level
    ``keys``: a parameter whose root keys it lacks selects nothing. Memoized by the key set,
    since the resources of a type come in few shapes."""
    shape = (resource_type, frozenset(keys))
    return _memoized(_APPLICABLE, registry, shape, lambda: tuple(
        plan.step() for plan in _plans(registry, resource_type)
        if plan.roots is None or not plan.roots.isdisjoint(shape[1])))


def _compartment_steps(
    registry: SearchParameterRegistry, resource_type: str, keys: Iterable[str]
) -> tuple[_Step, ...]:
    """The steps of :func:`_applicable` whose parameter places a resource in a Patient
    compartment (R4 compartmentdefinition-patient), memoized the same way."""
    shape = (resource_type, frozenset(keys))
    codes = _compartment_table().get(resource_type, frozenset())
    return _memoized(_COMPARTMENT_STEPS, registry, shape, lambda: tuple(
        step for step in _applicable(registry, *shape)
        if step[0] in codes and step[2] is not None))


def _build_plans(registry: SearchParameterRegistry, resource_type: str) -> list[_Plan]:
    plans = []
    for code, definition in sorted(registry.for_type(resource_type).items()):
        expression = registry.expression_for(resource_type, code)
        if code in _NOT_INDEXED or expression is None or definition.type is ParamType.SPECIAL:
            continue
        components = _components(registry, definition)
        if definition.type is ParamType.COMPOSITE and (
            components is None or registry.resource_composite(resource_type, code) is not None
        ):
            continue  # unsupported, or searched through its components' own rows
        walker = _compiled(expression, None)
        roots = root_fields(expression)
        if expression == resource_type:  # a composite over the resource: its components' keys
            roots = _component_roots(resource_type, definition)
        plans.append(_Plan(code, definition.type, walker, roots, components or ()))
    return plans


def _components(
    registry: SearchParameterRegistry, definition: SearchParameterDef
) -> tuple[tuple[Normalizer, Walker], ...] | None:
    parts = []
    context = (definition.expression or "").split(" | ")[0]
    for component in definition.components:
        target = registry.by_url(component.definition)
        normalizer = _NORMALIZERS.get(target.type) if target is not None else None
        if normalizer is None or component.expression.startswith("%"):
            return None  # unknown, or of a type with no rows of its own (composite, special)
        parts.append((normalizer, _compiled(component.expression, context)))
    return tuple(parts)


def _component_roots(resource_type: str, definition: SearchParameterDef) -> frozenset[str] | None:
    keys: set[str] = set()
    for component in definition.components:
        found = root_fields(f"{resource_type}.{component.expression}")
        if found is None:
            return None
        keys |= found
    return frozenset(keys)


@cache
def _compiled(expression: str, context: str | None) -> Walker:
    return compile_expression(expression, context)


@cache
def _compartment_table() -> dict[str, frozenset[str]]:
    table = resources.files("fhir_server").joinpath("data/r4/compartment_patient.json")
    data = orjson.loads(table.read_bytes())
    return {kind: frozenset(codes) for kind, codes in data.items() if not kind.startswith("_")}


#: Types in a Patient compartment by the patients their criteria filter on
#: (``search.subscription_patients``): a Subscription about a patient is that patient's.
CRITERIA_COMPARTMENT = frozenset({"Subscription"})


@cache
def compartment_types() -> frozenset[str]:
    """The resource types that can be in a Patient compartment (R4 compartmentdefinition-
    patient, Patient included, and ``CRITERIA_COMPARTMENT``)."""
    return frozenset(_compartment_table()) | CRITERIA_COMPARTMENT


#: Types whose element names the resource whose access rules apply to them (R4 binary.html
#: "securityContext"): a Binary about a Patient is that patient's data.
SECURITY_CONTEXT = {"Binary": "securityContext"}


def _compartments(resource: dict[str, Any], tables: Tables) -> tuple[str, ...]:
    """Return the ids of the patients in whose compartment the resource is.

    Only relative references count: an absolute URL may name a patient of another server.
    """
    kind = resource["resourceType"]
    codes = _compartment_table().get(kind, frozenset())
    ids = {row[2] for row in tables["references"]
           if row[1] == "Patient" and row[0] in codes and not row[3]}
    if kind == "Patient" and resource.get("id"):
        ids.add(resource["id"])
    context = resource.get(SECURITY_CONTEXT.get(kind, ""))
    reference = context.get("reference") if isinstance(context, dict) else None
    if isinstance(reference, str) and reference.startswith("Patient/"):
        ids.add(reference.split("/")[1])
    if kind in CRITERIA_COMPARTMENT:
        ids |= criteria_patients(resource)
    return tuple(sorted(ids))


def compartment_patients(
    resource: dict[str, Any], registry: SearchParameterRegistry
) -> frozenset[str]:
    """Return the patients in whose compartment the resource is, exactly as
    :func:`index_resource` records them, evaluating only the compartment's parameters."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return frozenset()
    tables = _tables()
    for code, walker, normalizer, _plan in _compartment_steps(registry, kind, resource.keys()):
        if normalizer is not None:
            for value in walker(resource):
                normalizer(tables, code, value)
    return frozenset(_compartments(resource, tables))


_NORMALIZERS: dict[ParamType, Normalizer] = {
    ParamType.STRING: normalize.strings,
    ParamType.TOKEN: normalize.tokens,
    ParamType.DATE: normalize.dates,
    ParamType.NUMBER: normalize.numbers,
    ParamType.QUANTITY: normalize.quantities,
    ParamType.REFERENCE: normalize.references,
    ParamType.URI: normalize.uris,
}

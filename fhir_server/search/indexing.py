"""Turn a resource into its normalized ``SearchIndex`` (see ``model`` for the normal forms).

Each search parameter of the resource's type selects elements with its compiled expression
(``expressions``); the parameter's type then normalizes each element by its JSON shape:
a token from a code, Coding, CodeableConcept, Identifier or ContactPoint; a string from a
string, HumanName or Address; a date range from a date, dateTime, instant, Period or Timing;
and so on. ``_id`` and ``_lastUpdated`` are not index rows: stores keep them as columns.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import orjson

from fhir_server.search import normalize
from fhir_server.search.expressions import Walker, compile_expression, root_fields
from fhir_server.search.model import ParamType, SearchIndex
from fhir_server.search.registry import SearchParameterDef, SearchParameterRegistry

__all__ = ["index_resource", "renamed_index"]

_NOT_INDEXED = frozenset({"_id", "_lastUpdated", "_text", "_content", "_query"})


@dataclass(frozen=True)
class _Plan:
    """One parameter of a type: its code, type and compiled expression."""

    code: str
    type: ParamType
    walker: Walker
    roots: frozenset[str] | None
    components: tuple[tuple[ParamType, Walker], ...] = ()


class _Rows:
    """The rows collected for one resource (or one composite element), deduplicated."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[Any, ...], None]] = {
            name: {}
            for name in (
                "strings", "tokens", "texts", "dates", "numbers", "quantities",
                "references", "uris", "composites",
            )
        }  # fmt: skip

    def add(self, code: str, kind: ParamType, value: Any) -> None:
        """Normalize ``value`` as a ``kind`` and add its rows under ``code``."""
        _NORMALIZERS[kind](self, code, value)

    def frozen(self) -> dict[str, tuple[tuple[Any, ...], ...]]:
        return {name: tuple(rows) for name, rows in self.tables.items()}


def index_resource(resource: dict[str, Any], registry: SearchParameterRegistry) -> SearchIndex:
    """Return the search index of ``resource`` under the parameters of ``registry``."""
    resource_type = resource["resourceType"]
    rows = _Rows()
    keys = resource.keys()
    selected: dict[Walker, list[Any]] = {}  # parameters sharing an expression walk it once
    for plan in _plans(registry, resource_type):
        if plan.roots is not None and plan.roots.isdisjoint(keys):
            continue
        if plan.walker not in selected:
            selected[plan.walker] = plan.walker(resource)
        if plan.type is ParamType.COMPOSITE:
            _add_composites(rows, plan, selected[plan.walker])
            continue
        for value in selected[plan.walker]:
            rows.add(plan.code, plan.type, value)
    meta = resource.get("meta") or {}
    return SearchIndex(
        resource_type=resource_type,
        id=resource.get("id", ""),
        last_updated=meta.get("lastUpdated"),
        compartments=_compartments(resource, rows),
        **rows.frozen(),
    )


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
        composites=tuple((code, renamed_index(element, renames))
                         for code, element in index.composites),
    )


def _add_composites(rows: _Rows, plan: _Plan, elements: list[Any]) -> None:
    for element in elements:
        parts = _Rows()
        for position, (kind, walker) in enumerate(plan.components):
            for value in walker(element):
                parts.add(str(position), kind, value)
        # A component takes no modifier, so the ``:text`` rows of its tokens would never be
        # read: not storing them saves about 11 rows per visit Bundle.
        parts.tables["texts"].clear()
        element_index = SearchIndex(resource_type="", id="", **parts.frozen())  # type: ignore[arg-type]
        if len(element_index.codes()) == len(plan.components):
            rows.tables["composites"][(plan.code, element_index)] = None


_TYPE_PLANS: weakref.WeakKeyDictionary[SearchParameterRegistry, dict[str, tuple[_Plan, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _plans(registry: SearchParameterRegistry, resource_type: str) -> tuple[_Plan, ...]:
    """Return (and cache per registry) the compiled parameters of a resource type."""
    by_type = _TYPE_PLANS.setdefault(registry, {})
    if resource_type not in by_type:
        by_type[resource_type] = tuple(_build_plans(registry, resource_type))
    return by_type[resource_type]


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
) -> tuple[tuple[ParamType, Walker], ...] | None:
    parts = []
    context = (definition.expression or "").split(" | ")[0]
    for component in definition.components:
        target = registry.by_url(component.definition)
        if target is None or component.expression.startswith("%"):
            return None
        parts.append((target.type, _compiled(component.expression, context)))
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
def _compartment_table() -> dict[str, tuple[str, ...]]:
    table = resources.files("fhir_server").joinpath("data/r4/compartment_patient.json")
    data = orjson.loads(table.read_bytes())
    return {kind: tuple(codes) for kind, codes in data.items() if not kind.startswith("_")}


def _compartments(resource: dict[str, Any], rows: _Rows) -> tuple[str, ...]:
    """Return the ids of the patients in whose compartment the resource is."""
    kind = resource["resourceType"]
    codes = set(_compartment_table().get(kind, ()))
    ids = {row[2] for row in rows.tables["references"] if row[0] in codes and row[1] == "Patient"}
    if kind == "Patient" and resource.get("id"):
        ids.add(resource["id"])
    return tuple(sorted(ids))


_NORMALIZERS: dict[ParamType, Callable[[_Rows, str, Any], None]] = {
    ParamType.STRING: lambda rows, code, value: normalize.strings(rows.tables, code, value),
    ParamType.TOKEN: lambda rows, code, value: normalize.tokens(rows.tables, code, value),
    ParamType.DATE: lambda rows, code, value: normalize.dates(rows.tables, code, value),
    ParamType.NUMBER: lambda rows, code, value: normalize.numbers(rows.tables, code, value),
    ParamType.QUANTITY: lambda rows, code, value: normalize.quantities(rows.tables, code, value),
    ParamType.REFERENCE: lambda rows, code, value: normalize.references(rows.tables, code, value),
    ParamType.URI: lambda rows, code, value: normalize.uris(rows.tables, code, value),
}

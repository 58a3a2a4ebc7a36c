"""The mapping tables of XML 130: one declarative JSON file per table and per standard.

``data/tables/<standard>/<table>.json`` says, for every field of the table, where it goes in
FHIR (a role such as ``patient`` or ``medication``, an element path, a value kind and its code
system) or why it is deliberately not mapped; the resources a table makes (its roles) with their
fixed content and links. A standard's file may extend another's (``"extends": "4750"``) and
override single fields. ``data/fields.json`` (generated from the annex of QĐ 4750 by
``scripts/generate_xml130_fields.py``) gives each standard's field list with types and sizes;
a table must account for every field of its standard (``TableError`` otherwise), and rules
for fields the standard lacks are dropped.

The engine (``engine.py``) reads these values; nothing here knows FHIR.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from importlib import resources
from typing import Any

import orjson

from fhir_server.bridges.xml130.envelope import TableShape

__all__ = [
    "DEFAULT_STANDARD",
    "STANDARDS",
    "FieldFacts",
    "Role",
    "Rule",
    "Standard",
    "Table",
    "TableError",
    "Target",
    "load_standard",
    "system",
]

STANDARDS = ("130", "4750", "3176")
DEFAULT_STANDARD = "4750"
_DATA = resources.files("fhir_server.bridges.xml130").joinpath("data")


class TableError(ValueError):
    """A mapping table that is inconsistent with its standard's field list."""


@dataclass(frozen=True)
class FieldFacts:
    """A field's type (``number`` or ``string``) and maximum size (None: unlimited)."""

    name: str
    kind: str
    size: int | None


@dataclass(frozen=True)
class Target:
    """Where one field's value goes: roles (several share a ``;`` list in order), the element
    path inside the role's resource, the value kind and its options (system, map, label...)."""

    roles: tuple[str, ...]
    path: str
    kind: str
    options: Mapping[str, Any]
    reverse: bool = True

    def option(self, name: str, default: Any = None) -> Any:
        """Return an option of the target (``system``, ``map``, ``label``...)."""
        return self.options.get(name, default)

    @cached_property
    def sets(self) -> tuple[tuple[str, Any], ...]:
        """The fixed values written with the field's (option ``set``: path -> value)."""
        return tuple((self.options.get("set") or {}).items())

    @cached_property
    def _local(self) -> dict[str, Target]:
        return {}

    @cached_property
    def memo(self) -> dict[str, Any]:
        """What the engine compiled from the target (its ``put`` as one function)."""
        return {}

    def local(self, facility: str) -> Target:
        """The target with a facility's code in its path (``identifier[=.../{facility}]``)."""
        if "{facility}" not in self.path:
            return self
        found = self._local.get(facility)
        if found is None:
            found = replace(self, path=self.path.replace("{facility}", facility))
            if len(self._local) < 256:  # the facilities seen lately: few per server
                self._local[facility] = found
        return found


@dataclass(frozen=True)
class Rule:
    """What one field is: a key (``visit`` MA_LK, ``row`` STT), unmapped with a reason, a copy
    of another table's field (``same_as`` = (table, field)), or mapped to targets."""

    name: str
    key: str | None = None
    unmapped: str | None = None
    same_as: tuple[str, str] | None = None
    targets: tuple[Target, ...] = ()
    split: bool = False

    @cached_property
    def acts_when_empty(self) -> bool:
        """Whether an empty field still writes something (a fallback, content when empty)."""
        return any(t.option("fallback") or t.option("if_empty") for t in self.targets)

    @property
    def mapped(self) -> bool:
        """Whether the field reaches FHIR (targets or a copy of a mapped field)."""
        return bool(self.targets) or self.same_as is not None or self.key is not None


@dataclass(frozen=True)
class Role:
    """A resource a table makes: its type, when instances exist (``always``, ``row``, a field
    or any of several fields), its fixed content and its references to other roles."""

    name: str
    type: str
    source: str | tuple[str, ...]
    template: Mapping[str, Any]
    links: Mapping[str, Any]
    original: bool = False

    @cached_property
    def blank(self) -> bytes:
        """A new resource of the role as JSON: its type and fixed content."""
        return orjson.dumps({"resourceType": self.type, **self.template})


@dataclass(frozen=True)
class Table:
    """One table of one standard: fields in order with their facts and rules, and its roles."""

    name: str
    standard: str
    title: str
    shape: TableShape | None
    roles: Mapping[str, Role]
    rules: Mapping[str, Rule]
    facts: Mapping[str, FieldFacts]
    unmapped: str | None = None

    @cached_property
    def active_rules(self) -> tuple[Rule, ...]:
        """The rules that do something when a record is mapped (targets or a copy check)."""
        return tuple(r for r in self.rules.values() if r.targets or r.same_as)

    @cached_property
    def limits(self) -> dict[str, tuple[int, bool]]:
        """Each field's maximum size (``sys.maxsize``: unlimited) and whether it is a number:
        what the checks of every record read."""
        return {name: (facts.size if facts.size is not None else sys.maxsize,
                       facts.kind == "number") for name, facts in self.facts.items()}

    @cached_property
    def memo(self) -> dict[str, Any]:
        """What the engine compiled from the table (its fields as functions)."""
        return {}

    @property
    def many(self) -> bool:
        """Whether the table holds many records (a list element) rather than one."""
        return self.shape is not None and self.shape.list is not None


@dataclass(frozen=True)
class Standard:
    """The tables of one standard (130, 4750 or 3176)."""

    name: str
    tables: Mapping[str, Table] = field(default_factory=dict)

    def shapes(self) -> dict[str, TableShape]:
        """The tables that are imported, with their XML shapes."""
        return {n: t.shape for n, t in self.tables.items() if t.shape and not t.unmapped}

    def skipped(self) -> dict[str, str]:
        """The known tables that are not imported, with the reason."""
        return {n: t.unmapped for n, t in self.tables.items() if t.unmapped}


@cache
def _json(*parts: str) -> Any:
    node = _DATA
    for part in parts:
        node = node.joinpath(part)
    return json.loads(node.read_text(encoding="utf-8"))


def system(name: str, facility: str = "{facility}") -> str:
    """The URI of a system named ``@name`` in data/systems.json (``{facility}`` filled in)."""
    if not name.startswith("@"):
        return name
    uri: str = _json("systems.json")[name[1:]]
    return uri.replace("{facility}", facility)


def _resolve(value: Any) -> Any:
    """Resolve ``@system`` names inside paths and options (facility placeholders stay)."""
    if isinstance(value, str) and "@" in value:
        head, _, rest = value.partition("[=@")
        if rest:
            name, _, tail = rest.partition("]")
            return f"{head}[={system('@' + name)}]{_resolve(tail)}"
        return system(value) if value.startswith("@") else value
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def _target(raw: Mapping[str, Any], reverse: bool) -> Target:
    roles = raw["to"] if isinstance(raw["to"], list) else [raw["to"]]
    options = {k: _resolve(v) for k, v in raw.items() if k not in ("to", "path", "kind", "also")}
    return Target(tuple(roles), _resolve(raw.get("path", "")), raw.get("kind", "text"),
                  options, reverse)


def _reason(key: str) -> str:
    reasons: dict[str, str] = _json("reasons.json")
    return reasons.get(key, key)


def _rule(name: str, raw: Mapping[str, Any]) -> Rule:
    if "key" in raw:
        return Rule(name, key=raw["key"])
    if "unmapped" in raw:
        return Rule(name, unmapped=_reason(raw["unmapped"]))
    if "same_as" in raw:
        table, _, other = raw["same_as"].partition(".")
        return Rule(name, same_as=(table, other))
    targets = [_target(raw, True), *(_target(a, False) for a in raw.get("also", ()))]
    return Rule(name, targets=tuple(targets), split=bool(raw.get("split")))


def _merged(standard: str, table: str) -> dict[str, Any]:
    raw: dict[str, Any] = dict(_json("tables", standard, f"{table}.json"))
    base = raw.pop("extends", None)
    if base is None:
        return raw
    merged = _merged(base, table)
    merged["fields"] = {**merged.get("fields", {}), **raw.get("fields", {})}
    merged["roles"] = {**merged.get("roles", {}), **raw.get("roles", {})}
    return merged


def _role(name: str, raw: Mapping[str, Any]) -> Role:
    source = raw["from"]
    return Role(name, raw["type"], source if isinstance(source, str) else tuple(source),
                raw.get("template", {}), raw.get("links", {}), bool(raw.get("original")))


def _table(standard: str, name: str, facts: list[list[Any]]) -> Table:
    raw = _merged(standard, name)
    shape = TableShape(**raw["shape"]) if "shape" in raw else None
    ordered = {row[0]: FieldFacts(row[0], row[1], row[2]) for row in facts}
    if raw.get("unmapped"):
        reason = _reason("table-not-imported")
        rules = {f: Rule(f, unmapped=reason) for f in ordered}
        return Table(name, standard, raw["title"], shape, {}, rules, ordered, raw["unmapped"])
    fields: dict[str, Any] = raw.get("fields", {})
    missing = [f for f in ordered if f not in fields]
    if missing:
        raise TableError(f"{standard}/{name}: no rule for {', '.join(missing)}")
    roles = {n: _role(n, r) for n, r in raw.get("roles", {}).items()}
    rules = {f: _rule(f, fields[f]) for f in ordered}
    return Table(name, standard, raw["title"], shape, roles, rules, ordered)


@cache
def load_standard(name: str = DEFAULT_STANDARD) -> Standard:
    """The tables of standard ``name``; raises ``KeyError`` for an unknown standard."""
    if name not in STANDARDS:
        raise KeyError(name)
    facts: dict[str, dict[str, list[list[Any]]]] = _json("fields.json")["tables"]
    tables = {t: _table(name, t, lists[name]) for t, lists in facts.items() if name in lists}
    return Standard(name, tables)

"""The small rule objects a profile's differential compiles into, and how they check JSON.

Each rule checks one constraint of a StructureDefinition element on a resource in its FHIR JSON
form and appends :class:`~fhir_server.errors.Issue` objects with a FHIRPath ``expression``
(``Patient.identifier[0].value``). Paths are tuples of JSON names relative to the rule's root
(the resource, or one item of a slice); a ``name[x]`` part matches any ``nameType`` key.

The FHIRPath of a visited value is kept as a :data:`Location` (its parent's location, the JSON
name and the item index) and rendered as text by :func:`expression` only when an issue reports
it: most visited values are valid, and formatting a path for each was much of the cost.

Message ids: MSG_PROFILE_CARDINALITY, MSG_PROFILE_SLICE (a slice's value format),
MSG_PROFILE_PATTERN (fixed/pattern/regex), MSG_PROFILE_TYPE (choice type not allowed),
MSG_PROFILE_BINDING (code not in a required value set; extensible gives a warning),
MSG_ICD10_UNKNOWN (well-formed ICD-10 code not in the WHO list), for the administrative units
of an address MSG_ADDRESS_UNIT_NOT_IN_FORCE, MSG_ADDRESS_UNIT_UNKNOWN, MSG_ADDRESS_UNIT_MISMATCH
and MSG_ADDRESS_DISTRICT, and for invariants the constraint's own id (default
MSG_PROFILE_INVARIANT).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_server.errors import Issue
from fhir_server.geography import addresses

__all__ = [
    "AddressUnitsRule",
    "BindingRule",
    "CardinalityRule",
    "CodeCheck",
    "ExtensionDefinition",
    "InvariantRule",
    "Location",
    "Node",
    "PatternRule",
    "RegexRule",
    "Rule",
    "TypeRule",
    "children",
    "contains_pattern",
    "expression",
    "label_prefix",
    "nodes_at",
    "rule_issue",
    "select",
]

Json = dict[str, Any]
# Where a value is: its FHIRPath text, or (parent location, JSON name, index of the item in the
# array, None for a single value), rendered by :func:`expression` when an issue needs it.
Location = str | tuple["Location", str, int | None]
Node = tuple[Any, Location]
# (system, code) -> None if valid, else an (severity, message id, text) problem.
CodeCheck = Callable[[str | None, str], "tuple[str, str, str] | None"]


class Rule(Protocol):
    """One compiled constraint."""

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        """Append the issues of ``root`` (a value and its location) to ``issues``."""


def expression(location: Location) -> str:
    """The FHIRPath text of ``location`` (``Patient.identifier[0].value``)."""
    if isinstance(location, str):
        return location
    parent, key, index = location
    text = f"{expression(parent)}.{key}"
    return text if index is None else f"{text}[{index}]"


def children(value: Any, name: str, location: Location) -> list[Node]:
    """The values of ``name`` under ``value`` with their location; ``x[x]`` matches choices."""
    if not isinstance(value, dict):
        return []
    if "[" in name and name.endswith("[x]"):  # the cheap test first: most names are plain
        stem = name[:-3]
        size = len(stem)
        out: list[Node] = []
        for key, child in value.items():
            if not (key.startswith(stem) and key[size : size + 1].isupper()):
                continue
            if isinstance(child, list):
                out.extend([(item, (location, key, i)) for i, item in enumerate(child)])
            else:
                out.append((child, (location, key, None)))
        return out
    if name not in value:
        return []
    child = value[name]
    if isinstance(child, list):
        return [(item, (location, name, i)) for i, item in enumerate(child)]
    return [(child, (location, name, None))]


def _count(value: Any, name: str) -> int:
    """How many values ``children(value, name, ...)`` has (an array counts its items)."""
    if not isinstance(value, dict):
        return 0
    if "[" in name and name.endswith("[x]"):
        stem = name[:-3]
        size = len(stem)
        count = 0
        for key, child in value.items():
            if key.startswith(stem) and key[size : size + 1].isupper():
                count += len(child) if isinstance(child, list) else 1
        return count
    if name not in value:
        return 0
    child = value[name]
    return len(child) if isinstance(child, list) else 1


def nodes_at(root: Node, path: tuple[str, ...]) -> list[Node]:
    """Every value at ``path`` under ``root``, with its location."""
    if not path:
        return [root]
    nodes = children(root[0], path[0], root[1])
    for name in path[1:]:
        nodes = [child for value, where in nodes for child in children(value, name, where)]
    return nodes


def select(root: Node, path: tuple[str, ...]) -> list[tuple[Any, str]]:
    """Every value at ``path`` under ``root``, with its FHIRPath text."""
    return [(value, expression(where)) for value, where in nodes_at(root, path)]


def rule_issue(severity: str, code: str, message_id: str, text: str, expr: str) -> Issue:
    return Issue(severity, code, message_id, text, (expr,))


@dataclass(frozen=True, slots=True)
class CardinalityRule:
    """``min..max`` of ``name`` under each node at ``parent``."""

    parent: tuple[str, ...]
    name: str
    min: int
    max: int | None
    label: str

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.parent) if self.parent else (root,):
            count = _count(value, self.name)
            if count < self.min or (self.max is not None and count > self.max):
                where = f"{expression(location)}.{self.name.removesuffix('[x]')}"
                upper = "*" if self.max is None else self.max
                text = f"{self.label}: found {count}, allowed {self.min}..{upper}"
                code = "required" if count < self.min else "structure"
                issues.append(rule_issue("error", code, "MSG_PROFILE_CARDINALITY", text, where))


@dataclass(frozen=True, slots=True)
class RegexRule:
    """A string value at ``path`` must match ``pattern`` entirely."""

    path: tuple[str, ...]
    pattern: re.Pattern[str]
    message_id: str = "MSG_PROFILE_PATTERN"
    label: str = ""

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.path) if self.path else (root,):
            if not isinstance(value, str) or not self.pattern.search(value):
                expr = expression(location)
                text = f"{self.label or expr}: '{value}' does not match {self.pattern.pattern}"
                issues.append(rule_issue("error", "value", self.message_id, text, expr))


def contains_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every property of the pattern is present with equal value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and contains_pattern(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else []
        return all(any(contains_pattern(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


@dataclass(frozen=True, slots=True)
class PatternRule:
    """fixed[x] (``exact``) or pattern[x] value of the element at ``path``; ``label`` (the
    profile) starts the issue's text."""

    path: tuple[str, ...]
    value: Any
    exact: bool
    label: str = ""

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.path) if self.path else (root,):
            ok = value == self.value if self.exact else contains_pattern(value, self.value)
            if not ok:
                expr = expression(location)
                kind = "fixed" if self.exact else "pattern"
                text = (f"{label_prefix(self.label)}{expr} does not match the {kind} value "
                        f"{self.value!r}")
                issues.append(rule_issue("error", "value", "MSG_PROFILE_PATTERN", text, expr))


@dataclass(frozen=True, slots=True)
class TypeRule:
    """The choice element ``name[x]`` under ``parent`` may only use ``allowed`` types."""

    parent: tuple[str, ...]
    name: str
    allowed: frozenset[str]

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        stem = self.name.removesuffix("[x]")
        for value, location in nodes_at(root, self.parent) if self.parent else (root,):
            for key in value if isinstance(value, dict) else ():
                suffix = key[len(stem) :]
                if key.startswith(stem) and suffix[:1].isupper() and suffix not in self.allowed:
                    expr = expression(location)
                    text = f"{expr}.{key}: type {suffix} not allowed (only {sorted(self.allowed)})"
                    issues.append(rule_issue("error", "structure", "MSG_PROFILE_TYPE", text,
                                         f"{expr}.{key}"))  # fmt: skip


def _codings(value: Any) -> list[tuple[str | None, str]]:
    """The (system, code) pairs of a code, Coding or CodeableConcept."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [(c.get("system"), c["code"]) for c in value["coding"] if "code" in c]
    return [(value.get("system"), value["code"])] if "code" in value else []


@dataclass(frozen=True, slots=True)
class BindingRule:
    """The coded value at ``path`` is checked with ``check_code`` (a value-set membership test).

    Required: at least one code must pass (error); a value without any code is an error too,
    except a Quantity (``quantity``: a Quantity without a coded unit has nothing to check).
    Extensible: when no code passes, each failing code gives a warning; with ``each`` (the
    ICD-10 list) every failing code does, whatever the others. ``check_code`` may return its
    own severity and message id. ``label`` (the profile) starts the issue's text.
    """

    path: tuple[str, ...]
    strength: str
    value_set: str
    check_code: CodeCheck
    label: str = ""
    each: bool = True
    quantity: bool = False

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.path) if self.path else (root,):
            codes = _codings(value)
            if not codes and self.quantity:
                continue
            problems = [p for s, c in codes if (p := self.check_code(s, c))]
            if self.strength == "required" and (not codes or len(problems) == len(codes)):
                expr = expression(location)
                text = (f"{label_prefix(self.label)}{expr}: no code from the required value set "
                        f"{self.value_set}")
                issues.append(rule_issue("error", "code-invalid", "MSG_PROFILE_BINDING", text,
                                         expr))  # fmt: skip
            elif self.strength == "extensible" and (self.each or len(problems) == len(codes)):
                for severity, message_id, text in problems:
                    issues.append(rule_issue(severity, "code-invalid", message_id,
                                         f"{label_prefix(self.label)}{text}",
                                         expression(location)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class InvariantRule:
    """A FHIRPath invariant on each node at ``context`` (``native`` is a faster equivalent)."""

    context: tuple[str, ...]
    key: str
    severity: str
    human: str
    expression: str
    message_id: str
    evaluate: Callable[[Any, Json], bool]

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.context) if self.context else (root,):
            if not self.evaluate(value, resource):
                text = f"{self.key}: {self.human}"
                issues.append(rule_issue(self.severity, "invariant", self.message_id, text,
                                     expression(location)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class AddressUnitsRule:
    """The province, district and commune codes of each Address at ``path`` are units in force
    on the day it describes (:func:`fhir_server.geography.addresses.check`)."""

    path: tuple[str, ...]

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.path) if self.path else (root,):
            if not isinstance(value, dict):
                continue
            for problem in addresses.check(value, resource):
                where = f"{expression(location)}.{problem.where}"
                issues.append(rule_issue(problem.severity, "code-invalid", problem.message_id,
                                     problem.text, where))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExtensionDefinition:
    """A simple extension: its url and the rules that apply to one instance of it."""

    url: str
    rules: tuple[Rule, ...]


def label_prefix(label: str) -> str:
    """``label: `` before an issue's text, when there is a label."""
    return f"{label}: " if label else ""

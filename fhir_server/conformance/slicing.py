"""Slicing: how the items of a repeating element are sorted into a profile's slices.

A :class:`SliceGroupRule` holds the slices of one element; each item goes to the first slice
that takes it, by the value of one discriminator name or by the slice's keys (fixed values,
patterns or a value format at discriminator paths). The slice's own rules then check the item,
and each slice's count is checked against its cardinality (MSG_PROFILE_CARDINALITY).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_server.conformance.profile_rules import (
    Json,
    Location,
    Node,
    Rule,
    children,
    contains_pattern,
    expression,
    label_prefix,
    nodes_at,
    rule_issue,
)
from fhir_server.errors import Issue

__all__ = ["Discriminator", "Slice", "SliceGroupRule"]


#: How a slice's discriminator value is compared: equal (fixed[x]), contains (pattern[x]),
#: or a regex search (a value format that names the slice, as Vietnamese identifier systems).
Discriminator = tuple[tuple[str, ...], str, Any]


def _values(item: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at ``path`` under ``item`` (arrays flattened); ``()`` is the item itself."""
    values = [item]
    for name in path:
        found: list[Any] = []
        for value in values:
            child = value.get(name) if isinstance(value, dict) else None
            if isinstance(child, list):
                found.extend(child)
            elif child is not None:
                found.append(child)
        values = found
    return values


def _meets(value: Any, how: str, expected: Any) -> bool:
    if how == "regex":
        return isinstance(value, str) and expected.search(value) is not None
    return bool(value == expected) if how == "fixed" else contains_pattern(value, expected)


@dataclass(slots=True)
class Slice:
    """One slice: how items are matched and its own rules.

    Matched either by the value of the group's single discriminator name (``value``, or
    ``regex``), or, for any other discriminator, by ``keys``: for each discriminator path, the
    fixed value the item must hold there, the pattern it must contain, or the regex one of its
    values must match (``(path, "fixed" | "pattern" | "regex", value)``); an item matches when
    every key is met by some value at its path. A slice with neither matches nothing.
    """

    name: str
    min: int = 0
    max: int | None = None
    value: str | None = None
    regex: re.Pattern[str] | None = None
    rules: list[Rule] = field(default_factory=list)
    keys: tuple[Discriminator, ...] = ()

    def matches(self, discriminator: Any) -> bool:
        """Does an item whose discriminator value is ``discriminator`` belong here?"""
        if not isinstance(discriminator, str):
            return False
        if self.regex is not None:
            return self.regex.search(discriminator) is not None
        return discriminator == self.value

    def admits(self, item: Any) -> bool:
        """Does ``item`` meet every key of the slice (and is there one)?"""
        if not self.keys:
            return False
        return all(any(_meets(value, how, expected) for value in _values(item, path))
                   for path, how, expected in self.keys)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SliceGroupRule:
    """The slices of ``name`` under ``parent``. An item belongs to the first slice that takes
    it: by the value of its ``discriminator`` name when one is given (``Slice.matches``), else
    by the slice's keys (``Slice.admits``). ``label`` (the profile) starts the issues' text."""

    parent: tuple[str, ...]
    name: str
    discriminator: str
    slices: tuple[Slice, ...]
    label: str = ""

    def check(self, root: Node, resource: Json, issues: list[Issue]) -> None:
        for value, location in nodes_at(root, self.parent) if self.parent else (root,):
            counts = dict.fromkeys([s.name for s in self.slices], 0)
            for item in children(value, self.name, location):
                found = self._slice_of(item[0])
                if found is not None:
                    counts[found.name] += 1
                    for rule in found.rules:
                        rule.check(item, resource, issues)
            self._check_counts(counts, location, issues)

    def _slice_of(self, item: Any) -> Slice | None:
        if not self.discriminator:
            return next((piece for piece in self.slices if piece.admits(item)), None)
        key = item.get(self.discriminator) if isinstance(item, dict) else None
        for piece in self.slices:
            if piece.matches(key):
                return piece
        return None

    def _check_counts(self, counts: dict[str, int], parent: Location, issues: list[Issue]) -> None:
        where = ""
        for piece in self.slices:
            count = counts[piece.name]
            if count < piece.min or (piece.max is not None and count > piece.max):
                where = where or f"{expression(parent)}.{self.name}"
                upper = "*" if piece.max is None else piece.max
                text = (f"{label_prefix(self.label)}{where}:{piece.name}: found {count}, "
                        f"allowed {piece.min}..{upper}")
                code = "required" if count < piece.min else "structure"
                issues.append(rule_issue("error", code, "MSG_PROFILE_CARDINALITY", text, where))

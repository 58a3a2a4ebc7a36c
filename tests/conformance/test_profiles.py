"""The Vietnamese profiles against the examples, generated visits and their JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fhirpathpy
import jsonschema  # type: ignore[import-untyped]
import pytest

from fhir_server.conformance.profile_rules import InvariantRule, select
from fhir_server.conformance.profiles import (
    CANONICAL_BASE,
    ProfileValidator,
    default_validator,
    required_profile,
)
from fhir_server.conformance.schema import json_schema
from fhir_server.conformance.slicing import SliceGroupRule
from fhir_server.synthetic.generation import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted(p for p in (EXAMPLES / "invalid").glob("*.json") if ".expected" not in p.name)
# Invalid examples whose fault JSON Schema can express (cardinality, formats, fixed values).
SCHEMA_DETECTS = {
    "coverage-bad-card-type", "documentreference-no-hash-no-context",
    "encounter-malk-bad-facility", "encounter-no-provider-bad-type",
    "organization-facility-code-4-chars", "patient-bhyt-bad-level", "patient-cccd-11-digits",
    "patient-no-identifier", "patient-no-name-no-gender",
}  # fmt: skip


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded


def _schema_errors(resource: dict[str, Any]) -> list[str]:
    claimed = (resource.get("meta") or {}).get("profile") or [""]
    schema = json_schema(required_profile(resource["resourceType"]) or claimed[0])
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(resource)]


def test_every_profile_has_a_valid_example() -> None:
    validator = default_validator()
    covered = {_load(p)["resourceType"] for p in VALID}
    assert covered == {p.type for url, p in validator.profiles.items()
                       if url.startswith(CANONICAL_BASE)}


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_produces_no_issue(path: Path) -> None:
    assert default_validator().validate_resource(_load(path)) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_produces_exactly_the_expected_issues(path: Path) -> None:
    expected = _load(path.with_suffix(".expected.json"))["issues"]
    issues = default_validator().validate_resource(_load(path))
    found = [{"severity": i.severity, "message_id": i.message_id, "expression": i.expression[0]}
             for i in issues]  # fmt: skip
    assert sorted(found, key=str) == sorted(expected, key=str)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_json_schema_accepts_valid_example(path: Path) -> None:
    assert _schema_errors(_load(path)) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_json_schema_rejects_structurally_invalid_example(path: Path) -> None:
    if path.stem not in SCHEMA_DETECTS:
        pytest.skip("fault not expressible in JSON Schema (invariant or terminology)")
    assert _schema_errors(_load(path))


def _generated_resources(tmp_path: Path) -> list[dict[str, Any]]:
    generate(20, 3, tmp_path)
    lines = [line for part in sorted(tmp_path.glob("*.ndjson")) for line in part.open()]
    return [e["resource"] for line in lines for e in json.loads(line)["entry"]]


def test_generated_visit_bundles_validate_without_errors(tmp_path: Path) -> None:
    validator = default_validator()
    errors = [(r["resourceType"], i) for r in _generated_resources(tmp_path)
              for i in validator.validate_resource(r) if i.severity == "error"]  # fmt: skip
    assert errors == []


def test_native_invariants_agree_with_fhirpath_on_examples_and_generated_visits(
    tmp_path: Path,
) -> None:
    validator = default_validator()
    resources = [_load(p) for p in (*VALID, *INVALID)] + _generated_resources(tmp_path)[:150]
    disagreements = []
    for url, profile in validator.profiles.items():
        if not url.startswith(CANONICAL_BASE):
            continue  # R4's own profiles: test_vital_signs_twins_agree_with_typed_fhirpath
        for rule in _invariants(profile.rules):
            compiled = fhirpathpy.compile(rule.expression)
            for resource in (r for r in resources if r["resourceType"] == profile.type):
                root = (resource, resource["resourceType"])
                for node, expr in select(root, rule.context):
                    by_fhirpath = False not in compiled(node, {"resource": resource})
                    if by_fhirpath != rule.evaluate(node, resource):
                        disagreements.append((rule.key, expr))
    assert disagreements == []


def _invariants(rules: Any) -> list[InvariantRule]:
    found: list[InvariantRule] = []
    for rule in rules:
        if isinstance(rule, InvariantRule):
            found.append(rule)
        elif isinstance(rule, SliceGroupRule):
            for piece in rule.slices:
                found.extend(_invariants(piece.rules))
    return found


def test_unknown_profile_url_is_an_error() -> None:
    issues = default_validator().validate({"resourceType": "Basic"}, ["https://x.test/sd/nope"])
    assert [(i.severity, i.message_id) for i in issues] == [("error", "MSG_PROFILE_UNKNOWN")]


def test_validator_loads_profiles_from_a_given_folder(tmp_path: Path) -> None:
    validator = ProfileValidator.from_directory(tmp_path)
    assert validator.profiles  # R4's own profiles, always known
    assert all(url.startswith("http://hl7.org/fhir/StructureDefinition/")
               for url in validator.profiles)


def test_vital_signs_twins_read_value_as_the_choice() -> None:
    """vs-2 and vs-3 read ``value`` as the choice ``value[x]`` (fhirpathpy without the R4
    model does not, and refused every vital sign); vs-1 wants a day at least."""
    from fhir_server.conformance.invariants import native_invariant

    vs_2 = native_invariant("vs-2", "(component.empty() and hasMember.empty()) implies "
                                    "(dataAbsentReason.exists() or value.exists())")
    vs_3 = native_invariant("vs-3", "value.exists() or dataAbsentReason.exists()")
    vs_1 = native_invariant("vs-1", "($this as dateTime).toString().length() >= 8")
    assert vs_1 is not None and vs_2 is not None and vs_3 is not None
    assert vs_2({"valueQuantity": {"value": 1}}, {})
    assert vs_2({"dataAbsentReason": {"text": "x"}}, {})
    assert vs_2({"component": [{}]}, {})
    assert not vs_2({"status": "final"}, {})
    assert vs_3({"valueString": "a"}, {}) and not vs_3({"code": {"text": "c"}}, {})
    assert vs_1("2026-03-01", {}) and not vs_1("2026-03", {}) and vs_1({"start": "2026"}, {})


def _paths(rules: Any) -> set[tuple[str, ...]]:
    """Every path a rule walks from its root (slice rules from the root of their items)."""
    found: set[tuple[str, ...]] = set()
    for rule in rules:
        for name in ("parent", "path", "context"):
            found.add(getattr(rule, name, ()))
        if isinstance(rule, SliceGroupRule):
            found.add((*rule.parent, rule.name))
            for piece in rule.slices:
                found |= {(*rule.parent, rule.name, *p) for p in _paths(piece.rules)}
    return found


def _eager_select(value: Any, expr: str, path: tuple[str, ...]) -> list[tuple[Any, str]]:
    """A plain reference walk that formats every FHIRPath as it goes."""
    if not path:
        return [(value, expr)]
    name, rest = path[0], path[1:]
    if not isinstance(value, dict):
        return []
    stem = name.removesuffix("[x]")
    keys = [k for k in value if k == name or (name.endswith("[x]") and k.startswith(stem)
                                              and k[len(stem):][:1].isupper())]  # fmt: skip
    out: list[tuple[Any, str]] = []
    for key in keys:
        items = value[key] if isinstance(value[key], list) else [value[key]]
        for i, item in enumerate(items):
            at = f"{expr}.{key}[{i}]" if isinstance(value[key], list) else f"{expr}.{key}"
            out.extend(_eager_select(item, at, rest))
    return out


def test_select_renders_the_same_paths_as_a_plain_walk(tmp_path: Path) -> None:
    validator = default_validator()
    resources = [_load(p) for p in (*VALID, *INVALID)] + _generated_resources(tmp_path)[:200]
    for profile in validator.profiles.values():
        for path in sorted(_paths(profile.rules)):
            for resource in (r for r in resources if r["resourceType"] == profile.type):
                root = (resource, resource["resourceType"])
                assert select(root, path) == _eager_select(resource, profile.type, path)

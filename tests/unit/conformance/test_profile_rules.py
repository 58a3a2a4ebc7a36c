"""Table-driven checks of the compiled profile rules, one small resource at a time."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fhir_server.conformance import profile_rules as r
from fhir_server.conformance import slicing as sl
from fhir_server.errors import Issue


def _run(rule: r.Rule, resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    issues: list[Issue] = []
    rule.check((resource, resource["resourceType"]), resource, issues)
    return [(i.severity, i.message_id, i.expression[0]) for i in issues]


def _unknown(system: str | None, code: str) -> tuple[str, str, str]:
    return ("warning", "MSG_ICD10_unknown", "unknown")


def _never(node: Any, resource: dict[str, Any]) -> bool:
    return False


CARD = r.CardinalityRule((), "name", 1, 2, "name")
CCCD = sl.Slice(
    "cccd",
    0,
    1,
    value="urn:cccd",
    rules=[r.RegexRule(("value",), re.compile(r"^\d{12}$"), "MSG_PROFILE_SLICE")],
)
SLICES = sl.SliceGroupRule((), "identifier", "system", (CCCD,))
#: A slice told by several keys: a system format and a code among the type's codings.
INSURANCE = sl.Slice("bhyt", 1, 1, keys=(
    (("system",), "regex", re.compile(r"^urn:bhyt:")),
    (("type", "coding", "code"), "fixed", "HC"),
))
BY_KEYS = sl.SliceGroupRule((), "identifier", "", (INSURANCE,), "vn-patient")
_HC = {"coding": [{"code": "MR"}, {"code": "HC"}]}
CASES = [
    ("name missing", CARD, {"resourceType": "Patient"},
     [("error", "MSG_PROFILE_CARDINALITY", "Patient.name")]),
    ("name within bounds", CARD, {"resourceType": "Patient", "name": [{}]}, []),
    ("too many names", CARD, {"resourceType": "Patient", "name": [{}, {}, {}]},
     [("error", "MSG_PROFILE_CARDINALITY", "Patient.name")]),
    ("slice value malformed", SLICES,
     {"resourceType": "Patient", "identifier": [{"system": "urn:cccd", "value": "12"}]},
     [("error", "MSG_PROFILE_SLICE", "Patient.identifier[0].value")]),
    ("slice repeated", SLICES,
     {"resourceType": "Patient", "identifier": [{"system": "urn:cccd", "value": "1" * 12}] * 2},
     [("error", "MSG_PROFILE_CARDINALITY", "Patient.identifier")]),
    ("other systems ignored", SLICES,
     {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "12"}]}, []),
    ("slice taken by every key", BY_KEYS,
     {"resourceType": "Patient", "identifier": [{"system": "urn:bhyt:1", "type": _HC}]}, []),
    ("slice missing a key", BY_KEYS,
     {"resourceType": "Patient", "identifier": [{"system": "urn:bhyt:1"},
                                                {"system": "urn:x", "type": _HC}]},
     [("error", "MSG_PROFILE_CARDINALITY", "Patient.identifier")]),
    ("pattern met", r.PatternRule(("type",), {"coding": [{"code": "A"}]}, False),
     {"resourceType": "Coverage", "type": {"coding": [{"code": "B"}, {"code": "A"}]}}, []),
    ("pattern missed", r.PatternRule(("type",), {"coding": [{"code": "A"}]}, False),
     {"resourceType": "Coverage", "type": {"coding": [{"code": "B"}]}},
     [("error", "MSG_PROFILE_PATTERN", "Coverage.type")]),
    ("choice type refused", r.TypeRule((), "value[x]", frozenset({"Quantity"})),
     {"resourceType": "Observation", "valueString": "x"},
     [("error", "MSG_PROFILE_TYPE", "Observation.valueString")]),
    ("required binding missed",
     r.BindingRule(("gender",), "required", "vs", lambda s, c: ("warning", "X", "no")),
     {"resourceType": "Patient", "gender": "x"},
     [("error", "MSG_PROFILE_BINDING", "Patient.gender")]),
    ("extensible binding warns",
     r.BindingRule(("code",), "extensible", "vs", _unknown),
     {"resourceType": "Condition", "code": {"coding": [{"system": "s", "code": "c"}]}},
     [("warning", "MSG_ICD10_unknown", "Condition.code")]),
    ("invariant false", r.InvariantRule((), "k", "warning", "h", "false", "MSG_X", _never),
     {"resourceType": "Patient"}, [("warning", "MSG_X", "Patient")]),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "resource", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_rule_reports_exactly_the_expected_issues(
    rule: r.Rule, resource: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    assert _run(rule, resource) == expected


def test_select_follows_arrays_and_choice_types() -> None:
    resource = {"resourceType": "Observation", "component": [{"valueQuantity": {"value": 1}}]}
    found = r.select((resource, "Observation"), ("component", "value[x]", "value"))
    assert found == [(1, "Observation.component[0].valueQuantity.value")]


def test_expression_renders_a_location_built_while_walking() -> None:
    location: r.Location = ((("Patient", "contact", 1), "telecom", 0), "value", None)
    assert r.expression(location) == "Patient.contact[1].telecom[0].value"
    assert r.expression("Patient") == "Patient"


def test_issues_of_nested_slices_carry_their_full_path_and_text() -> None:
    phone = sl.Slice("phone", 1, 1, value="phone",
                    rules=[r.RegexRule(("value",), re.compile(r"^0\d{9}$"))])  # fmt: skip
    rule = sl.SliceGroupRule(("contact",), "telecom", "system", (phone,))
    resource = {"resourceType": "Patient", "contact": [
        {"telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "12"}]},
        {"telecom": {"system": "phone", "value": "0912345678"}},
        {},
    ]}  # fmt: skip
    issues: list[Issue] = []
    rule.check((resource, "Patient"), resource, issues)
    where = "Patient.contact[0].telecom[1].value"
    assert issues == [
        Issue("error", "value", "MSG_PROFILE_PATTERN",
              f"{where}: '12' does not match ^0\\d{{9}}$", (where,)),
        Issue("error", "required", "MSG_PROFILE_CARDINALITY",
              "Patient.contact[2].telecom:phone: found 0, allowed 1..1",
              ("Patient.contact[2].telecom",)),
    ]  # fmt: skip


def test_cardinality_counts_every_type_of_a_choice_and_every_array_item() -> None:
    rule = r.CardinalityRule(("component",), "value[x]", 1, 1, "value")
    resource = {"resourceType": "Observation", "component": [
        {"valueString": "a", "valueInteger": 1}, {"valueQuantity": [{}, {}]}, {"value": 1},
        {"valueString": "b"},
    ]}  # fmt: skip
    issues: list[Issue] = []
    rule.check((resource, "Observation"), resource, issues)
    assert [(i.code, i.diagnostics, i.expression) for i in issues] == [
        ("structure", "value: found 2, allowed 1..1", ("Observation.component[0].value",)),
        ("structure", "value: found 2, allowed 1..1", ("Observation.component[1].value",)),
        ("required", "value: found 0, allowed 1..1", ("Observation.component[2].value",)),
    ]

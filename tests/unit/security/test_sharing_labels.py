"""The sensitive labels a written resource gets (``SharingRules.label``): every rule one of
its top-level codes falls under, in the rules' order, whatever else the resource holds."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.security.sharing import LabelRule, SharingRules

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RULES = SharingRules.configured()


def _codes(resource: dict[str, Any]) -> list[str]:
    return [s["code"] for s in resource.get("meta", {}).get("security", [])]


def _reference_label(rules: SharingRules, resource: dict[str, Any]) -> None:
    """The rule as the documentation states it, one rule at a time over every coding."""
    codings = []
    for name in rules.elements:
        value = resource.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("coding"), list):
                codings += [c for c in item["coding"] if isinstance(c, dict)]
    found = [r.label for r in rules.rules
             if any(r.matches(c.get("system"), c.get("code")) for c in codings)]
    if found:
        meta = dict(resource.get("meta") or {})
        security = list(meta.get("security") or [])
        present = {(s.get("system"), s.get("code")) for s in security}
        security += [dict(x) for x in found if (x["system"], x["code"]) not in present]
        meta["security"] = security
        resource["meta"] = meta


def test_a_code_of_each_rule_gets_its_label_in_rule_order() -> None:
    resource = {"resourceType": "Condition", "code": {"coding": [
        {"system": ICD10, "code": "O02.1"}, {"system": ICD10, "code": "F32.9"},
        {"system": LOINC, "code": "8480-6"}]},
        "category": [{"coding": [{"system": ICD10, "code": "B20"}]}]}
    RULES.label(resource)
    assert _codes(resource) == ["HIV", "PSY", "SEX"]


def test_other_systems_non_strings_and_plain_codes_get_nothing() -> None:
    resource = {"resourceType": "Observation", "code": {"coding": [
        {"system": LOINC, "code": "8480-6"}, {"system": {"not": "a string"}, "code": "B20"},
        {"system": None, "code": "F32"}, {"system": ICD10, "code": 20}, "B20"]},
        "note": [{"text": "F32"}]}
    before = copy.deepcopy(resource)
    RULES.label(resource)
    assert resource == before


def test_labels_already_there_stay_and_are_not_repeated() -> None:
    resource = {"resourceType": "Condition",
                "meta": {"security": [{"system": ACT, "code": "PSY"},
                                      {"system": "urn:x", "code": "kept"}]},
                "code": {"coding": [{"system": ICD10, "code": "F20"},
                                    {"system": ICD10, "code": "F21"}]}}
    RULES.label(resource)
    assert _codes(resource) == ["PSY", "kept"]


def test_a_deployment_without_rules_labels_nothing() -> None:
    rules = SharingRules(elements=("code",), rules=())
    resource = {"resourceType": "Condition", "code": {"coding": [{"system": ICD10, "code": "B20"}]}}
    rules.label(resource)
    assert "meta" not in resource


CODINGS = st.lists(st.fixed_dictionaries({
    "system": st.sampled_from([ICD10, LOINC, "http://www.whocc.no/atc", "urn:other", None, 3]),
    "code": st.one_of(st.sampled_from(["B20", "B24.1", "F", "F3.2", "O00", "O0.1", "75622-1",
                                       "J05AE01", "Z00", "7917-8", ""]), st.integers())}),
    max_size=4)
ELEMENT = st.one_of(st.fixed_dictionaries({"coding": CODINGS}),
                    st.lists(st.fixed_dictionaries({"coding": CODINGS}), max_size=3),
                    st.text(max_size=3), st.none())
RESOURCES = st.dictionaries(st.sampled_from(
    ["code", "category", "valueCodeableConcept", "vaccineCode", "note", "focus"]), ELEMENT)


@settings(max_examples=300, deadline=None)
@given(RESOURCES, st.sampled_from([RULES, SharingRules(elements=("code", "category"), rules=(
    LabelRule({"system": ACT, "code": "X"}, ICD10, frozenset({"Z00"}), ("F3",)),
    LabelRule({"system": ACT, "code": "Y"}, LOINC, frozenset({"7917-8"})),
    LabelRule({"system": ACT, "code": "X"}, LOINC, prefixes=("75",))))]))
def test_labels_are_those_of_every_rule_tried_on_every_coding(
    resource: dict[str, Any], rules: SharingRules
) -> None:
    expected = copy.deepcopy(resource)
    _reference_label(rules, expected)
    rules.label(resource)
    assert resource == expected

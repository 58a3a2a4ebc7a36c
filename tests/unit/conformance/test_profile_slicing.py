"""How any profile's slices and bindings compile, whatever profile declares them: slices told
apart by the value or pattern at any discriminator path (``code``, ``code.coding.code``,
``$this``), slices within slices, discriminators the validator cannot evaluate, and bindings
on a choice element."""

from __future__ import annotations

from typing import Any

from fhir_server.conformance.profiles import ProfileValidator
from fhir_server.conformance.terminology import Terminology

URL = "https://example.org/StructureDefinition/test"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
Json = dict[str, Any]


def _validator(*elements: Json) -> ProfileValidator:
    sd = {"resourceType": "StructureDefinition", "id": "test", "url": URL, "kind": "resource",
          "type": "Observation", "derivation": "constraint",
          "differential": {"element": [{"id": "Observation", "path": "Observation"},
                                       *elements]}}
    units = {"https://example.org/ValueSet/units": {UCUM: ["/min", "mm[Hg]"]}}
    return ProfileValidator([sd], Terminology([]), units)


def _e(id: str, **parts: Any) -> Json:
    path = ".".join(segment.partition(":")[0] for segment in id.split("."))
    return {"id": f"Observation.{id}", "path": f"Observation.{path}", **parts}


def _errors(validator: ProfileValidator, resource: Json) -> list[tuple[str, str]]:
    issues = validator.validate({"resourceType": "Observation", **resource}, [URL])
    return [(i.message_id, i.diagnostics) for i in issues if i.severity == "error"]


def _slicing(*paths: str, type: str = "value") -> Json:
    return {"discriminator": [{"type": type, "path": p} for p in paths]}


PULSE = {"coding": [{"system": LOINC, "code": "8867-4"}]}


def _component(code: str, unit: str, *other_codes: str) -> Json:
    codings = [{"system": LOINC, "code": code}, *({"system": "urn:x", "code": c}
                                                  for c in other_codes)]  # fmt: skip
    return {"code": {"coding": codings}, "valueQuantity": {"value": 1, "code": unit}}


def test_a_slice_told_by_a_pattern_on_a_codeable_concept() -> None:
    validator = _validator(
        _e("component", slicing=_slicing("code", type="pattern")),
        _e("component:pulse", min=1, max="1"),
        _e("component:pulse.code", patternCodeableConcept=PULSE),
        _e("component:pulse.valueQuantity.code", fixedCode="/min"))
    assert _errors(validator, {"component": [_component("8867-4", "/min", "x")]}) == []
    assert _errors(validator, {"component": [_component("8867-4", "mm[Hg]")]}) == [
        ("MSG_PROFILE_PATTERN", "test: Observation.component[0].valueQuantity.code does not "
                                "match the fixed value '/min'")]
    assert _errors(validator, {"component": [_component("8480-6", "/min")]}) == [
        ("MSG_PROFILE_CARDINALITY",
         "test: Observation.component:pulse: found 0, allowed 1..1")]


def test_slices_within_slices_check_only_the_items_they_take() -> None:
    validator = _validator(
        _e("component", slicing=_slicing("code.coding.code", "code.coding.system")),
        _e("component:pulse", min=1, max="1"),
        _e("component:pulse.code.coding", slicing=_slicing("code", "system")),
        _e("component:pulse.code.coding:loinc", min=1, max="1"),
        _e("component:pulse.code.coding:loinc.system", fixedUri=LOINC),
        _e("component:pulse.code.coding:loinc.code", fixedCode="8867-4", min=1))
    other_coding = _component("8867-4", "/min", "pulse-rate")  # urn:x coding left alone
    assert _errors(validator, {"component": [other_coding]}) == []
    twice = _component("8867-4", "/min")
    twice["code"]["coding"].append({"system": LOINC, "code": "8867-4"})
    assert _errors(validator, {"component": [twice]}) == [
        ("MSG_PROFILE_CARDINALITY",
         "test: Observation.component[0].code.coding:loinc: found 2, allowed 1..1")]


def test_a_slice_of_this_takes_items_by_their_own_pattern() -> None:
    validator = _validator(
        _e("category", slicing=_slicing("$this", type="pattern")),
        _e("category:vital", min=1, max="1", patternCodeableConcept=PULSE))
    assert _errors(validator, {"category": [{"text": "a"}, PULSE]}) == []
    assert _errors(validator, {"category": [PULSE, PULSE]}) == [
        ("MSG_PROFILE_CARDINALITY", "test: Observation.category:vital: found 2, allowed 1..1")]


def test_slices_whose_discriminator_cannot_be_evaluated_are_not_checked() -> None:
    validator = _validator(
        _e("hasMember", slicing=_slicing("resolve().code")),
        _e("hasMember:pulse", min=1, max="1"),
        _e("component", slicing=_slicing("value", type="type")),
        _e("component:quantity", min=1),
        _e("note:unsliced", min=1))  # a slice without a slicing (nor an extension's url)
    assert _errors(validator, {"hasMember": [{"reference": "Observation/1"}]}) == []


def test_a_binding_on_a_choice_checks_its_coded_types_only() -> None:
    binding = {"strength": "required", "valueSet": "https://example.org/ValueSet/units"}
    validator = _validator(_e("component.value[x]", binding=binding))
    valid = [{"valueQuantity": {"value": 1, "system": UCUM, "code": "/min"}},
             {"valueQuantity": {"value": 1, "unit": "beats"}},  # no coded unit: nothing to check
             {"valueString": "kPa"}]
    assert _errors(validator, {"component": valid}) == []
    invalid = [{"valueQuantity": {"value": 1, "system": UCUM, "code": "kPa"}},
               {"valueCodeableConcept": {"coding": [{"system": UCUM, "code": "kPa"}]}}]
    assert [m for m, _ in _errors(validator, {"component": invalid})] == [
        "MSG_PROFILE_BINDING", "MSG_PROFILE_BINDING"]


def test_a_binding_on_a_quantity_checks_its_coded_unit_only() -> None:
    binding = {"strength": "required", "valueSet": "https://example.org/ValueSet/units"}
    validator = _validator(_e("valueQuantity", binding=binding))
    assert _errors(validator, {"valueQuantity": {"value": 1, "unit": "beats"}}) == []
    assert _errors(validator, {"valueQuantity": {"value": 1, "system": UCUM, "code": "/min"}}) == []
    assert [m for m, _ in _errors(validator, {"valueQuantity": {"system": UCUM, "code": "Hz"}})
            ] == ["MSG_PROFILE_BINDING"]

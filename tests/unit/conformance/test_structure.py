"""Tests of the R4 tables (``fhir_server.conformance.structure``), the required bindings and the
generator that writes the tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.conformance import elements, structure
from fhir_server.errors import Issue

SHARED_R4 = Path(__file__).resolve().parents[3].parent / "shared" / "fhir-r4"
REPO = Path(__file__).resolve().parents[3]

Json = dict[str, Any]


# -- builders ----------------------------------------------------------------------------------


def a_patient(**changes: Any) -> Json:
    patient: Json = {
        "resourceType": "Patient",
        "id": "p1",
        "text": {"status": "generated", "div": "<div>x</div>"},
        "identifier": [{"use": "official", "system": "urn:x", "value": "1"}],
        "name": [{"use": "official", "family": "Nguyen", "given": ["Van", "An"]}],
        "telecom": [{"system": "phone", "value": "0900000000", "use": "mobile"}],
        "gender": "male",
        "birthDate": "1990-01-01",
        "address": [{"use": "home", "type": "physical", "city": "Ha Noi"}],
        "contact": [{"name": {"family": "Tran"}, "gender": "female"}],
    }
    patient.update(changes)
    return patient


def an_encounter(**changes: Any) -> Json:
    encounter: Json = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "statusHistory": [{"status": "arrived", "period": {"start": "2024-01-01"}}],
        "location": [{"location": {"reference": "Location/1"}, "status": "completed"}],
    }
    encounter.update(changes)
    return encounter


def expressions(issues: list[Issue]) -> list[tuple[str, ...]]:
    return [issue.expression for issue in issues]


# -- resource types, compartment, summary ------------------------------------------------------


def test_r4_resource_types_are_the_146_concrete_r4_types() -> None:
    types = structure.r4_resource_types()
    assert len(types) == 146
    assert {"Patient", "Binary", "Bundle", "Parameters", "MedicinalProduct"} <= types
    assert "EffectEvidenceSynthesis" in types


@pytest.mark.parametrize("not_r4", ["SubscriptionStatus", "Resource", "DomainResource"])
def test_r4_resource_types_exclude_abstract_and_r4b_types(not_r4: str) -> None:
    assert not_r4 not in structure.r4_resource_types()


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("Observation", {"subject", "performer"}),
        ("Patient", {"link"}),
        ("Encounter", {"subject"}),
        ("AllergyIntolerance", {"patient", "recorder", "asserter"}),
    ],
)
def test_patient_compartment_lists_the_spec_parameters(
    resource_type: str, params: set[str]
) -> None:
    assert params <= set(structure.patient_compartment_params()[resource_type])


def test_patient_compartment_omits_types_outside_it() -> None:
    compartment = structure.patient_compartment_params()
    assert "ActivityDefinition" not in compartment
    assert "_source" not in compartment


@pytest.mark.parametrize(
    ("resource_type", "included", "excluded"),
    [
        ("Patient", {"id", "meta", "name", "gender", "birthDate", "deceasedBoolean"}, {"photo"}),
        ("Observation", {"status", "code", "subject", "valueQuantity"}, {"note"}),
        ("Binary", {"id", "contentType"}, {"data", "url"}),
    ],
)
def test_summary_elements_are_the_is_summary_elements(
    resource_type: str, included: set[str], excluded: set[str]
) -> None:
    summary = structure.summary_elements(resource_type)
    assert included <= summary
    assert not excluded & summary


@pytest.mark.parametrize(
    ("resource_type", "mandatory"),
    [
        ("Observation", {"status", "code"}),
        ("Encounter", {"status", "class"}),
        ("Patient", set()),
    ],
)
def test_mandatory_elements_are_those_with_min_one(resource_type: str, mandatory: set[str]) -> None:
    assert structure.mandatory_elements(resource_type) == mandatory


def test_summary_of_unknown_type_is_empty() -> None:
    assert structure.summary_elements("NoSuchType") == frozenset()


# -- required bindings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        a_patient(),
        a_patient(gender="unknown"),
        an_encounter(),
        an_encounter(status="in-progress"),
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
    ],
)
def test_codes_in_the_required_value_set_pass(resource: Json) -> None:
    assert elements.check_required_bindings(resource) == []


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (a_patient(gender="xx"), "Patient.gender"),
        (an_encounter(status="bogus"), "Encounter.status"),
        ({"resourceType": "Observation", "status": "done"}, "Observation.status"),
        (
            an_encounter(location=[{"status": "active"}, {"status": "nope"}]),
            "Encounter.location[1].status",
        ),
        (a_patient(contact=[{"gender": "f"}]), "Patient.contact[0].gender"),
        (a_patient(telecom=[{"system": "pigeon"}]), "Patient.telecom[0].system"),
        (a_patient(text={"status": "draft", "div": "<div/>"}), "Patient.text.status"),
    ],
)
def test_code_outside_the_required_value_set_is_code_invalid(
    resource: Json, expression: str
) -> None:
    issues = elements.check_required_bindings(resource)
    assert [(i.code, i.message_id) for i in issues] == [("code-invalid", "MSG_CODE_INVALID")]
    assert expressions(issues) == [(expression,)]


def test_required_binding_in_a_recursive_element_is_checked() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "bad"}]}],
    }
    issues = elements.check_required_bindings(questionnaire)
    assert expressions(issues) == [("Questionnaire.item[0].item[0].type",)]


def test_required_binding_in_a_contained_resource_is_checked() -> None:
    encounter = an_encounter(contained=[a_patient(id="c1", gender="xx")])
    issues = elements.check_required_bindings(encounter)
    assert expressions(issues) == [("Encounter.contained[0].gender",)]


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@pytest.mark.parametrize(
    ("clinical_status", "valid"),
    [
        ({"coding": [{"system": CLINICAL, "code": "active"}]}, True),
        (
            {
                "coding": [
                    {"system": "urn:other", "code": "x"},
                    {"system": CLINICAL, "code": "resolved"},
                ]
            },
            True,
        ),
        ({"coding": [{"system": CLINICAL, "code": "cured"}]}, False),
        ({"coding": [{"code": "active"}]}, False),
        ({"coding": [{"system": "urn:other", "code": "active"}]}, False),
        ({"text": "text only"}, False),
    ],
)
def test_required_codeable_concept_needs_a_coding_from_the_value_set(
    clinical_status: Json, valid: bool
) -> None:
    condition = {"resourceType": "Condition", "clinicalStatus": clinical_status}
    issues = elements.check_required_bindings(condition)
    assert expressions(issues) == ([] if valid else [("Condition.clinicalStatus",)])


def test_resource_without_resource_type_has_no_binding_issues() -> None:
    assert elements.check_required_bindings({"gender": "xx"}) == []


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        # A datatype inside an extension value keeps its bindings.
        (
            a_patient(extension=[{"url": "u", "valueQuantity": {"value": 1, "comparator": "~"}}]),
            "Patient.extension[0].valueQuantity.comparator",
        ),
        # Count is a Quantity: it inherits Quantity.comparator's binding.
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "component": [{"code": {"text": "y"}, "valueQuantity": {"comparator": "=="}}],
            },
            "Observation.component[0].valueQuantity.comparator",
        ),
        # Resources in a Bundle are checked like contained ones.
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": a_patient(gender="xx")}],
            },
            "Bundle.entry[0].resource.gender",
        ),
        # Restored from R4 (the packaging lost it): EvidenceVariable.characteristic.groupMeasure.
        (
            {
                "resourceType": "EvidenceVariable",
                "status": "active",
                "characteristic": [{"definitionCanonical": "http://x", "groupMeasure": "max"}],
            },
            "EvidenceVariable.characteristic[0].groupMeasure",
        ),
    ],
)
def test_required_bindings_are_checked_wherever_the_datatype_occurs(
    resource: Json, expression: str
) -> None:
    assert expressions(elements.check_required_bindings(resource)) == [(expression,)]


# -- generator ---------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_R4.is_dir(), reason="needs the R4 definitions in ../shared")
def test_generator_reproduces_the_committed_tables(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts/generate_r4_tables.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.main(SHARED_R4, tmp_path)
    for generated in sorted(tmp_path.glob("*.json")):
        committed = REPO / "fhir_server/data/r4" / generated.name
        assert generated.read_text() == committed.read_text(), generated.name
        assert next(iter(json.loads(generated.read_text()))) == "_source"

"""Tests of the one-walk structural checker over the R4 element tables
(``fhir_server.conformance.elements``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy.models import models

from fhir_server.conformance import elements
from fhir_server.errors import Issue

REPO = Path(__file__).resolve().parents[3]

Json = dict[str, Any]


def a_patient(**changes: Any) -> Json:
    patient: Json = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"use": "official", "system": "urn:x", "value": "1"}],
        "name": [{"use": "official", "family": "Nguyen", "given": ["Van", "An"]}],
        "gender": "male",
        "birthDate": "1990-01-01",
        "address": [{"use": "home", "city": "Ha Noi"}],
    }
    patient.update(changes)
    return patient


def an_observation(**changes: Any) -> Json:
    observation: Json = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "pulse"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    observation.update(changes)
    return observation


def a_medicinal_product(**changes: Any) -> Json:
    product: Json = {
        "resourceType": "MedicinalProduct",
        "id": "mp1",
        "name": [{"productName": "Paracetamol 500 mg"}],
    }
    product.update(changes)
    return product


def without(resource: Json, *names: str) -> Json:
    return {k: v for k, v in resource.items() if k not in names}


def found(issues: list[Issue]) -> list[tuple[str, tuple[str, ...]]]:
    return [(issue.message_id, issue.expression) for issue in issues]


# -- valid resources ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        a_patient(),
        an_observation(),
        a_medicinal_product(),
        a_medicinal_product(
            meta={"lastUpdated": "2024-01-01T00:00:00Z"},
            specialMeasures=["keep cold"],
            _specialMeasures=[{"extension": [{"url": "http://x", "valueString": "y"}]}],
            extension=[{"url": "http://x", "valueDateTime": "2023-01-01"}],
            manufacturingBusinessOperation=[{"effectiveDate": "2023-01-01T10:00:00+07:00"}],
        ),
        # Primitive extensions: alone, aligned with nulls, a null value held by its extension.
        a_patient(_birthDate={"extension": [{"url": "u", "valueString": "approx"}]}),
        a_patient(name=[{"given": ["A", "B"], "_given": [None, {"id": "g2"}]}]),
        a_patient(name=[{"given": [None, "B"], "_given": [{"id": "g1"}, None]}]),
        a_patient(_gender={"id": "x"}),
        without(a_patient(_gender={"id": "x"}), "gender"),
        a_patient(multipleBirthInteger=0, deceasedBoolean=False),
        without(an_observation(valueInteger=-(2**31)), "valueQuantity"),
        an_observation(valueQuantity={"value": 1e300}),
        an_observation(effectiveInstant="2024-02-29T23:59:60.123+14:00"),
        an_observation(
            contained=[a_patient(id="c1")], subject={"reference": "#c1"}
        ),
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk= \nYWJj"},
        {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [
                {"resource": a_patient()},
                {
                    "response": {
                        "status": "200",
                        "outcome": {"resourceType": "Patient", "id": "any-resource"},
                    }
                },
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "r", "resource": an_observation()},
                {"name": "p", "part": [{"name": "q", "valueBoolean": True}]},
            ],
        },
        {
            "resourceType": "EvidenceVariable",
            "status": "draft",
            "characteristic": [
                {
                    "description": "adults",
                    "definitionCodeableConcept": {"text": "age >= 18"},
                    "participantEffectivePeriod": {"start": "2020"},
                    "timeFromStart": {"value": 1, "unit": "a"},
                    "groupMeasure": "mean",
                }
            ],
        },
    ],
)
def test_valid_resources_pass(resource: Json) -> None:
    assert elements.check_structure(resource) == []


# -- structural errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "message_id", "expression"),
    [
        # unknown elements, here and nested, and packaging additions that are not R4
        (a_patient(bogus=1), "MSG_UNKNOWN_ELEMENT", "Patient.bogus"),
        (a_patient(name=[{"family": "A", "x": 1}]), "MSG_UNKNOWN_ELEMENT", "Patient.name[0].x"),
        (a_medicinal_product(bogus=1), "MSG_UNKNOWN_ELEMENT", "MedicinalProduct.bogus"),
        (
            a_medicinal_product(name=[{"productName": "x", "extra": True}]),
            "MSG_UNKNOWN_ELEMENT",
            "MedicinalProduct.name[0].extra",
        ),
        (
            a_medicinal_product(meta={"project": "p1"}),
            "MSG_UNKNOWN_ELEMENT",
            "MedicinalProduct.meta.project",
        ),
        (
            {"resourceType": "ResearchStudy", "status": "active", "studyDesign": [{"text": "x"}]},
            "MSG_UNKNOWN_ELEMENT",
            "ResearchStudy.studyDesign",
        ),
        (
            {"resourceType": "Binary", "contentType": "text/plain", "url": "http://x"},
            "MSG_UNKNOWN_ELEMENT",
            "Binary.url",
        ),
        (
            a_medicinal_product(extension=[{"url": "u", "valueBogus": 1}]),
            "MSG_UNKNOWN_ELEMENT",
            "MedicinalProduct.extension[0].valueBogus",
        ),
        (a_medicinal_product(_name=[{}]), "MSG_UNKNOWN_ELEMENT", "MedicinalProduct._name"),
        (
            a_medicinal_product(_specialMeasures=[{"foo": 1}], specialMeasures=["x"]),
            "MSG_UNKNOWN_ELEMENT",
            "MedicinalProduct._specialMeasures[0].foo",
        ),
        (
            {"resourceType": "Patient", "name": [{"resourceType": "HumanName"}]},
            "MSG_UNKNOWN_ELEMENT",
            "Patient.name[0].resourceType",
        ),
        # cardinality: required, max, array versus single value
        (
            {"resourceType": "MedicinalProduct", "id": "x"},
            "MSG_CARDINALITY",
            "MedicinalProduct.name",
        ),
        (
            a_medicinal_product(name=[{"id": "n1"}]),
            "MSG_CARDINALITY",
            "MedicinalProduct.name[0].productName",
        ),
        ({"resourceType": "Observation", "code": {"text": "x"}}, "MSG_CARDINALITY",
         "Observation.status"),
        (
            a_patient(extension=[{"valueString": "x"}]),
            "MSG_CARDINALITY",
            "Patient.extension[0].url",
        ),
        (
            a_patient(modifierExtension=[{"valueString": "x"}]),
            "MSG_CARDINALITY",
            "Patient.modifierExtension[0].url",
        ),
        (
            {"resourceType": "EvidenceVariable", "status": "draft",
             "characteristic": [{"id": "c"}]},
            "MSG_CARDINALITY",
            "EvidenceVariable.characteristic[0].definition[x]",
        ),
        (
            a_medicinal_product(name={"productName": "x"}),
            "MSG_CARDINALITY",
            "MedicinalProduct.name",
        ),
        (a_patient(gender=["male"]), "MSG_CARDINALITY", "Patient.gender"),
        (a_patient(name={"family": "A"}), "MSG_CARDINALITY", "Patient.name"),
        (a_patient(name=[{"family": ["A"]}]), "MSG_CARDINALITY", "Patient.name[0].family"),
        (a_patient(name=[{"given": "A"}]), "MSG_CARDINALITY", "Patient.name[0].given"),
        (
            a_medicinal_product(domain=[{"code": "Human"}]),
            "MSG_CARDINALITY",
            "MedicinalProduct.domain",
        ),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
             "referenceRange": [{"low": {"value": 1}, "appliesTo": [{"text": "a"}],
                                 "age": [{"low": {"value": 1}}]}]},
            "MSG_CARDINALITY",
            "Observation.referenceRange[0].age",
        ),
        # choice elements: one variant only (a value and its own extension are one variant)
        (
            an_observation(valueString="72"),
            "MSG_CARDINALITY",
            "Observation.valueString",
        ),
        (
            a_patient(deceasedBoolean=True, _deceasedDateTime={"id": "x"}),
            "MSG_CARDINALITY",
            "Patient._deceasedDateTime",
        ),
        (
            a_patient(extension=[{"url": "u", "valueString": "a", "valueCode": "b"}]),
            "MSG_CARDINALITY",
            "Patient.extension[0].valueCode",
        ),
        # primitive values
        (a_patient(gender=5), "MSG_VALUE_INVALID", "Patient.gender"),
        (a_patient(birthDate="2023-02-30"), "MSG_VALUE_INVALID", "Patient.birthDate"),
        (a_patient(birthDate="2023-13-01"), "MSG_VALUE_INVALID", "Patient.birthDate"),
        (a_patient(birthDate="01/02/2023"), "MSG_VALUE_INVALID", "Patient.birthDate"),
        (a_patient(id="not valid!"), "MSG_VALUE_INVALID", "Patient.id"),
        (a_patient(id="x" * 65), "MSG_VALUE_INVALID", "Patient.id"),
        (a_medicinal_product(id="not valid!"), "MSG_VALUE_INVALID", "MedicinalProduct.id"),
        (
            an_observation(contained=[a_patient(id="bad id")]),
            "MSG_VALUE_INVALID",
            "Observation.contained[0].id",
        ),
        (a_patient(active="true"), "MSG_VALUE_INVALID", "Patient.active"),
        (a_patient(active=1), "MSG_VALUE_INVALID", "Patient.active"),
        (a_patient(multipleBirthInteger=True), "MSG_VALUE_INVALID", "Patient.multipleBirthInteger"),
        (a_patient(multipleBirthInteger=1.5), "MSG_VALUE_INVALID", "Patient.multipleBirthInteger"),
        (a_patient(multipleBirthInteger="2"), "MSG_VALUE_INVALID", "Patient.multipleBirthInteger"),
        (
            a_patient(multipleBirthInteger=2**31),
            "MSG_VALUE_INVALID",
            "Patient.multipleBirthInteger",
        ),
        (an_observation(valueQuantity={"value": "72"}), "MSG_VALUE_INVALID",
         "Observation.valueQuantity.value"),
        (an_observation(valueQuantity={"value": True}), "MSG_VALUE_INVALID",
         "Observation.valueQuantity.value"),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
             "component": [{"code": {"text": "y"}, "valueSampledData": {
                 "origin": {"value": 0}, "period": 1, "dimensions": 0}}]},
            "MSG_VALUE_INVALID",
            "Observation.component[0].valueSampledData.dimensions",
        ),
        (an_observation(issued="2024-01-01T10:00:00"), "MSG_VALUE_INVALID", "Observation.issued"),
        (an_observation(issued="2024-01-01"), "MSG_VALUE_INVALID", "Observation.issued"),
        (
            an_observation(effectiveDateTime="2024-01-01T10:00"),
            "MSG_VALUE_INVALID",
            "Observation.effectiveDateTime",
        ),
        (
            a_medicinal_product(extension=[{"url": "u", "valueDate": "2023-02-30"}]),
            "MSG_VALUE_INVALID",
            "MedicinalProduct.extension[0].valueDate",
        ),
        (
            a_medicinal_product(extension=[{"url": "u", "valueBoolean": "true"}]),
            "MSG_VALUE_INVALID",
            "MedicinalProduct.extension[0].valueBoolean",
        ),
        (
            without(an_observation(valueTime="25:00:00"), "valueQuantity"),
            "MSG_VALUE_INVALID",
            "Observation.valueTime",
        ),
        (
            {"resourceType": "Binary", "contentType": "text/plain", "data": "abc"},
            "MSG_VALUE_INVALID",
            "Binary.data",
        ),
        (
            a_patient(identifier=[{"system": "has space", "value": "1"}]),
            "MSG_VALUE_INVALID",
            "Patient.identifier[0].system",
        ),
        (a_patient(name=[{"given": [1]}]), "MSG_VALUE_INVALID", "Patient.name[0].given[0]"),
        # objects where objects belong, resources where resources belong
        (a_medicinal_product(type="x"), "MSG_OBJECT_EXPECTED", "MedicinalProduct.type"),
        (a_patient(name=["Nguyen"]), "MSG_OBJECT_EXPECTED", "Patient.name[0]"),
        (a_patient(_birthDate="x"), "MSG_OBJECT_EXPECTED", "Patient._birthDate"),
        (
            a_medicinal_product(contained=[{"id": "x"}]),
            "MSG_RESOURCE_TYPE",
            "MedicinalProduct.contained[0]",
        ),
        (
            an_observation(contained=[{"resourceType": "Nope"}]),
            "MSG_RESOURCE_TYPE",
            "Observation.contained[0]",
        ),
        (
            a_medicinal_product(contained=[{"resourceType": "MedicinalProduct", "id": "c"}]),
            "MSG_CARDINALITY",
            "MedicinalProduct.contained[0].name",
        ),
        (
            {"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": a_patient(bogus=1)}]},
            "MSG_UNKNOWN_ELEMENT",
            "Bundle.entry[0].resource.bogus",
        ),
        (
            {"resourceType": "Parameters",
             "parameter": [{"name": "r", "resource": without(an_observation(), "status")}]},
            "MSG_CARDINALITY",
            "Parameters.parameter[0].resource.status",
        ),
        (
            {"resourceType": "Parameters",
             "parameter": [{"name": "a", "part": [{"name": "b", "valueInteger": "1"}]}]},
            "MSG_VALUE_INVALID",
            "Parameters.parameter[0].part[0].valueInteger",
        ),
        # JSON rules: no null, "", blank string, [] or {}
        (a_patient(name=[]), "MSG_EMPTY_VALUE", "Patient.name"),
        (a_medicinal_product(name=[]), "MSG_EMPTY_VALUE", "MedicinalProduct.name"),
        (a_patient(gender=""), "MSG_EMPTY_VALUE", "Patient.gender"),
        (a_patient(name=[{"family": "  "}]), "MSG_EMPTY_VALUE", "Patient.name[0].family"),
        (a_patient(name=[{"given": ["A", ""]}]), "MSG_EMPTY_VALUE", "Patient.name[0].given[1]"),
        (a_patient(gender=None), "MSG_EMPTY_VALUE", "Patient.gender"),
        (a_patient(name=None), "MSG_EMPTY_VALUE", "Patient.name"),
        (a_patient(name=[None]), "MSG_EMPTY_VALUE", "Patient.name[0]"),
        (a_patient(name=[{}]), "MSG_EMPTY_VALUE", "Patient.name[0]"),
        (a_patient(maritalStatus={}), "MSG_EMPTY_VALUE", "Patient.maritalStatus"),
        (a_patient(_birthDate={}), "MSG_EMPTY_VALUE", "Patient._birthDate"),
        (a_patient(contained=[{}]), "MSG_EMPTY_VALUE", "Patient.contained[0]"),
        (
            a_patient(name=[{"given": ["A", None]}]),
            "MSG_EMPTY_VALUE",
            "Patient.name[0].given[1]",
        ),
        (
            a_patient(name=[{"given": ["A", None], "_given": [{"id": "x"}, None]}]),
            "MSG_EMPTY_VALUE",
            "Patient.name[0].given[1]",
        ),
        # primitive extension arrays align with their values
        (
            a_patient(name=[{"given": ["A", "B"], "_given": [{"id": "x"}]}]),
            "MSG_ARRAY_LENGTH",
            "Patient.name[0]._given",
        ),
        (
            a_patient(name=[{"given": ["A"], "_given": {"id": "x"}}]),
            "MSG_CARDINALITY",
            "Patient.name[0]._given",
        ),
        # the narrative of any Narrative, a section's included
        (
            {"resourceType": "Composition", "status": "final", "type": {"text": "x"},
             "date": "2024-01-01", "author": [{"display": "a"}], "title": "t",
             "section": [{"text": {"status": "generated", "div": "<div>no namespace</div>"}}]},
            "MSG_NARRATIVE_NAMESPACE",
            "Composition.section[0].text.div",
        ),
    ],
)
def test_structural_error_is_reported_with_its_expression(
    resource: Json, message_id: str, expression: str
) -> None:
    assert found(elements.check_structure(resource)) == [(message_id, (expression,))]


def test_nested_backbone_and_content_reference_are_checked() -> None:
    ingredient = {
        "resourceType": "MedicinalProductIngredient",
        "role": {"text": "active"},
        "substance": {
            "code": {"text": "x"},
            "strength": [{"presentation": {"numerator": {"value": 1}}, "nope": 1}],
        },
    }
    assert found(elements.check_structure(ingredient)) == [
        ("MSG_UNKNOWN_ELEMENT", ("MedicinalProductIngredient.substance.strength[0].nope",))
    ]
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "typo": "x"}]}],
    }
    assert found(elements.check_structure(questionnaire)) == [
        ("MSG_UNKNOWN_ELEMENT", ("Questionnaire.item[0].item[0].typo",)),
        ("MSG_CARDINALITY", ("Questionnaire.item[0].item[0].type",)),
    ]


def test_every_problem_is_reported_in_document_order() -> None:
    patient = a_patient(gender="xx", birthDate="1990-02-30", bogus=True, name=[{"given": [""]}])
    assert found(elements.check_structure(patient)) == [
        ("MSG_EMPTY_VALUE", ("Patient.name[0].given[0]",)),
        ("MSG_CODE_INVALID", ("Patient.gender",)),
        ("MSG_VALUE_INVALID", ("Patient.birthDate",)),
        ("MSG_UNKNOWN_ELEMENT", ("Patient.bogus",)),
    ]


def test_unknown_resource_type_is_reported() -> None:
    assert found(elements.check_structure({"resourceType": "Nope"})) == [
        ("MSG_UNKNOWN_TYPE", ("resourceType",))
    ]


def test_diagnostics_name_the_element_and_the_rule() -> None:
    (unknown,) = elements.check_structure(a_patient(bogus=1))
    expected = "Patient.bogus: unknown element: the FHIR R4 Patient has no 'bogus'"
    assert unknown.diagnostics == expected
    (invalid,) = elements.check_structure(a_patient(birthDate="2023-02-30"))
    assert invalid.diagnostics == 'Patient.birthDate: "2023-02-30" is not a valid date'
    assert (invalid.severity, invalid.code) == ("error", "value")
    (missing,) = elements.check_structure({"resourceType": "Observation", "code": {"text": "x"}})
    assert missing.code == "required"


def test_a_long_invalid_base64_value_is_rejected() -> None:
    # R4's own base64Binary regex backtracks exponentially on this (the suite would hang);
    # the checker uses an equivalent pattern without nested optional whitespace.
    data = "QUJD\n" * 20_000 + "!"
    issues = elements.check_structure({"resourceType": "Binary", "contentType": "x", "data": data})
    assert found(issues) == [("MSG_VALUE_INVALID", ("Binary.data",))]


# -- the tables --------------------------------------------------------------------------------


def test_the_tables_cover_every_resource_type_backbone_and_datatype() -> None:
    names = elements.structure_names()
    assert {"Patient", "Patient.contact", "Bundle.entry.request", "Quantity", "Age"} <= names
    assert {"Timing.repeat", "Extension", "Element", "BackboneElement", "Narrative"} <= names
    assert not {"SubscriptionStatus", "Resource.id"} & names


def test_the_tables_name_the_elements_of_fhirpathpys_r4_model() -> None:
    """Every JSON name and type of the tables matches fhirpathpy's R4 model (path2Type),
    which was derived from R4 4.0.1 independently of the packaging the generator reads."""
    table = json.loads((REPO / "fhir_server/data/r4/r4_elements.json").read_text("utf-8"))
    structures = {k: v for k, v in table.items() if not k.startswith("_")}

    def members(path: str | None) -> dict[str, Any]:
        if path is None:
            return {}
        base, own = structures[path]
        return {**members(base), **own}

    ours: dict[str, str] = {}
    for path in structures:
        for name, (_, _, types) in members(path).items():
            if types[0].startswith("#") or types in (["BackboneElement"], ["Element"]):
                continue
            for code in types:
                json_name = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
                ours[f"{path}.{json_name}"] = code
    theirs = {
        path: code
        for path, code in models["r4"]["path2Type"].items()
        if path.split(".", 1)[0] in structures
        # fhirpathpy lists ElementDefinition's own extensions as members of ElementDefinition
        and not path.startswith("ElementDefinition.extension.")
    }
    assert sorted(set(ours) ^ set(theirs)) == []
    differences = {p: (c, theirs[p]) for p, c in ours.items() if theirs[p] != c}
    # fhirpathpy types id, Extension.url and the like as System.String
    assert {p: d for p, d in differences.items() if d[1] != "System.String"} == {}

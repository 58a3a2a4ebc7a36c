"""Tests of the base R4 invariants (``conformance.base_invariants`` and its Python twins)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.conformance import base_invariant_twins, base_invariants
from fhir_server.errors import InvalidResource
from fhir_server.resources import validate_structure

REPO = Path(__file__).resolve().parents[3]
Json = dict[str, Any]


def examples() -> list[Json]:
    found = [
        json.loads(p.read_text("utf-8")) for p in sorted((REPO / "examples/valid").glob("*.json"))
    ]
    bundle = json.loads((REPO / "examples/visit-bundle.json").read_text("utf-8"))
    return found + [entry["resource"] for entry in bundle["entry"]]


def errors(resource: Json) -> set[tuple[str, str]]:
    issues = base_invariants.check_invariants(resource)
    return {(i.message_id, i.expression[0]) for i in issues if i.severity == "error"}


ORG = {"resourceType": "Organization", "id": "org", "name": "BV"}
OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
PAT = {"resourceType": "Patient"}
REF_ORG = {"managingOrganization": {"reference": "#org"}}
MR = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/1"},
    "medicationCodeableConcept": {"text": "x"},
}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION = {"resourceType": "Condition", "subject": {"reference": "Patient/1"}}
BACK_REF = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "#"}}  # fmt: skip
POST = {"method": "POST", "url": "Organization"}


def period(start: str, end: str) -> Json:
    return OBS | {"effectivePeriod": {"start": start, "end": end}}


def status(code: str) -> Json:
    return {"coding": [{"system": CLINICAL, "code": code}]}


# (name, broken resource, expected (message id, FHIRPath), valid counterpart)
CASES: list[tuple[str, Json, tuple[str, str], Json]] = [
    (
        "pat-1 contact needs details",
        PAT | {"contact": [{"gender": "male"}]},
        ("MSG_INVARIANT_PAT_1", "Patient.contact[0]"),
        PAT | {"contact": [{"name": {"text": "A"}}]},
    ),
    (
        "obs-6 dataAbsentReason only without value",
        OBS | {"valueString": "1", "dataAbsentReason": {"text": "x"}},
        ("MSG_INVARIANT_OBS_6", "Observation"),
        OBS | {"dataAbsentReason": {"text": "x"}},
    ),
    (
        "obs-7 no component with the observation's code",
        OBS
        | {
            "code": {"coding": [{"system": "s", "code": "c"}]},
            "valueString": "1",
            "component": [{"code": {"coding": [{"system": "s", "code": "c"}]}}],
        },
        ("MSG_INVARIANT_OBS_7", "Observation"),
        OBS
        | {
            "code": {"coding": [{"system": "s", "code": "c"}]},
            "component": [{"code": {"coding": [{"system": "s", "code": "c"}]}}],
        },
    ),
    (
        "per-1 start after end",
        period("2024-02-01", "2024-01-01"),
        ("MSG_INVARIANT_PER_1", "Observation.effectivePeriod"),
        period("2024-01-01", "2024-01-01T10:00:00+07:00"),
    ),
    (
        "per-1 across time zones",
        period("2024-01-01T10:00:00+07:00", "2024-01-01T02:00:00Z"),
        ("MSG_INVARIANT_PER_1", "Observation.effectivePeriod"),
        period("2024-01-01T10:00:00+07:00", "2024-01-01T04:00:00Z"),
    ),
    (
        "dom-2 no nested contained",
        PAT
        | {
            "contained": [ORG | {"contained": [ORG]}],
        }
        | REF_ORG,
        ("MSG_INVARIANT_DOM_2", "Patient"),
        PAT | {"contained": [ORG]} | REF_ORG,
    ),
    (
        "dom-3 contained must be referenced",
        PAT | {"contained": [ORG]},
        ("MSG_INVARIANT_DOM_3", "Patient"),
        PAT | {"contained": [ORG]} | REF_ORG,
    ),
    (
        "dom-4 contained has no versionId",
        PAT
        | {
            "contained": [ORG | {"meta": {"versionId": "1"}}],
        }
        | REF_ORG,
        ("MSG_INVARIANT_DOM_4", "Patient"),
        PAT
        | {
            "contained": [ORG | {"meta": {"source": "x"}}],
        }
        | REF_ORG,
    ),
    (
        "dom-5 contained has no security label",
        PAT | {"contained": [ORG | {"meta": {"security": [{"code": "R"}]}}]} | REF_ORG,
        ("MSG_INVARIANT_DOM_5", "Patient"),
        PAT | {"contained": [ORG]} | REF_ORG,
    ),
    (
        "ref-1 local reference resolves",
        PAT | {"managingOrganization": {"reference": "#nope"}},
        ("MSG_INVARIANT_REF_1", "Patient.managingOrganization"),
        PAT | {"contained": [ORG]} | REF_ORG,
    ),
    (
        "qty-3 code needs system",
        OBS | {"valueQuantity": {"value": 1, "code": "mg"}},
        ("MSG_INVARIANT_QTY_3", "Observation.valueQuantity"),
        OBS | {"valueQuantity": {"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}},
    ),
    (
        "att-1 data needs contentType",
        PAT | {"photo": [{"data": "aGk="}]},
        ("MSG_INVARIANT_ATT_1", "Patient.photo[0]"),
        PAT | {"photo": [{"data": "aGk=", "contentType": "image/png"}]},
    ),
    (
        "cpt-2 value needs system",
        PAT | {"telecom": [{"value": "0900"}]},
        ("MSG_INVARIANT_CPT_2", "Patient.telecom[0]"),
        PAT | {"telecom": [{"value": "0900", "system": "phone"}]},
    ),
    (
        "ext-1 value or extensions, not both",
        PAT
        | {
            "extension": [
                {"url": "u", "valueString": "a", "extension": [{"url": "v", "valueString": "b"}]}
            ]
        },
        ("MSG_INVARIANT_EXT_1", "Patient.extension[0]"),
        PAT | {"extension": [{"url": "u", "valueString": "a"}]},
    ),
    (
        "ext-1 on a primitive's extension",
        PAT | {"_birthDate": {"extension": [{"url": "u"}]}},
        ("MSG_INVARIANT_EXT_1", "Patient._birthDate.extension[0]"),
        PAT | {"_birthDate": {"extension": [{"url": "u", "valueString": "a"}]}},
    ),
    (
        "ref-1 inside an identifier's assigner (datatype in datatype)",
        PAT | {"identifier": [{"value": "1", "assigner": {"reference": "#x"}}]},
        ("MSG_INVARIANT_REF_1", "Patient.identifier[0].assigner"),
        PAT | {"identifier": [{"value": "1", "assigner": {"display": "x"}}]},
    ),
    (
        "tim-1 duration needs unit",
        MR | {"dosageInstruction": [{"timing": {"repeat": {"duration": 1}}}]},
        ("MSG_INVARIANT_TIM_1", "MedicationRequest.dosageInstruction[0].timing.repeat"),
        MR | {"dosageInstruction": [{"timing": {"repeat": {"duration": 1, "durationUnit": "h"}}}]},
    ),
    (
        "org-1 organization needs identifier or name",
        {"resourceType": "Organization", "active": True},
        ("MSG_INVARIANT_ORG_1", "Organization"),
        {"resourceType": "Organization", "name": "BV"},
    ),
    (
        "org-2 organization address is not home",
        ORG | {"address": [{"use": "home", "city": "HN"}]},
        ("MSG_INVARIANT_ORG_2", "Organization.address[0]"),
        ORG | {"address": [{"use": "work", "city": "HN"}]},
    ),
    (
        "con-4 abatement needs an inactive status",
        CONDITION | {"abatementString": "x", "clinicalStatus": status("active")},
        ("MSG_INVARIANT_CON_4", "Condition"),
        CONDITION | {"abatementString": "x", "clinicalStatus": status("resolved")},
    ),
    (
        "contained resources' invariants, with their path",
        PAT
        | {
            "contained": [{"resourceType": "Organization", "id": "o", "active": True}],
            "managingOrganization": {"reference": "#o"},
        },
        ("MSG_INVARIANT_ORG_1", "Patient.contained[0]"),
        PAT | {"contained": [ORG]} | REF_ORG,
    ),
    (
        "a contained resource may refer to its container as #",
        PAT | {"contained": [BACK_REF], "managingOrganization": {"reference": "#"}},
        ("MSG_INVARIANT_REF_1", "Patient.managingOrganization"),
        PAT | {"contained": [BACK_REF]},
    ),
    (
        "bdl-3 transaction entries need a request",
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": ORG}]},
        ("MSG_INVARIANT_BDL_3", "Bundle"),
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": ORG, "request": POST}],
        },
    ),
    (
        "bundle entries are walked as resources of their own",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": PAT | {"contact": [{"gender": "male"}]}}],
        },
        ("MSG_INVARIANT_PAT_1", "Bundle.entry[0].resource.contact[0]"),
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": PAT}]},
    ),
]


@pytest.mark.parametrize(("name", "broken", "expected", "valid"), CASES, ids=[c[0] for c in CASES])
def test_broken_invariant_is_reported_and_its_valid_counterpart_passes(
    name: str, broken: Json, expected: tuple[str, str], valid: Json
) -> None:
    assert expected in errors(broken)
    assert errors(valid) == set()


def test_issue_carries_severity_code_message_id_and_human_text() -> None:
    [issue] = [
        i
        for i in base_invariants.check_invariants(PAT | {"contact": [{"gender": "male"}]})
        if i.severity == "error"
    ]
    assert (issue.severity, issue.code, issue.message_id) == (
        "error",
        "invariant",
        "MSG_INVARIANT_PAT_1",
    )
    assert issue.diagnostics.startswith("pat-1: SHALL at least contain a contact's details")


def test_warning_invariants_are_warnings() -> None:
    issues = base_invariants.check_invariants({"resourceType": "Patient"})
    assert [(i.message_id, i.severity) for i in issues] == [("MSG_INVARIANT_DOM_6", "warning")]


@pytest.mark.parametrize(
    "resource", examples(), ids=lambda r: str(r.get("id") or r["resourceType"])
)
def test_every_example_keeps_the_base_invariants(resource: Json) -> None:
    assert errors(resource) == set()


def test_validate_structure_rejects_a_broken_invariant_and_keeps_warnings_silent() -> None:
    with pytest.raises(InvalidResource) as caught:
        validate_structure(PAT | {"telecom": [{"value": "0900"}]})
    assert [i.message_id for i in caught.value.issues] == ["MSG_INVARIANT_CPT_2"]
    validate_structure(copy.deepcopy(PAT))  # dom-6 (no narrative) is only a warning


# -- the Python twins agree with fhirpathpy ---------------------------------------------------

#: Where a twin deliberately differs from fhirpathpy 2.2 (see base_invariant_twins):
#: fhirpathpy compares date-times across zones wrongly, and the R4 ref-1 text rejects "#".
KNOWN_DIFFERENCES = {
    "per-1 across time zones",
    "a contained resource may refer to its container as #",
}


def corpus() -> Iterator[Json]:
    yield from examples()
    for name, broken, _, valid in CASES:
        if name not in KNOWN_DIFFERENCES:
            yield broken
            yield valid


def test_python_twins_agree_with_fhirpathpy(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = list(corpus())
    with_twins = [errors(r) for r in resources]
    base_invariants.invariants_of.cache_clear()
    twin = base_invariant_twins.twin  # dom-3's as() on a collection is an error in fhirpathpy
    monkeypatch.setattr(base_invariants, "twin", lambda k, e: twin(k, e) if k == "dom-3" else None)
    try:
        assert [errors(r) for r in resources] == with_twins
    finally:
        base_invariants.invariants_of.cache_clear()


def test_every_invariant_expression_compiles_for_its_context() -> None:
    table = base_invariants._table()
    for context in table["invariants"]:
        for invariant in base_invariants.invariants_of(context):
            assert invariant.check is not None


@pytest.mark.parametrize("duration", [
    {}, {"value": 3}, {"value": 3, "code": "d"}, {"code": "d"},
    {"value": 3, "code": "d", "system": "http://unitsofmeasure.org"},
    {"code": "d", "system": "http://unitsofmeasure.org"},
    {"value": 3, "code": "d", "system": "http://other.example"},
    {"_value": {"extension": [{"url": "x", "valueString": "y"}]}, "code": "d",
     "system": "http://unitsofmeasure.org"},
])
def test_the_duration_twin_agrees_with_fhirpathpy(duration: Json) -> None:
    import fhirpathpy

    expression = "code.exists() implies ((system = %ucum) and value.exists())"
    check = base_invariant_twins.twin("drt-1", expression)
    assert check is not None
    engine = fhirpathpy.evaluate(duration, expression, {"ucum": "http://unitsofmeasure.org"})
    assert check(duration, duration, duration) == (False not in engine)


def test_errors_only_reports_the_same_errors_and_no_warnings() -> None:
    broken = PAT | {"contact": [{"gender": "male"}, {"gender": "female"}]}
    every = base_invariants.check_invariants(broken)
    only = base_invariants.check_invariants(broken, errors_only=True)
    assert [i for i in every if i.severity == "error"] == only
    assert [i.expression for i in only] == [("Patient.contact[0]",), ("Patient.contact[1]",)]
    assert any(i.severity == "warning" for i in every)
    assert base_invariants.check_invariants({"resourceType": "Patient"}, errors_only=True) == []


def test_an_empty_member_name_is_no_invariant_error() -> None:
    # The structure check refuses such a member; the walk itself must not fail on it.
    odd = {"resourceType": "Patient", "": 1}
    assert base_invariants.check_invariants(odd, errors_only=True) == []


def test_ext_1_counts_a_value_given_only_through_its_extensions() -> None:
    absent = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    given = PAT | {"extension": [{"url": "u", "_valueString": absent}]}
    assert not errors(given)
    both = PAT | {"extension": [{"url": "u", "_valueString": absent,
                                 "extension": [{"url": "v", "valueString": "b"}]}]}
    assert ("MSG_INVARIANT_EXT_1", "Patient.extension[0]") in errors(both)


def test_que_7_accepts_answer_boolean_with_exists() -> None:
    def questionnaire(answer: dict[str, Any]) -> Json:
        when = {"question": "q1", "operator": "exists", **answer}
        return {"resourceType": "Questionnaire", "status": "active", "item": [
            {"linkId": "q1", "type": "boolean"},
            {"linkId": "q2", "type": "string", "enableWhen": [when]}]}

    assert not errors(questionnaire({"answerBoolean": True}))
    assert ("MSG_INVARIANT_QUE_7", "Questionnaire.item[1].enableWhen[0]") in errors(
        questionnaire({"answerString": "x"}))


def _unproven_keys(resource: Json) -> list[str]:
    return [i.diagnostics.split(":")[0] for i in
            base_invariants.check_unproven(resource, frozenset())]


def _observation(codings: list[Json]) -> Json:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": codings},
            "identifier": [{"system": "urn:x", "value": "1"}]}


def test_the_lighter_walk_finds_what_hides_in_a_shape_it_has_passed_before() -> None:
    """``check_unproven`` skips a child whose shape (member names) has nothing to check, once
    it has met that shape; a member added to it (an extension, a primitive's ``_display``,
    a Period) makes another shape, which is walked."""
    plain = {"system": "http://loinc.org", "code": "1-8", "display": "x"}
    assert _unproven_keys(_observation([dict(plain), dict(plain)])) == []
    broken_extension = [{"url": "http://example.org/e"}]  # ext-1: neither value nor extension
    cases = [
        _observation([dict(plain), {**plain, "extension": broken_extension}]),
        _observation([dict(plain), {**plain, "_display": {"extension": broken_extension}}]),
        {**_observation([dict(plain)]), "identifier": [
            {"system": "urn:x", "value": "1"},
            {"system": "urn:x", "value": "2",
             "period": {"start": "2024-01-05", "end": "2024-01-04"}}]},  # per-1
    ]
    for resource in cases:
        full = [i.diagnostics.split(":")[0] for i in
                base_invariants.check_invariants(resource, errors_only=True)]
        assert full and _unproven_keys(resource) == full
        assert _unproven_keys(_observation([dict(plain)])) == []


def test_the_lighter_walk_stays_right_when_it_forgets_its_shapes() -> None:
    shapes = [{"system": "urn:s", "code": str(n), f"x{n}": "y"} for n in range(1_200)]
    assert _unproven_keys(_observation(shapes)) == []
    broken = {"system": "urn:s", "code": "b", "extension": [{"url": "http://example.org/e"}]}
    assert _unproven_keys(_observation([*shapes, broken])) == ["ext-1"]

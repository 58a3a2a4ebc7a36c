"""In-memory matching: the executable statement of R4 search semantics."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import NotSupported
from fhir_server.search.matching import matches
from tests.unit.search.search_builders import BLOOD_PRESSURE, index, observation, patient, query

BP = observation(component=BLOOD_PRESSURE)
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TYPED = patient(
    identifier=[
        {"type": {"coding": [{"system": V2, "code": "NI"}]}, "system": "http://cccd.gov.vn",
         "value": "001090012345"}
    ]
)  # fmt: skip
LOGICAL = observation(subject={"identifier": {"system": "http://cccd.gov.vn", "value": "0010"}})
ABSOLUTE = observation(subject={"reference": "http://other.vn/fhir/Patient/9"})
PROFILE = "http://fhir.vn/StructureDefinition/vn-patient"
PROFILED = patient(meta={"profile": [PROFILE]})
VN_NAME = [{"family": "Đặng", "given": ["Thị", "Hồng"]}]
CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    ("string starts-with folds", patient(), "name=nguyen", True),
    ("string starts-with on a part", patient(), "name=van", True),
    ("string is starts-with not contains", patient(), "name=guyen", False),
    ("string contains", patient(), "name:contains=guyen", True),
    ("string exact", patient(), "family:exact=Nguyễn", True),
    ("string exact is case sensitive", patient(), "family:exact=nguyen", False),
    ("d-stroke folds to d", patient(name=VN_NAME), "family=dang", True),
    ("token system|code", patient(), "identifier=http://cccd.gov.vn|001090012345", True),
    ("token code alone", patient(), "identifier=001090012345", True),
    ("token wrong system", patient(), "identifier=http://x|001090012345", False),
    ("token |code needs no system", patient(), "identifier=|001090012345", False),
    ("token system|", patient(), "identifier=http://cccd.gov.vn|", True),
    ("token not", patient(), "gender:not=female", True),
    ("token not own code", patient(), "gender:not=male", False),
    ("token of-type", TYPED, f"identifier:of-type={V2}|NI|001090012345", True),
    ("token of-type other type", TYPED, f"identifier:of-type={V2}|PPN|001090012345", False),
    ("token text", observation(), "code:text=heart", True),
    ("token or", patient(), "gender=female,male", True),
    ("date year contains day", patient(), "birthdate=1990", True),
    ("date eq other year", patient(), "birthdate=1991", False),
    ("date ge", patient(), "birthdate=ge1990", True),
    ("date gt same year", patient(), "birthdate=gt1990", False),
    ("date lt", patient(), "birthdate=lt1990-05-03", True),
    ("date le", patient(), "birthdate=le1990-05-02", True),
    ("date sa", patient(), "birthdate=sa1990-05-01", True),
    ("date eb", patient(), "birthdate=eb1990-05-02", False),
    ("date ne", patient(), "birthdate=ne1990-05-02", False),
    ("date with zone", observation(), "date=2024-03-01T03:00:00Z", True),
    (
        "quantity with units",
        observation(),
        "value-quantity=72|http://unitsofmeasure.org|/min",
        True,
    ),
    ("quantity by unit text", observation(), "value-quantity=72||beats/minute", True),
    ("quantity gt", observation(), "value-quantity=gt71", True),
    ("quantity lt", observation(), "value-quantity=lt72", False),
    ("quantity significant figures", observation(), "value-quantity=72.0", True),
    ("quantity wrong unit", observation(), "value-quantity=72||mg", False),
    ("reference Type/id", observation(), "subject=Patient/p1", True),
    ("reference bare id", observation(), "subject=p1", True),
    ("reference typed param", observation(), "patient=p1", True),
    ("reference type modifier", observation(), "subject:Group=p1", False),
    ("reference other id", observation(), "subject=Patient/p2", False),
    ("reference identifier", LOGICAL, "subject:identifier=http://cccd.gov.vn|0010", True),
    ("reference identifier other", LOGICAL, "subject:identifier=0020", False),
    ("reference absolute url", ABSOLUTE, f"subject={ABSOLUTE['subject']['reference']}", True),
    ("uri below", PROFILED, "_profile:below=http://fhir.vn/", True),
    ("uri exact", PROFILED, "_profile=http://fhir.vn/", False),
    ("uri above", PROFILED, f"_profile:above={PROFILE}/v2", True),
    ("missing true", patient(), "deceased:missing=false&link:missing=true", True),
    ("missing false", patient(), "identifier:missing=true", False),
    ("composite", observation(), "code-value-quantity=http://loinc.org|8867-4$gt70", True),
    (
        "composite both parts",
        observation(),
        "code-value-quantity=http://loinc.org|8867-4$gt80",
        False,
    ),
    ("composite within one component", BP, "component-code-value-quantity=8480-6$120", True),
    ("composite not across components", BP, "component-code-value-quantity=8480-6$80", False),
    ("composite value or", BP, "component-code-value-quantity=8480-6$80,8462-4$80", True),
    ("_id", patient("abc"), "_id=abc,zzz", True),
    ("_id other", patient("abc"), "_id=zzz", False),
    ("_lastUpdated", patient(), "_lastUpdated=ge2026-01-01T07:00:00+07:00", True),
    ("and of clauses", patient(), "name=nguyen&birthdate=1991", False),
]


@pytest.mark.parametrize(("case", "resource", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_matcher_applies_r4_search_semantics(
    case: str, resource: dict[str, Any], text: str, expected: bool
) -> None:
    assert matches(query(resource["resourceType"], text), index(resource)) is expected


def test_resource_of_another_type_never_matches() -> None:
    assert not matches(query("Observation", "status=final"), index(patient()))


class _Source:
    def __init__(self, *resources: dict[str, Any]) -> None:
        self.indexes = [index(resource) for resource in resources]

    def get(self, resource_type: str, id: str) -> Any:
        found = [i for i in self.indexes if (i.resource_type, i.id) == (resource_type, id)]
        return found[0] if found else None

    def referring(self, resource_type: str, code: str, target: Any) -> list[Any]:
        return [
            i
            for i in self.indexes
            if i.resource_type == resource_type
            and any(
                (r[0], r[1], r[2]) == (code, target.resource_type, target.id) for r in i.references
            )
        ]


def test_chained_parameter_follows_the_reference() -> None:
    source = _Source(patient("p1"), observation())
    assert matches(
        query("Observation", "subject:Patient.name=nguyen"), index(observation()), source
    )
    assert not matches(query("Observation", "patient.name=tran"), index(observation()), source)


def test_has_finds_resources_referred_to_by_matching_ones() -> None:
    source = _Source(patient("p1"), observation())
    assert matches(
        query("Patient", "_has:Observation:patient:code=8867-4"), index(patient()), source
    )
    assert not matches(
        query("Patient", "_has:Observation:patient:code=1-8"), index(patient()), source
    )


def test_chain_without_a_source_is_not_supported() -> None:
    with pytest.raises(NotSupported):
        matches(query("Observation", "patient.name=x"), index(observation()))

"""The vn-patient profile checks the administrative units of an address by date, and the
server's address-current-units extension against its definition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fhir_server.conformance.profiles import default_validator

ROOT = Path(__file__).resolve().parents[2]
SD = "https://fhir.sskdt.vn/StructureDefinition"


def example_patient(codes: list[tuple[str, str]], end: str) -> dict[str, Any]:
    patient: dict[str, Any] = json.loads(
        (ROOT / "examples/valid/Patient-vn-patient.json").read_text("utf-8"))
    address = patient["address"][0]
    address["extension"] = [{"url": f"{SD}/address-{level}-code", "valueCode": code}
                            for level, code in codes]  # fmt: skip
    address["period"] = {"start": "2015-01-01", "end": end}
    return patient


def found(patient: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i.severity, i.message_id, i.expression[0])
            for i in default_validator().validate_resource(patient)]


HAGIANG = [("province", "02"), ("district", "026"), ("commune", "00715")]


def test_an_address_ended_before_the_reform_is_read_in_the_old_units() -> None:
    assert found(example_patient(HAGIANG, "2025-06-30")) == []


def test_the_same_codes_on_an_address_of_after_are_refused_where_they_stand() -> None:
    assert found(example_patient(HAGIANG, "2025-07-01")) == [
        ("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE", "Patient.address[0].extension[0].value"),
        ("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE", "Patient.address[0].extension[1].value"),
        ("error", "MSG_ADDRESS_UNIT_MISMATCH", "Patient.address[0].extension[2].value"),
    ]


def test_a_province_of_neither_list_is_refused_by_the_binding() -> None:
    assert found(example_patient([("province", "99")], "2024-01-01")) == [
        ("error", "MSG_PROFILE_BINDING", "Patient.address[0].extension[0].valueCode")]


def test_the_current_units_extension_is_checked_against_its_definition() -> None:
    patient = example_patient([("province", "19")], "2026-01-01")
    patient["address"][0]["extension"].append({"url": f"{SD}/address-current-units", "extension": [
        {"url": "readOn", "valueDate": "2024-01-01"}, {"url": "commune", "valueString": "x"}]})
    assert sorted(found(patient)) == [
        ("error", "MSG_PROFILE_CARDINALITY", "Patient.address[0].extension[1].extension"),
        ("error", "MSG_PROFILE_TYPE",
         "Patient.address[0].extension[1].extension[1].valueString"),
    ]

"""API tests of profile validation on writes, $validate, the terminology operations and the
conformance resources served by the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import valid_example

FHIR = {"Content-Type": "application/fhir+json"}
VN_PATIENT = "https://fhir.sskdt.vn/StructureDefinition/vn-patient"


def ids(outcome: dict[str, Any]) -> list[str]:
    return [i["details"]["coding"][0]["code"] for i in outcome["issue"]]


def bad_patient() -> dict[str, Any]:
    patient = valid_example("Patient")
    patient["identifier"] = [{"system": "http://fhir.ehealth.gov.vn/core/sid/national_id",
                              "value": "12345"}]
    return patient


async def test_enforce_rejects_invalid_write_with_422_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/fhir/Patient", json=bad_patient(), headers=FHIR)
    assert response.status_code == 422
    assert "MSG_PROFILE_SLICE" in ids(response.json())
    assert any(i.get("expression") == ["Patient.identifier[0].value"]
               for i in response.json()["issue"])
    history = (await client.get("/fhir/Patient/_history")).json()
    assert "entry" not in history


async def test_valid_vietnamese_patient_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=valid_example("Patient"), headers=FHIR)
    assert response.status_code == 201


async def test_warn_stores_and_returns_the_issues(client_with: Any) -> None:
    http = await client_with(validation="warn")
    response = await http.post("/fhir/Patient", json=bad_patient(), headers=FHIR)
    assert response.status_code == 201
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "MSG_PROFILE_SLICE" in ids(response.json())
    assert (await http.get(response.headers["location"].removeprefix("http://test"))
            ).status_code == 200


async def test_off_skips_profiles_but_not_structure(client_with: Any) -> None:
    http = await client_with(validation="off")
    assert (await http.post("/fhir/Patient", json=bad_patient(), headers=FHIR)).status_code == 201
    broken = await http.post("/fhir/Patient", json={"resourceType": "Patient", "gender": 1},
                             headers=FHIR)
    assert broken.status_code == 400


async def test_per_type_override(client_with: Any) -> None:
    http = await client_with(validation_overrides={"Patient": "off"})
    assert (await http.post("/fhir/Patient", json=bad_patient(), headers=FHIR)).status_code == 201


async def test_unknown_profile_is_an_error(client: httpx.AsyncClient) -> None:
    patient = valid_example("Patient")
    patient["meta"] = {"profile": ["https://example.org/StructureDefinition/nope"]}
    response = await client.post("/fhir/Patient", json=patient, headers=FHIR)
    assert response.status_code == 422
    assert "MSG_PROFILE_UNKNOWN" in ids(response.json())


async def test_validate_operation_reports_without_storing(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/$validate", json=bad_patient(), headers=FHIR)
    assert response.status_code == 200
    assert "MSG_PROFILE_SLICE" in ids(response.json())
    ok = await client.post("/fhir/Patient/$validate", json=valid_example("Patient"),
                           headers=FHIR)
    assert not [i for i in ok.json()["issue"] if i["severity"] in ("error", "fatal")]
    assert "MSG_INVARIANT_DOM_6" in ids(ok.json())  # best practice: a narrative (warning)
    assert "entry" not in (await client.get("/fhir/Patient/_history")).json()


async def test_validate_with_parameters_and_profile(client: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": bad_patient()},
        {"name": "profile", "valueUri": VN_PATIENT}]}
    response = await client.post("/fhir/Patient/$validate", json=body, headers=FHIR)
    assert "MSG_PROFILE_SLICE" in ids(response.json())


async def test_instance_validate_checks_stored_resource(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=valid_example("Patient"),
                                 headers=FHIR)).json()
    response = await client.get(f"/fhir/Patient/{created['id']}/$validate")
    assert not [i for i in response.json()["issue"] if i["severity"] in ("error", "fatal")]


async def test_structure_errors_in_validate_have_expressions(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/$validate",
                                 json={"resourceType": "Patient", "birthDate": "2023-02-30"},
                                 headers=FHIR)
    assert response.status_code == 200
    assert response.json()["issue"][0]["expression"] == ["Patient.birthDate"]


async def test_unknown_operation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/$nonsense")
    assert response.status_code == 404
    assert ids(response.json()) == ["MSG_OPERATION_UNKNOWN"]


async def test_expand_filters_accent_insensitively(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ValueSet/$expand", params={
        "url": "https://fhir.sskdt.vn/ValueSet/province", "filter": "ha noi"})
    assert response.status_code == 200
    contains = response.json()["expansion"]["contains"]
    assert [c["code"] for c in contains] == ["01"]
    assert contains[0]["display"].startswith(("Hà Nội", "TP Hà Nội", "Thành phố Hà Nội"))


async def test_expand_by_instance_id_and_paging(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ValueSet/ethnic-group/$expand",
                                params={"count": 5, "offset": 0})
    body = response.json()["expansion"]
    assert body["total"] == 56
    assert len(body["contains"]) == 5


async def test_lookup_and_validate_code(client: httpx.AsyncClient) -> None:
    lookup = await client.get("/fhir/CodeSystem/$lookup", params={
        "system": "https://fhir.sskdt.vn/CodeSystem/visit-type", "code": "03"})
    parameters = {p["name"]: p for p in lookup.json()["parameter"]}
    assert parameters["display"]["valueString"] == "Điều trị nội trú"
    valid = await client.get("/fhir/ValueSet/$validate-code", params={
        "url": "https://fhir.sskdt.vn/ValueSet/visit-type", "code": "03"})
    assert valid.json()["parameter"][0] == {"name": "result", "valueBoolean": True}
    invalid = await client.get("/fhir/ValueSet/$validate-code", params={
        "url": "https://fhir.sskdt.vn/ValueSet/visit-type", "code": "99"})
    assert invalid.json()["parameter"][0] == {"name": "result", "valueBoolean": False}
    unknown = await client.get("/fhir/ValueSet/$expand", params={"url": "urn:nope"})
    assert unknown.status_code == 404


@pytest.mark.parametrize("path", [
    "/fhir/StructureDefinition/vn-patient", "/fhir/CodeSystem/ethnic-group",
    "/fhir/ValueSet/province", "/fhir/ConceptMap/gender-vn",
])
async def test_conformance_resources_are_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200, path
    assert response.json()["url"].startswith("https://fhir.sskdt.vn/")


async def test_json_schema_over_http(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/StructureDefinition/vn-patient/$json-schema")
    assert response.status_code == 200
    assert "properties" in response.json()
    core = await client.get("/fhir/StructureDefinition/$json-schema",
                            params={"url": "http://hl7.org/fhir/StructureDefinition/bp"})
    assert core.status_code == 400, core.text
    assert ids(core.json()) == ["MSG_JSON_SCHEMA_UNAVAILABLE"]


async def test_search_parameters_are_listed_and_searchable(client_with: Any) -> None:
    http = await client_with(seed_search_parameters=True)
    listed = await http.get("/fhir/SearchParameter", params={"base": "Patient",
                                                             "code": "birthdate"})
    entries = listed.json()["entry"]
    assert [e["resource"]["url"] for e in entries] == [
        "http://hl7.org/fhir/SearchParameter/individual-birthdate"]
    total = await http.get("/fhir/SearchParameter", params={"_summary": "count"})
    assert total.json()["total"] > 1300


async def test_token_in_and_not_in_use_the_servers_value_sets(client: httpx.AsyncClient) -> None:
    kinds = [("https://fhir.sskdt.vn/CodeSystem/visit-type", "03"), ("urn:other", "x")]
    ids = []
    for system, code in kinds:
        location = {"resourceType": "Location", "name": f"Khoa {code}",
                    "type": [{"coding": [{"system": system, "code": code}]}]}
        created = await client.post("/fhir/Location", json=location, headers=FHIR)
        ids.append(created.json()["id"])
    visit_types = "https://fhir.sskdt.vn/ValueSet/visit-type"
    found = await client.get("/fhir/Location", params={"type:in": visit_types})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [ids[0]]
    others = await client.get("/fhir/Location", params={"type:not-in": visit_types})
    assert [e["resource"]["id"] for e in others.json()["entry"]] == [ids[1]]
    unknown = await client.get("/fhir/Location", params={"type:in": "urn:no-such-valueset"})
    assert unknown.status_code == 400


async def test_icd10_below_and_above(client: httpx.AsyncClient) -> None:
    ids = {}
    for code in ("J18.9", "J06.9", "J18"):
        condition = valid_example("Condition")
        condition["code"] = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                         "code": code}]}
        condition.pop("identifier", None)
        created = await client.post("/fhir/Condition", json=condition, headers=FHIR)
        assert created.status_code == 201, created.text
        ids[code] = created.json()["id"]
    below = await client.get("/fhir/Condition",
                             params={"code:below": "http://hl7.org/fhir/sid/icd-10|J09-J18"})
    assert {e["resource"]["id"] for e in below.json()["entry"]} == {ids["J18.9"], ids["J18"]}
    above = await client.get("/fhir/Condition",
                             params={"code:above": "http://hl7.org/fhir/sid/icd-10|J18.9"})
    assert {e["resource"]["id"] for e in above.json()["entry"]} == {ids["J18.9"], ids["J18"]}
    unsupported = await client.get("/fhir/Condition", params={"code:below": "urn:x|1"},
                                   headers={"Prefer": "handling=strict"})
    assert unsupported.status_code == 400


@pytest.mark.parametrize("path", ["/fhir/CodeSystem/$lookup", "/fhir/ValueSet/$validate-code"])
async def test_terminology_operations_name_a_missing_code(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, params={
        "system": "https://fhir.sskdt.vn/CodeSystem/visit-type",
        "url": "https://fhir.sskdt.vn/ValueSet/visit-type"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["code"]

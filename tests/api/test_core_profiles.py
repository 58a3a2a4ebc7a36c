"""The profiles R4 defines (vitalsigns, bp, shareablevalueset...) are known in ``enforce``
mode: a resource claiming one is checked against it (and against the profile it builds on),
slices and bindings included, not refused as claiming an unknown profile."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import observation, patient
from tests.conformance.vital_signs import BREAKS, Break, claiming, example, examples

FHIR = {"Content-Type": "application/fhir+json"}
CORE = "http://hl7.org/fhir/StructureDefinition/"


def _message_ids(response: httpx.Response) -> set[str]:
    return {i["details"]["coding"][0]["code"] for i in response.json().get("issue", [])}


async def _subject(client: httpx.AsyncClient) -> str:
    created = await client.post("/fhir/Patient", json=patient(), headers=FHIR)
    return f"Patient/{created.json()['id']}"


def _claiming(resource: dict[str, Any], *profiles: str) -> dict[str, Any]:
    return {**resource, "meta": {"profile": [CORE + p for p in profiles]}}


async def test_a_vital_sign_claiming_vitalsigns_is_accepted(client: httpx.AsyncClient) -> None:
    vital = _claiming(observation(await _subject(client)), "vitalsigns", "heartrate")
    response = await client.post("/fhir/Observation", json=vital, headers=FHIR)
    assert response.status_code == 201, response.text


async def test_a_blood_pressure_breaking_bp_is_refused_with_its_rules(
    client: httpx.AsyncClient,
) -> None:
    single = _claiming(observation(await _subject(client), code="85354-9"), "bp")
    response = await client.post("/fhir/Observation", json=single, headers=FHIR)
    assert response.status_code == 422, response.text
    assert "MSG_PROFILE_UNKNOWN" not in _message_ids(response)
    paths = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert {"Observation.valueQuantity", "Observation.component"} <= paths
    unsubjected = _claiming(observation(await _subject(client)), "vitalsigns")
    del unsubjected["effectiveDateTime"]
    missing = await client.post("/fhir/Observation", json=unsubjected, headers=FHIR)
    assert missing.status_code == 422  # vitalsigns: effective[x] 1..1


async def test_shareable_value_set_is_checked(client: httpx.AsyncClient) -> None:
    value_set: dict[str, Any] = {"resourceType": "ValueSet", "status": "active",
                                 "url": "https://fhir.sskdt.vn/ValueSet/test-shareable"}
    bare = await client.post("/fhir/ValueSet", json=_claiming(value_set, "shareablevalueset"),
                             headers=FHIR)
    assert bare.status_code == 422
    assert "MSG_PROFILE_UNKNOWN" not in _message_ids(bare)
    complete = _claiming({**value_set, "version": "1", "name": "TestShareable",
                          "experimental": False, "publisher": "Bộ Y tế",
                          "description": "Thử nghiệm"}, "shareablevalueset")
    accepted = await client.post("/fhir/ValueSet", json=complete, headers=FHIR)
    assert accepted.status_code == 201, accepted.text


async def test_an_unknown_profile_is_still_refused(client: httpx.AsyncClient) -> None:
    unknown = _claiming(observation(await _subject(client)), "no-such-profile")
    response = await client.post("/fhir/Observation", json=unknown, headers=FHIR)
    assert response.status_code == 422
    assert "MSG_PROFILE_UNKNOWN" in _message_ids(response)


async def test_the_official_vital_signs_claiming_their_profiles_are_stored(
    client: httpx.AsyncClient,
) -> None:
    for file, profile, _ in examples():
        vital = claiming(example(file), profile)
        response = await client.put(f"/fhir/Observation/{vital['id']}", json=vital,
                                    headers=FHIR)
        assert response.status_code == 201, (file, response.text)
        assert not [i for i in response.json().get("issue", ())
                    if i["severity"] in ("error", "warning")], file


@pytest.mark.parametrize("broken", BREAKS, ids=[b.name for b in BREAKS])
async def test_a_copy_breaking_a_slice_or_binding_is_refused_naming_them(
    client: httpx.AsyncClient, broken: Break,
) -> None:
    resource = broken.resource()
    del resource["id"]
    response = await client.post("/fhir/Observation", json=resource, headers=FHIR)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [broken.message_id, broken.text] in [
        [i["details"]["coding"][0]["code"], i["diagnostics"]] for i in outcome["issue"]]
    assert "entry" not in (await client.get("/fhir/Observation")).json()


async def test_validate_with_a_core_profile_reports_its_slices_and_bindings(
    client: httpx.AsyncClient,
) -> None:
    for broken in BREAKS:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": example(broken.file)},
            {"name": "profile", "valueUri": CORE + broken.profile}]}
        valid = await client.post("/fhir/Observation/$validate", json=body, headers=FHIR)
        assert not [i for i in valid.json()["issue"] if i["severity"] == "error"], broken.name
        body["parameter"][0]["resource"] = broken.resource()
        response = await client.post("/fhir/Observation/$validate", json=body, headers=FHIR)
        assert response.status_code == 200
        assert broken.text in [i.get("diagnostics") for i in response.json()["issue"]
                               if i["severity"] == "error"], broken.name

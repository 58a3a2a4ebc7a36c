"""API tests of batch and transaction Bundles (R4 http.html#transaction) and the visit push."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.settings import Settings
from tests.builders import CCCD_SYSTEM, observation, patient
from tests.conftest import on_sqlite_only

FHIR = {"Content-Type": "application/fhir+json"}
ORG_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"


def visit_bundle(cccd: str = "001090012345", facility: str = "01929", ma_lk: str = "LK0001",
                 diagnosis: str = "J06.9") -> dict[str, Any]:
    """A visit push following the contract of docs/hospital-push.md."""
    record = f"https://fhir.sskdt.vn/sid/record/{facility}"
    encounter_system = f"https://fhir.sskdt.vn/sid/ma-lk/{facility}"
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": patient(cccd=cccd),
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={CCCD_SYSTEM}|{cccd}"}},
        {"fullUrl": "urn:uuid:o", "resource": {
            "resourceType": "Organization", "name": "Bệnh viện",
            "identifier": [{"system": ORG_SYSTEM, "value": facility}]},
         "request": {"method": "POST", "url": "Organization",
                     "ifNoneExist": f"identifier={ORG_SYSTEM}|{facility}"}},
        {"fullUrl": "urn:uuid:e", "resource": {
            "resourceType": "Encounter", "status": "finished",
            "identifier": [{"system": encounter_system, "value": ma_lk}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "type": [{"coding": [{"system": "https://fhir.sskdt.vn/CodeSystem/visit-type",
                                  "code": "01"}]}],
            "period": {"start": "2026-03-01T08:00:00+07:00",
                       "end": "2026-03-01T09:00:00+07:00"},
            "subject": {"reference": "urn:uuid:p"},
            "serviceProvider": {"reference": "urn:uuid:o"}},
         "request": {"method": "PUT",
                     "url": f"Encounter?identifier={encounter_system}|{ma_lk}"}},
        {"fullUrl": "urn:uuid:c", "resource": {
            "resourceType": "Condition",
            "identifier": [{"system": record, "value": f"{ma_lk}/Condition/1"}],
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                 "code": diagnosis}]},
            "subject": {"reference": "urn:uuid:p"},
            "encounter": {"reference": "urn:uuid:e"}},
         "request": {"method": "PUT",
                     "url": f"Condition?identifier={record}|{ma_lk}/Condition/1"}},
        {"fullUrl": "urn:uuid:obs", "resource": {
            **observation("urn:uuid:p"),
            "identifier": [{"system": record, "value": f"{ma_lk}/Observation/1"}],
            "encounter": {"reference": "urn:uuid:e"}},
         "request": {"method": "PUT",
                     "url": f"Observation?identifier={record}|{ma_lk}/Observation/1"}},
    ]}


def store_snapshot(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the embedded store (to compare before and after)."""
    conn = sqlite3.connect(data_dir / "fhir.sqlite3")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in tables}
    finally:
        conn.close()


async def post(client: httpx.AsyncClient, bundle: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir", json=bundle, headers=FHIR)


async def count(client: httpx.AsyncClient, resource_type: str) -> int:
    history = (await client.get(f"/fhir/{resource_type}/_history",
                                params={"_count": 1000})).json()
    return len({e["fullUrl"] for e in history.get("entry", [])})


async def test_transaction_resolves_urn_uuid_references(client: httpx.AsyncClient) -> None:
    response = await post(client, visit_bundle())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * 5
    encounter_location = body["entry"][2]["response"]["location"]
    encounter = (await client.get("/fhir/" + encounter_location.split("/_history")[0])).json()
    patient_id = body["entry"][0]["response"]["location"].split("/")[1]
    assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
    condition_location = body["entry"][3]["response"]["location"].split("/_history")[0]
    condition = (await client.get("/fhir/" + condition_location)).json()
    assert condition["encounter"]["reference"] == encounter_location.split("/_history")[0]


async def test_identical_repush_creates_nothing(client: httpx.AsyncClient) -> None:
    first = await post(client, visit_bundle())
    assert first.status_code == 200
    again = await post(client, visit_bundle())
    assert again.status_code == 200, again.text
    assert [e["response"]["status"] for e in again.json()["entry"]] == ["200 OK"] * 5
    assert [e["response"]["etag"] for e in again.json()["entry"]] == ['W/"1"'] * 5
    for resource_type in ("Patient", "Organization", "Encounter", "Condition", "Observation"):
        assert await count(client, resource_type) == 1


async def test_corrected_repush_updates_without_duplicates(client: httpx.AsyncClient) -> None:
    await post(client, visit_bundle(diagnosis="J06.9"))
    corrected = await post(client, visit_bundle(diagnosis="J18.9"))
    entries = corrected.json()["entry"]
    assert entries[3]["response"]["etag"] == 'W/"2"'
    assert entries[2]["response"]["etag"] == 'W/"1"'
    assert await count(client, "Condition") == 1


@on_sqlite_only
async def test_failed_transaction_leaves_no_trace(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await post(client, visit_bundle(cccd="001090000001", ma_lk="A"))
    before = store_snapshot(settings.data_dir)
    bad = visit_bundle(cccd="001090000002", ma_lk="B")
    bad["entry"][4]["resource"]["status"] = "not-a-status"
    response = await post(client, bad)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[4].resource.status"]
    assert "Bundle.entry[4]" in issue["diagnostics"]
    assert store_snapshot(settings.data_dir) == before


@on_sqlite_only
async def test_failure_during_writes_rolls_back_everything(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    before = store_snapshot(settings.data_dir)
    bundle = visit_bundle()
    bundle["entry"].append({"request": {"method": "DELETE", "url": "Patient/not-there"}})
    response = await post(client, bundle)
    assert response.status_code == 404
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[5]"]
    assert store_snapshot(settings.data_dir) == before


async def test_reference_to_missing_resource_is_rejected(client_with: Any) -> None:
    client = await client_with(referential_integrity=True)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("Patient/ghost"),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = await post(client, bundle)
    assert response.status_code == 400
    ids = [i["details"]["coding"][0]["code"] for i in response.json()["issue"]]
    assert ids == ["MSG_REFERENCE_NOT_FOUND"]


async def test_unresolvable_urn_reference_is_rejected(client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("urn:uuid:nobody"),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = await post(client, bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]


async def test_conditional_reference_resolves_to_the_single_match(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/fhir/Patient", json=patient(cccd="079190000001"),
                                 headers=FHIR)).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient?identifier={CCCD_SYSTEM}|079190000001"),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = await post(client, bundle)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"].split("/_history")[0]
    stored = (await client.get(f"/fhir/{location}")).json()
    assert stored["subject"]["reference"] == f"Patient/{created['id']}"
    bundle["entry"][0]["resource"] = observation(f"Patient?identifier={CCCD_SYSTEM}|nobody")
    missing = await post(client, bundle)
    assert missing.status_code == 400
    assert missing.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]


@pytest.mark.parametrize(
    ("bundle", "message_id"),
    [
        ({"resourceType": "Bundle", "type": "collection"}, "MSG_BUNDLE_TYPE"),
        (patient(), "MSG_BUNDLE_EXPECTED"),
        ({"resourceType": "Bundle", "type": "transaction",
          "entry": [{"resource": patient()}]}, "MSG_BUNDLE_REQUEST_MISSING"),
        ({"resourceType": "Bundle", "type": "transaction",
          "entry": [{"resource": patient(), "request": {"method": "POST", "url": "Nope"}}]},
         "MSG_BUNDLE_URL"),
    ],
)
async def test_bad_bundles_are_400(
    client: httpx.AsyncClient, bundle: dict[str, Any], message_id: str
) -> None:
    response = await post(client, bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == message_id


async def test_entry_limit(client: httpx.AsyncClient, settings: Settings) -> None:
    settings.max_bundle_entries = 2
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}}] * 3}
    response = await post(client, bundle)
    assert response.status_code == 413


async def test_batch_entries_are_independent(client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "xx"},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
    ]}
    response = await post(client, bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400 Bad Request"
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.gender"]
    assert entries[2]["response"]["status"] == "404 Not Found"
    assert await count(client, "Patient") == 1


async def test_transaction_processing_order_and_get(client: httpx.AsyncClient) -> None:
    existing = (await client.post("/fhir/Patient", json=patient(), headers=FHIR)).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"resource": {**existing, "gender": "female"},
         "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"1"'}},
    ]}
    response = await post(client, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["resource"]["gender"] == "female"
    assert entries[1]["response"]["etag"] == 'W/"2"'
    stale = await post(client, bundle)
    assert stale.status_code == 412


async def test_concurrent_pushes_of_one_new_patient_make_one_patient(
    client: httpx.AsyncClient,
) -> None:
    bundles = [visit_bundle(facility=f"01{i:03d}", ma_lk=f"LK{i}") for i in range(50)]
    responses = await asyncio.gather(*(post(client, b) for b in bundles))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:2]
    assert await count(client, "Patient") == 1
    assert await count(client, "Encounter") == 50
    await assert_encounters_of_the_one_patient(client, 50)


async def assert_encounters_of_the_one_patient(client: httpx.AsyncClient, expected: int) -> None:
    """Searches by the Patient (reference, compartment, $everything) find every Encounter."""
    found = (await client.get("/fhir/Patient", headers=FHIR)).json()["entry"][0]["resource"]
    for params in ({"subject": f"Patient/{found['id']}"}, {"patient": found["id"]}):
        page = await client.get("/fhir/Encounter", params={**params, "_summary": "count"},
                                headers=FHIR)
        assert page.json()["total"] == expected, params
    everything = await client.get(f"/fhir/Patient/{found['id']}/$everything",
                                  params={"_type": "Encounter", "_count": "100"}, headers=FHIR)
    assert sum(1 for e in everything.json()["entry"]
               if e["resource"]["resourceType"] == "Encounter") == expected


async def test_bundles_planned_before_a_concurrent_create_index_the_patient_found_under_the_lock(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Bundle resolves and indexes its copy before any of them writes, so each plans a
    new Patient; under the lock all but the first find the one the first created. Their
    resources refer to that Patient, and their indexes (patched, not recomputed) must too."""
    from fhir_server.interactions import bundle_exec

    pushes = 5
    barrier = asyncio.Barrier(pushes)
    planned = bundle_exec.optimistic_indexes

    async def plan_then_wait(services: Any, entries: Any, turn: Any = None) -> None:
        await planned(services, entries, turn)
        await barrier.wait()

    monkeypatch.setattr(bundle_exec, "optimistic_indexes", plan_then_wait)
    bundles = [visit_bundle(ma_lk=f"LK{i}") for i in range(pushes)]
    responses = await asyncio.gather(*(post(client, b) for b in bundles))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:2]
    assert await count(client, "Patient") == 1
    await assert_encounters_of_the_one_patient(client, pushes)


async def test_concurrent_repushes_of_one_visit_make_one_encounter(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(*(post(client, copy.deepcopy(visit_bundle()))
                                       for _ in range(50)))
    assert all(r.status_code == 200 for r in responses)
    assert await count(client, "Encounter") == 1
    assert await count(client, "Condition") == 1


async def test_search_entries_run_after_the_writes_and_return_their_searchset(
    client: httpx.AsyncClient,
) -> None:
    """GET entries with a search run last (R4 processing order) and see the writes."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient?family=tran"}},
        {"fullUrl": "urn:uuid:p", "resource": patient(cccd="001090000031", family="Trần"),
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    for kind in ("transaction", "batch"):
        response = await post(client, {**bundle, "type": kind})
        assert response.status_code == 200, response.text
        found = response.json()["entry"][0]
        assert found["response"]["status"] == "200 OK"
        assert found["resource"]["type"] == "searchset"
        assert {e["resource"]["name"][0]["family"]
                for e in found["resource"]["entry"]} == {"Trần"}


async def test_if_none_exist_is_accepted_in_its_full_form(client: httpx.AsyncClient) -> None:
    """``Patient?identifier=...`` (as the specification's own example Bundle writes it) and
    the bare query find the same Patient."""
    first = await client.post("/fhir/Patient", json=patient(cccd="001090000032"), headers=FHIR)
    assert first.status_code == 201
    for criteria in (f"Patient?identifier={CCCD_SYSTEM}|001090000032",
                     f"identifier={CCCD_SYSTEM}|001090000032"):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient(cccd="001090000032"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria}}]}
        response = await post(client, bundle)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert await count(client, "Patient") == 1


async def test_two_entries_with_one_full_url_are_refused_bdl_7(client: httpx.AsyncClient) -> None:
    entry = {"fullUrl": "urn:uuid:same", "resource": patient(),
             "request": {"method": "POST", "url": "Patient"}}
    response = await post(client, {"resourceType": "Bundle", "type": "transaction",
                                   "entry": [entry, {**entry, "resource": patient(cccd="1")}]})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_BUNDLE_DUPLICATE_FULLURL"
    assert issue["expression"] == ["Bundle.entry[1].fullUrl"]
    assert await count(client, "Patient") == 0


@pytest.mark.parametrize("method", [{"x": "POST"}, ["POST"], 7, None])
async def test_an_entry_whose_method_is_not_a_string_is_a_400(
    client: httpx.AsyncClient, method: object
) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": method, "url": "Patient"}}]}
    response = await post(client, bundle)
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == \
        "MSG_BUNDLE_REQUEST_INVALID"
    batch = await post(client, {**bundle, "type": "batch"})
    assert batch.json()["entry"][0]["response"]["status"] == "400 Bad Request"


async def test_referential_integrity_applies_to_every_write(client_with: Any) -> None:
    """With ``referential_integrity`` on (the default), a single create or update naming a
    resource that does not exist is refused (400), and a resource others refer to is not
    deleted (409); with it off both go through."""
    strict = await client_with(referential_integrity=True)
    ghost = await strict.post("/fhir/Observation", json=observation("Patient/ghost"),
                              headers=FHIR)
    assert ghost.status_code == 400
    assert ghost.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_REFERENCE_NOT_FOUND"
    person = (await strict.post("/fhir/Patient", json=patient(), headers=FHIR)).json()
    seen = await strict.post("/fhir/Observation", json=observation(f"Patient/{person['id']}"),
                             headers=FHIR)
    assert seen.status_code == 201
    refused = await strict.delete(f"/fhir/Patient/{person['id']}")
    assert refused.status_code == 409
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_DELETE_REFERENCED"
    assert f"Observation/{seen.json()['id']}" in refused.json()["issue"][0]["diagnostics"]
    assert (await strict.delete(f"/fhir/Observation/{seen.json()['id']}")).status_code == 204
    assert (await strict.delete(f"/fhir/Patient/{person['id']}")).status_code == 204
    lenient = await client_with(referential_integrity=False)
    assert (await lenient.post("/fhir/Observation", json=observation("Patient/ghost"),
                               headers=FHIR)).status_code == 201

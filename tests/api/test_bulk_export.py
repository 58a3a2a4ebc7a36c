"""Bulk Data export as the IG describes it (https://hl7.org/fhir/uv/bulkdata/export.html):
kick-off, status, manifest, files, cancellation and errors, and what the parameters select."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.settings import Settings
from tests.api.bulk_export import (
    ASYNC,
    FHIR,
    cohort,
    create_group,
    exported,
    facilities,
    files,
    finished,
    ids,
    kick_off,
    local,
)
from tests.api.two_patients import World, populate
from tests.builders import observation


@pytest.fixture
async def world(client: httpx.AsyncClient, settings: Settings) -> World:
    return await populate(client, settings)


def _message(response: httpx.Response) -> str:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["details"]["coding"][0]["code"])


# -- kick-off, status, manifest, files -------------------------------------------------------


async def test_kick_off_answers_202_with_the_polling_location_in_content_location(
    client: httpx.AsyncClient, world: World,
) -> None:
    response = await kick_off(client)
    assert response.status_code == 202
    assert response.headers["content-location"].startswith("http://test/fhir/$export-status/")
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_the_manifest_lists_every_file_with_type_url_and_count(
    client: httpx.AsyncClient, world: World,
) -> None:
    params = {"_type": "Patient,Observation,Encounter"}
    started = await kick_off(client, params=params)
    done = await finished(client, started.headers["content-location"])
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("application/json")
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == "http://test/fhir/$export?_type=Patient%2CObservation%2CEncounter"
    assert manifest["error"] == []
    assert {item["type"] for item in manifest["output"]} == {"Patient", "Observation",
                                                             "Encounter"}
    found = await files(client, manifest)
    assert {r["id"] for r in found["Patient"]} == {world.a.patient, world.b.patient}
    assert all(r["resourceType"] == kind for kind, items in found.items() for r in items)
    # The deleted Observations are not exported; the others are, once each.
    observations = [r["id"] for r in found["Observation"]]
    assert sorted(observations) == sorted({world.a.ids["lab"], world.a.ids["vital"],
                                           world.b.ids["lab"], world.b.ids["vital"]})


async def test_transaction_time_is_the_newest_write_and_expiry_is_stated(
    client: httpx.AsyncClient, world: World, settings: Settings,
) -> None:
    newest = (await client.get("/fhir/_history", params={"_count": "1"})).json()
    started = await kick_off(client, params={"_type": "Patient"})
    done = await finished(client, started.headers["content-location"])
    manifest = done.json()
    last = newest["entry"][0]["response"]["lastModified"]  # a deletion: no resource
    assert manifest["transactionTime"] == last
    expires = parsedate_to_datetime(done.headers["expires"]).timestamp()
    stated = manifest["extension"]["expires"]
    assert abs(expires - settings.export_expiry_s - time.time()) < 120
    assert stated[:16] == time.strftime("%Y-%m-%dT%H:%M", time.gmtime(
        parsedate_to_datetime(done.headers["expires"]).timestamp()))


async def test_status_is_202_with_progress_and_retry_after_while_the_export_runs(
    client_with: Any, settings: Settings,
) -> None:
    slow = await client_with(export_page_size=1, export_cpu_share=0.05)
    await populate(slow, settings)
    started = await kick_off(slow)
    status = await slow.get(local(started.headers["content-location"]))
    assert status.status_code == 202
    assert status.headers["x-progress"]
    assert len(status.headers["x-progress"]) < 100
    assert int(status.headers["retry-after"]) >= 1
    assert not status.content


async def test_files_are_ndjson_whatever_accept_says_and_need_the_token(
    client: httpx.AsyncClient, world: World,
) -> None:
    started = await kick_off(client, params={"_type": "Patient"})
    manifest = (await finished(client, started.headers["content-location"])).json()
    url = local(manifest["output"][0]["url"])
    answer = await client.get(url, headers={"Accept": "application/fhir+ndjson"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/fhir+ndjson"
    assert all(orjson.loads(line)["resourceType"] == "Patient"
               for line in answer.content.splitlines())
    assert (await client.get(url, headers={"Authorization": ""})).status_code == 401
    assert (await client.get(url.rsplit("/", 1)[0] + "/other.ndjson")).status_code == 404
    assert (await client.get(url.rsplit("/", 1)[0] + "/.members.sqlite3")).status_code == 404


async def test_post_kick_off_with_parameters_and_the_abbreviated_formats(
    client: httpx.AsyncClient, world: World,
) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "_outputFormat", "valueString": "application/ndjson"}]}
    started = await kick_off(client, body=body)
    assert started.status_code == 202, started.text
    manifest = (await finished(client, started.headers["content-location"])).json()
    assert manifest["request"] == "http://test/fhir/$export"
    assert [item["type"] for item in manifest["output"]] == ["Patient"]
    for form in ("ndjson", "application/fhir+ndjson"):
        answer = await kick_off(client, params={"_outputFormat": form, "_type": "Patient"})
        assert answer.status_code == 202, answer.text


async def test_delete_cancels_within_seconds_removes_the_files_and_status_is_404(
    client_with: Any, settings: Settings,
) -> None:
    slow = await client_with(export_page_size=1, export_cpu_share=0.05)
    await populate(slow, settings)
    started = await kick_off(slow)
    location = local(started.headers["content-location"])
    job = location.rsplit("/", 1)[1]
    folder = Path(settings.data_dir) / "exports" / job
    deadline = time.monotonic() + 10
    while not any(folder.glob("*.ndjson")):  # the job has written something
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    cancelled = await slow.delete(location)
    assert cancelled.status_code == 202
    assert cancelled.json()["resourceType"] == "OperationOutcome"
    await asyncio.sleep(5)  # the IG: stopped within 5 s; nothing is written after
    assert not folder.exists()
    gone = await slow.get(location)
    assert gone.status_code == 404 and _message(gone) == "MSG_JOB_UNKNOWN"
    assert (await slow.delete(location)).status_code == 404


async def test_delete_of_a_finished_export_removes_its_files(
    client: httpx.AsyncClient, world: World, settings: Settings,
) -> None:
    started = await kick_off(client, params={"_type": "Patient"})
    location = started.headers["content-location"]
    manifest = (await finished(client, location)).json()
    assert (await client.delete(local(location))).status_code == 202
    assert (await client.get(local(manifest["output"][0]["url"]))).status_code == 404
    assert not (Path(settings.data_dir) / "exports" / location.rsplit("/", 1)[1]).exists()


async def test_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/fhir/$export-status/0123abcd", "/fhir/$export-file/0123abcd/Patient-1.ndjson"):
        response = await client.get(path)
        assert response.status_code == 404 and _message(response) == "MSG_JOB_UNKNOWN"
    assert (await client.delete("/fhir/$export-status/0123abcd")).status_code == 404


async def test_too_many_unfinished_exports_of_one_client_are_refused_with_429(
    client_with: Any, settings: Settings,
) -> None:
    slow = await client_with(export_page_size=1, export_cpu_share=0.05,
                             export_jobs_per_client=2)
    await populate(slow, settings)
    for _ in range(2):
        assert (await kick_off(slow)).status_code == 202
    refused = await kick_off(slow)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert _message(refused) == "MSG_TOO_MANY_REQUESTS"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"_outputFormat": "text/csv"}, "MSG_EXPORT_FORMAT"),
    ({"_type": "NoSuchType"}, "MSG_EXPORT_TYPE"),
    ({"_type": "AuditEvent"}, "MSG_EXPORT_TYPE"),
    ({"_typeFilter": "Observation?nonsense=1"}, "MSG_EXPORT_TYPE_FILTER"),
    ({"_typeFilter": "Observation?code=1&_sort=date"}, "MSG_EXPORT_TYPE_FILTER"),
    ({"_typeFilter": "Observation"}, "MSG_EXPORT_TYPE_FILTER"),
    ({"_type": "Patient", "_typeFilter": "Observation?code=1"}, "MSG_EXPORT_TYPE_FILTER"),
    ({"_since": "yesterday"}, "MSG_PARAM_INVALID"),
    ({"_elements": "Patient.name.given"}, "MSG_PARAM_INVALID"),
    ({"includeAssociatedData": "LatestProvenanceResources"}, "MSG_EXPORT_PARAM_UNSUPPORTED"),
    ({"organizeOutputBy": "Patient"}, "MSG_EXPORT_PARAM_UNSUPPORTED"),
    ({"patient": "Patient/x"}, "MSG_PARAM_INVALID"),
    ({"unknown": "1"}, "MSG_PARAM_UNKNOWN"),
])
async def test_a_parameter_the_server_cannot_honour_is_a_400_operation_outcome(
    client: httpx.AsyncClient, params: dict[str, str], message: str,
) -> None:
    response = await kick_off(client, params=params)
    assert response.status_code == 400, response.text
    assert _message(response) == message


async def test_kick_off_without_prefer_respond_async_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/fhir/$export")
    assert response.status_code == 400
    assert _message(response) == "MSG_EXPORT_ASYNC_REQUIRED"


async def test_export_of_another_type_level_or_an_unknown_group_is_404(
    client: httpx.AsyncClient,
) -> None:
    assert (await kick_off(client, "/fhir/Observation/$export")).status_code == 404
    unknown = await kick_off(client, "/fhir/Group/no-such-group/$export")
    assert unknown.status_code == 404


async def test_lenient_handling_ignores_what_it_cannot_honour_and_says_so_in_the_error_file(
    client: httpx.AsyncClient, world: World,
) -> None:
    params = {"_type": "Patient,NoSuchType", "includeAssociatedData": "_custom"}
    started = await kick_off(client, params=params,
                             headers={"Prefer": "respond-async, handling=lenient"})
    assert started.status_code == 202, started.text
    manifest = (await finished(client, started.headers["content-location"])).json()
    assert [item["type"] for item in manifest["output"]] == ["Patient"]
    errors = await files(client, manifest, key="error")
    issues = [i for outcome in errors["OperationOutcome"] for i in outcome["issue"]]
    codes = sorted(i["details"]["coding"][0]["code"] for i in issues)
    assert codes == ["MSG_EXPORT_PARAM_UNSUPPORTED", "MSG_EXPORT_TYPE"]
    assert all(i["severity"] == "warning" for i in issues)


# -- what the parameters select ---------------------------------------------------------------


async def test_type_filters_of_one_type_are_ored_and_none_is_exported_twice(
    client: httpx.AsyncClient, world: World,
) -> None:
    params = [("_type", "Observation,Patient"),
              ("_typeFilter", "Observation?category=laboratory"),
              ("_typeFilter", "Observation?category=laboratory,vital-signs")]
    found = await exported(client, params=params)
    observations = [r["id"] for r in found["Observation"]]
    assert sorted(observations) == sorted([world.a.ids["lab"], world.a.ids["vital"],
                                           world.b.ids["lab"], world.b.ids["vital"]])
    only_lab = await exported(client, params=[
        ("_type", "Observation"), ("_typeFilter", "Observation?category=laboratory")])
    assert {r["id"] for r in only_lab["Observation"]} == {world.a.ids["lab"],
                                                           world.b.ids["lab"]}


async def test_since_and_until_select_by_last_updated(
    client: httpx.AsyncClient, world: World,
) -> None:
    first = await exported(client, params={"_type": "Patient"})
    stamp = max(r["meta"]["lastUpdated"] for r in first["Patient"])
    await asyncio.sleep(0.01)
    changed = {**world.a.resources["patient"], "gender": "other"}
    updated = await client.put(f"/fhir/Patient/{world.a.patient}", json=changed, headers=FHIR)
    assert updated.status_code == 200
    since = await exported(client, params={"_type": "Patient", "_since": stamp})
    assert ids(since) == {f"Patient/{world.a.patient}"}
    until = await exported(client, params={"_type": "Patient",
                                           "_until": updated.json()["meta"]["lastUpdated"]})
    assert ids(until) == {f"Patient/{world.b.patient}"}


async def test_elements_cut_resources_and_mark_them_subsetted(
    client: httpx.AsyncClient, world: World,
) -> None:
    found = await exported(client, params={"_type": "Patient,Observation",
                                           "_elements": "Patient.gender,subject"})
    for person in found["Patient"]:
        assert set(person) <= {"resourceType", "id", "meta", "gender", "subject"}
        assert "gender" in person and "name" not in person
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED"} in person["meta"]["tag"]
    for item in found["Observation"]:  # subject, and the mandatory status and code
        assert set(item) == {"resourceType", "id", "meta", "subject", "status", "code"}


async def test_patient_export_holds_the_patient_compartments_only(
    client: httpx.AsyncClient, world: World,
) -> None:
    found = await exported(client, "/fhir/Patient/$export")
    assert "Organization" not in found and "Practitioner" not in found
    assert "Binary" not in found  # in no compartment of the R4 definition
    assert {f"Patient/{world.a.patient}", f"Patient/{world.b.patient}",
            world.a.ref("encounter"), world.b.ref("condition")} <= ids(found)


async def test_patient_parameter_limits_a_patient_export_to_those_patients(
    client: httpx.AsyncClient, world: World,
) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{world.a.patient}"}}]}
    found = await exported(client, "/fhir/Patient/$export", body=body)
    assert ids(found) == {world.a.ref(role) for role in world.a.resources
                          if role not in ("gone", "binary")}
    unknown = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/nobody"}}]}
    refused = await kick_off(client, "/fhir/Patient/$export", body=unknown)
    assert refused.status_code == 400
    assert _message(refused) == "MSG_EXPORT_PATIENT_UNKNOWN"


async def test_output_organized_by_patient_is_blocks_with_a_header_each(
    client: httpx.AsyncClient, world: World,
) -> None:
    started = await kick_off(client, "/fhir/Patient/$export",
                             params={"organizeOutputBy": "Patient"})
    manifest = (await finished(client, started.headers["content-location"])).json()
    assert manifest["outputOrganizedBy"] == "Patient"
    assert all("type" not in item for item in manifest["output"])
    lines = [line for items in (await files(client, manifest)).values() for line in items]
    headers = [n for n, line in enumerate(lines) if line["resourceType"] == "Parameters"]
    assert len(headers) == 2
    for start in headers:
        named = lines[start]["parameter"][0]["valueReference"]["reference"]
        assert f"{lines[start + 1]['resourceType']}/{lines[start + 1]['id']}" == named
    blocks = [lines[start + 1:end] for start, end in zip(headers, [*headers[1:], len(lines)],
                                                          strict=True)]
    for block in blocks:
        patient = f"Patient/{block[0]['id']}"
        person = world.a if block[0]["id"] == world.a.patient else world.b
        assert {f"{r['resourceType']}/{r['id']}" for r in block} == {
            person.ref(role) for role in person.resources if role not in ("gone", "binary")}
        assert patient == person.ref("patient")


# -- Groups -----------------------------------------------------------------------------------


async def test_a_facility_group_exports_the_patients_with_a_visit_there(
    client: httpx.AsyncClient,
) -> None:
    world = await facilities(client)
    group = await create_group(client, cohort(
        "Bệnh nhân của cơ sở 19101",
        "Encounter?service-provider.identifier="
        "http://fhir.ehealth.gov.vn/core/sid/provider-code|19101"))
    found = await exported(client, f"/fhir/Group/{group}/$export")
    assert ids(found) == {world.ref(n) for n in ("p1", "e1", "o1", "p2", "e2", "o2")}


async def test_a_province_group_exports_the_patients_living_there(
    client: httpx.AsyncClient,
) -> None:
    world = await facilities(client)
    group = await create_group(client, cohort("Tỉnh 19", "Patient?address-province=19"))
    found = await exported(client, f"/fhir/Group/{group}/$export",
                           params={"_type": "Patient,Encounter"})
    assert ids(found) == {world.ref(n) for n in ("p1", "e1", "p3", "e3")}


async def test_member_filters_and_named_members_are_intersected(
    client: httpx.AsyncClient,
) -> None:
    world = await facilities(client)
    group = await create_group(client, cohort(
        "Tỉnh 19, cơ sở 19101", "Patient?address-province=19",
        "Encounter?service-provider.identifier="
        "http://fhir.ehealth.gov.vn/core/sid/provider-code|19101",
        members=(world.ref("p1"), world.ref("p3"))))
    found = await exported(client, f"/fhir/Group/{group}/$export", params={"_type": "Patient"})
    assert ids(found) == {world.ref("p1")}
    named = await create_group(client, cohort("Hai người", members=(world.ref("p2"),
                                                                     world.ref("p3"))))
    found = await exported(client, f"/fhir/Group/{named}/$export",
                           params={"_type": "Patient,Observation"})
    assert ids(found) == {world.ref(n) for n in ("p2", "o2", "p3", "o3")}


async def test_a_group_this_server_cannot_evaluate_is_refused_at_kick_off(
    client: httpx.AsyncClient,
) -> None:
    devices = await create_group(client, {"resourceType": "Group", "type": "device",
                                          "actual": True, "name": "Máy"})
    refused = await kick_off(client, f"/fhir/Group/{devices}/$export")
    assert refused.status_code == 400 and _message(refused) == "MSG_EXPORT_GROUP"


async def test_a_resource_in_two_members_compartments_is_exported_once(
    client: httpx.AsyncClient,
) -> None:
    world = await facilities(client)
    shared = {**observation(world.ref("p1")), "performer": [{"reference": world.ref("p2")}]}
    made = await client.post("/fhir/Observation", json=shared, headers=FHIR)
    assert made.status_code == 201, made.text
    group = await create_group(client, cohort("Cả hai", members=(world.ref("p1"),
                                                                  world.ref("p2"))))
    found = await exported(client, f"/fhir/Group/{group}/$export",
                           params={"_type": "Observation"})
    exported_ids = [r["id"] for r in found["Observation"]]
    assert exported_ids.count(made.json()["id"]) == 1
    assert set(exported_ids) == {world.ids["o1"], world.ids["o2"], made.json()["id"]}


async def test_the_capability_statement_lists_export_at_its_three_levels(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    assert "export" in {op["name"] for op in rest["operation"]}
    by_type = {r["type"]: {op["name"] for op in r.get("operation", [])} for r in rest["resource"]}
    assert "export" in by_type["Patient"] and "export" in by_type["Group"]
    assert "export" not in by_type["Observation"]
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement[
        "instantiates"]


async def test_group_and_patient_level_kick_offs_are_polled_the_same_way(
    client: httpx.AsyncClient, world: World,
) -> None:
    group = await create_group(client, cohort("A", members=(f"Patient/{world.a.patient}",)))
    started = await kick_off(client, f"/fhir/Group/{group}/$export")
    assert started.status_code == 202
    done = await finished(client, started.headers["content-location"])
    manifest = done.json()
    assert manifest["request"] == f"http://test/fhir/Group/{group}/$export"
    found = await files(client, manifest)
    assert f"Patient/{world.b.patient}" not in ids(found)
    assert ASYNC["Prefer"] == "respond-async"

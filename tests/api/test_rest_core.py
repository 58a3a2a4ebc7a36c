"""API tests of the FHIR R4 RESTful core: read, vread, create, update, patch, delete, history,
versioning headers, Prefer, formats and the error answers."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.builders import HEALTH_BOOK_RESOURCES, patient

FHIR = {"Content-Type": "application/fhir+json"}


def message_ids(body: dict[str, Any]) -> list[str]:
    return [i["details"]["coding"][0]["code"] for i in body["issue"]]


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert response.status_code == 201, response.text
    return response


@pytest.mark.parametrize("resource_type", sorted(HEALTH_BOOK_RESOURCES))
async def test_each_health_book_resource_type_can_be_created_and_read(
    client: httpx.AsyncClient, resource_type: str
) -> None:
    created = await create(client, HEALTH_BOOK_RESOURCES[resource_type])
    body = created.json()
    read = await client.get(f"/fhir/{resource_type}/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["content-type"].startswith("application/fhir+json")


async def test_create_assigns_id_version_and_location(client: httpx.AsyncClient) -> None:
    response = await create(client, {**patient(), "id": "client-chosen"})
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://test/fhir/Patient/{body['id']}/_history/1"
    assert "last-modified" in response.headers


async def test_update_creates_new_version_and_vread_returns_each(
    client: httpx.AsyncClient,
) -> None:
    body = (await create(client, patient())).json()
    body["gender"] = "female"
    updated = await client.put(f"/fhir/Patient/{body['id']}", json=body, headers=FHIR)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    first = await client.get(f"/fhir/Patient/{body['id']}/_history/1")
    assert first.json()["gender"] == "male"
    second = await client.get(f"/fhir/Patient/{body['id']}/_history/2")
    assert second.json()["gender"] == "female"
    missing = await client.get(f"/fhir/Patient/{body['id']}/_history/3")
    assert missing.status_code == 404


async def test_update_with_identical_content_creates_no_new_version(
    client: httpx.AsyncClient,
) -> None:
    body = (await create(client, patient())).json()
    again = await client.put(f"/fhir/Patient/{body['id']}", json=body, headers=FHIR)
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"
    history = (await client.get(f"/fhir/Patient/{body['id']}/_history")).json()
    assert len(history["entry"]) == 1


async def test_update_as_create_with_client_id_returns_201(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/vn-001", json={**patient(), "id": "vn-001"},
                                headers=FHIR)
    assert response.status_code == 201
    assert response.json()["id"] == "vn-001"


async def test_update_with_id_mismatch_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/fhir/Patient/a", json={**patient(), "id": "b"}, headers=FHIR)
    assert response.status_code == 400
    assert message_ids(response.json()) == ["MSG_RES_ID_MISMATCH"]
    no_id = await client.put("/fhir/Patient/a", json=patient(), headers=FHIR)
    assert no_id.status_code == 400


async def test_if_match_mismatch_gives_412_and_match_succeeds(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    body["gender"] = "female"
    stale = await client.put(f"/fhir/Patient/{body['id']}", json=body,
                             headers={**FHIR, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    fresh = await client.put(f"/fhir/Patient/{body['id']}", json=body,
                             headers={**FHIR, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200


async def test_delete_then_read_is_410_and_history_keeps_deletion(
    client: httpx.AsyncClient,
) -> None:
    body = (await create(client, patient())).json()
    deleted = await client.delete(f"/fhir/Patient/{body['id']}")
    assert deleted.status_code == 204
    gone = await client.get(f"/fhir/Patient/{body['id']}")
    assert gone.status_code == 410
    assert message_ids(gone.json()) == ["MSG_DELETED"]
    history = (await client.get(f"/fhir/Patient/{body['id']}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert (await client.delete(f"/fhir/Patient/{body['id']}")).status_code == 204
    assert (await client.delete("/fhir/Patient/never-was")).status_code == 404


async def test_update_after_delete_recreates_with_next_version(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    await client.delete(f"/fhir/Patient/{body['id']}")
    again = await client.put(f"/fhir/Patient/{body['id']}", json=body, headers=FHIR)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


async def test_patch_applies_json_patch(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/active", "value": True}]
    response = await client.patch(f"/fhir/Patient/{body['id']}", content=orjson.dumps(ops),
                                  headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "female"
    assert response.json()["meta"]["versionId"] == "2"


async def test_patch_that_breaks_the_resource_is_rejected(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    ops = [{"op": "add", "path": "/bogus", "value": 1}]
    response = await client.patch(f"/fhir/Patient/{body['id']}", content=orjson.dumps(ops),
                                  headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.bogus"]
    wrong_type = await client.patch(f"/fhir/Patient/{body['id']}", content=orjson.dumps(ops),
                                    headers=FHIR)
    assert wrong_type.status_code == 415


async def test_history_levels_and_paging(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient(cccd=f"00109001234{i}"))).json()["id"] for i in range(3)]
    await create(client, HEALTH_BOOK_RESOURCES["Observation"])
    type_history = (await client.get("/fhir/Patient/_history")).json()
    assert type_history["type"] == "history"
    assert [e["resource"]["id"] for e in type_history["entry"]] == ids[::-1]
    page1 = (await client.get("/fhir/Patient/_history", params={"_count": 2})).json()
    assert [e["resource"]["id"] for e in page1["entry"]] == ids[:0:-1]
    next_url = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    page2 = (await client.get(next_url.removeprefix("http://test"))).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ids[:1]
    system = (await client.get("/fhir/_history", params={"_count": 100})).json()
    types = {e["resource"]["resourceType"] for e in system["entry"]}
    assert {"Patient", "Observation"} <= types


async def test_history_since_and_at(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    first_time = body["meta"]["lastUpdated"]
    body["gender"] = "female"
    second = (await client.put(f"/fhir/Patient/{body['id']}", json=body, headers=FHIR)).json()
    since = (await client.get(f"/fhir/Patient/{body['id']}/_history",
                              params={"_since": second["meta"]["lastUpdated"]})).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["2"]
    at = (await client.get(f"/fhir/Patient/{body['id']}/_history",
                           params={"_at": first_time})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["1"]
    bad = await client.get("/fhir/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400


async def test_history_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/fhir/Patient/nope/_history")).status_code == 404


@pytest.mark.parametrize(
    ("prefer", "has_body"),
    [("return=minimal", False), ("return=representation", True)],
)
async def test_prefer_return(client: httpx.AsyncClient, prefer: str, has_body: bool) -> None:
    response = await client.post("/fhir/Patient", json=patient(),
                                 headers={**FHIR, "Prefer": prefer})
    assert response.status_code == 201
    assert bool(response.content) is has_body
    assert "location" in response.headers


async def test_prefer_return_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", json=patient(),
                                 headers={**FHIR, "Prefer": "return=OperationOutcome"})
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_formats_pretty_and_unsupported(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    pretty = await client.get(f"/fhir/Patient/{body['id']}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content
    plain_json = await client.get(f"/fhir/Patient/{body['id']}",
                                  headers={"Accept": "application/json"})
    assert plain_json.status_code == 200
    xml = await client.get(f"/fhir/Patient/{body['id']}",
                           headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 406
    assert "application/fhir+json" in xml.json()["issue"][0]["diagnostics"]
    xml_format = await client.get(f"/fhir/Patient/{body['id']}", params={"_format": "xml"})
    assert xml_format.status_code == 406
    posted_xml = await client.post("/fhir/Patient", content=b"<Patient/>",
                                   headers={"Content-Type": "application/fhir+xml"})
    assert posted_xml.status_code == 415


async def test_plain_json_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient", content=orjson.dumps(patient()),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "message_id", "expression"),
    [
        (b"{not json", 400, "MSG_JSON_INVALID", None),
        (b"[1, 2]", 400, "MSG_JSON_OBJECT", None),
        (orjson.dumps({"resourceType": "Patient", "gender": 5}), 400, "MSG_VALUE_INVALID",
         ["Patient.gender"]),
        (orjson.dumps({"resourceType": "Patient", "name": [{"family": "A", "x": 1}]}), 400,
         "MSG_UNKNOWN_ELEMENT", ["Patient.name[0].x"]),
        (orjson.dumps({"resourceType": "Patient", "birthDate": "2023-02-30"}), 400,
         "MSG_VALUE_INVALID", ["Patient.birthDate"]),
        (orjson.dumps({"resourceType": "Patient", "name": []}), 400, "MSG_EMPTY_VALUE",
         ["Patient.name"]),
        (orjson.dumps({"resourceType": "Observation", "status": "final"}), 400,
         "MSG_RESOURCE_TYPE_MISMATCH", ["resourceType"]),
    ],
)
async def test_bad_bodies_get_operation_outcome(
    client: httpx.AsyncClient, body: bytes, status: int, message_id: str,
    expression: list[str] | None,
) -> None:
    response = await client.post("/fhir/Patient", content=body, headers=FHIR)
    assert response.status_code == status
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == message_id
    if expression is not None:
        assert issue["expression"] == expression


async def test_required_binding_violation_is_400_with_expression(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/fhir/Patient", json=patient(gender="xx"), headers=FHIR)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.gender"]


async def test_unknown_type_and_id_are_404(client: httpx.AsyncClient) -> None:
    unknown_type = await client.get("/fhir/Patients/1")
    assert unknown_type.status_code == 404
    assert message_ids(unknown_type.json()) == ["MSG_UNKNOWN_TYPE"]
    unknown_id = await client.get("/fhir/Patient/does-not-exist")
    assert unknown_id.status_code == 404
    assert message_ids(unknown_id.json()) == ["MSG_NO_EXIST"]


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/123/_history")
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    big = patient(text={"status": "generated",
                        "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                               + "x" * 70_000 + "</div>"})
    response = await client.post("/fhir/Patient", json=big, headers=FHIR)
    assert response.status_code == 413
    assert message_ids(response.json()) == ["MSG_BODY_TOO_LARGE"]


async def test_unexpected_failure_is_generic_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.interactions import read

    async def broken(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(read, "read", broken)
    response = await client.get("/fhir/Patient/x")
    assert response.status_code == 500
    assert "secret" not in response.text
    assert message_ids(response.json()) == ["MSG_INTERNAL_ERROR"]


async def test_every_response_has_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/metadata")
    assert len(response.headers["x-request-id"]) >= 16
    echoed = await client.get("/fhir/metadata", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"


async def test_conditional_read_not_modified(client: httpx.AsyncClient) -> None:
    body = (await create(client, patient())).json()
    response = await client.get(f"/fhir/Patient/{body['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_capability_statement_lists_types_and_interactions(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    assert statement["fhirVersion"] == "4.0.1"
    assert "application/fhir+json" in statement["format"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert len(resources) == 146
    codes = {i["code"] for i in resources["Patient"]["interaction"]}
    assert {"read", "vread", "create", "update", "patch", "delete", "history-instance"} <= codes


async def test_the_capability_statement_is_built_once_and_still_shaped_per_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.router import dispatch

    builds: list[int] = []
    build = dispatch.capability_statement

    def counting(services: Any) -> dict[str, Any]:
        builds.append(1)
        return build(services)

    monkeypatch.setattr(dispatch, "capability_statement", counting)
    first = await client.get("/fhir/metadata")
    second = await client.get("/fhir/metadata")
    assert first.json() == second.json() and first.json()["resourceType"] == "CapabilityStatement"
    assert len(builds) == 1
    pretty = await client.get("/fhir/metadata", params={"_pretty": "true"})
    assert pretty.text.startswith("{\n") and pretty.json() == first.json()
    summary = await client.get("/fhir/metadata", params={"_elements": "fhirVersion"})
    assert summary.json()["fhirVersion"] == "4.0.1" and "rest" not in summary.json()


async def test_concurrent_updates_with_same_if_match_have_exactly_one_winner(
    client: httpx.AsyncClient,
) -> None:
    import asyncio

    body = (await create(client, patient())).json()
    puts = [client.put(f"/fhir/Patient/{body['id']}", json={**body, "gender": g},
                       headers={**FHIR, "If-Match": 'W/"1"'}) for g in ("female", "other")]
    statuses = sorted(r.status_code for r in await asyncio.gather(*puts))
    assert statuses == [200, 412]


async def test_capability_statement_declares_smart_security_and_operations(
    client: httpx.AsyncClient,
) -> None:
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert "validate" in {o["name"] for o in patient["operation"]}
    params = {p["name"] for p in patient["searchParam"]}
    assert {"identifier", "name", "birthdate", "_id", "_lastUpdated"} <= params
    assert "_text" not in params

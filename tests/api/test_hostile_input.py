"""Hostile and malformed requests: each answered with an OperationOutcome and a 4xx naming
what was wrong (or the limit exceeded), never a 500 and never unbounded work."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import patient

FHIR = {"Content-Type": "application/fhir+json"}


def _message_ids(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [i["details"]["coding"][0]["code"] for i in body["issue"]]


async def _patient_id(client: httpx.AsyncClient) -> str:
    response = await client.post("/fhir/Patient", json=patient(), headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("vid", ["9223372036854775808", "9" * 5000, "²", "1x"])
async def test_vread_of_an_impossible_version_is_404(client: httpx.AsyncClient,
                                                     vid: str) -> None:
    id = await _patient_id(client)
    response = await client.get(f"/fhir/Patient/{id}/_history/{vid}")
    assert response.status_code == 404
    assert _message_ids(response) == ["MSG_NO_EXIST_VERSION"]


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/Patient/_history",
                                  "/fhir/_history"])
async def test_a_count_of_5000_digits_is_capped_not_a_500(client: httpx.AsyncClient,
                                                          path: str) -> None:
    id = await _patient_id(client)
    response = await client.get(path, params={"_count": "9" * 5000})
    assert response.status_code == 200, response.text
    assert id in {e["resource"]["id"] for e in response.json()["entry"]}


@pytest.mark.parametrize("count", ["²", "-1", "1.5"])
async def test_a_count_that_is_no_number_is_400(client: httpx.AsyncClient, count: str) -> None:
    for path in ("/fhir/Patient", "/fhir/Patient/_history"):
        response = await client.get(path, params={"_count": count})
        assert response.status_code == 400, (path, response.text)
        assert _message_ids(response) == ["MSG_PARAM_INVALID"]


async def test_a_history_cursor_of_5000_digits_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/_history", params={"_cursor": "9" * 5000})
    assert response.status_code == 400
    assert _message_ids(response) == ["MSG_PAGE_CURSOR_INVALID"]


@pytest.mark.parametrize("header", ["If-None-Match", "If-Match"])
async def test_a_version_tag_of_5000_digits_is_400(client: httpx.AsyncClient,
                                                   header: str) -> None:
    id = await _patient_id(client)
    tag = 'W/"' + "9" * 5000 + '"'
    if header == "If-None-Match":
        response = await client.get(f"/fhir/Patient/{id}", headers={header: tag})
    else:
        response = await client.put(f"/fhir/Patient/{id}", json={**patient(), "id": id},
                                    headers={**FHIR, header: tag})
    assert response.status_code == 400
    assert _message_ids(response) == ["MSG_HEADER_INVALID"]


async def test_a_form_search_body_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/Patient/_search", content=b"name=\xff\xfe",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert _message_ids(response) == ["MSG_FORM_INVALID"]


async def test_an_id_of_65_characters_is_400(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/fhir/Patient/" + "a" * 65,
                                        json=patient(), headers=FHIR)
        assert response.status_code == 400, method
        assert _message_ids(response) == ["MSG_ID_INVALID"]
    assert (await client.get("/fhir/Patient/" + "a" * 64)).status_code == 404


def _limit_error(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 400, response.text[:300]
    assert _message_ids(response) == ["MSG_LIMIT_EXCEEDED"]
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert f"FHIR_SERVER_{setting.upper()}" in issue["diagnostics"]


HOSTILE_SEARCHES: list[tuple[str, list[tuple[str, str]]]] = [
    ("search_max_chain_depth", [("_has:Patient:link:" * 30 + "name", "x")]),
    ("search_max_chain_depth", [("general-practitioner.organization.partof.partof.partof."
                                 "name", "x")]),
    ("search_max_parameters", [("name", "x")] * 3000),
    ("search_max_parameters", [("_sort", "name")] * 3000),
    ("search_max_sort_keys", [("_sort", ",".join(["name"] * 500))]),
    ("search_max_values", [("_id", ",".join(f"p{i}" for i in range(3000)))]),
    ("search_max_includes", [("_include", "Patient:organization")] * 20),
]


@pytest.mark.parametrize(("setting", "params"), HOSTILE_SEARCHES,
                         ids=[f"{s}-{i}" for i, (s, _) in enumerate(HOSTILE_SEARCHES)])
async def test_a_search_beyond_a_limit_is_400_naming_it(
    client: httpx.AsyncClient, setting: str, params: list[tuple[str, str]]
) -> None:
    _limit_error(await client.get("/fhir/Patient", params=params), setting)


async def test_search_limits_are_settings(client_with: Any) -> None:
    client = await client_with(search_max_sort_keys=1, search_max_parameters=3)
    _limit_error(await client.get("/fhir/Patient", params={"_sort": "name,birthdate"}),
                 "search_max_sort_keys")
    _limit_error(await client.get("/fhir/Patient", params=[("name", "a")] * 4),
                 "search_max_parameters")
    assert (await client.get("/fhir/Patient", params=[("name", "a")] * 3)).status_code == 200


async def test_a_string_element_beyond_the_limit_is_400(client_with: Any) -> None:
    client = await client_with(max_string_chars=1000)
    big = patient(family="N" * 1001)
    _limit_error(await client.post("/fhir/Patient", json=big, headers=FHIR), "max_string_chars")
    fits = patient(family="N" * 900)
    assert (await client.post("/fhir/Patient", json=fits, headers=FHIR)).status_code == 201

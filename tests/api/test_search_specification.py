"""Search as R4 specifies it where the server used to differ: ``sa``/``eb`` exclude the value
itself, ``:below`` understands ICD-10 ranges, and ``_include=*``/``*:*`` follow every
reference (a filter the server cannot evaluate is reported, never dropped silently)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import HEALTH_BOOK_RESOURCES, observation, patient

FHIR = {"Content-Type": "application/fhir+json"}
ICD10 = "http://hl7.org/fhir/sid/icd-10"


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                 headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _matches(body: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"}


def _warnings(body: dict[str, Any]) -> list[str]:
    return [i["details"]["coding"][0]["code"] for e in body.get("entry", [])
            if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]]


async def test_sa_and_eb_exclude_the_value_itself(client: httpx.AsyncClient) -> None:
    subject = f"Patient/{await _create(client, patient())}"
    ids = {value: await _create(client, observation(subject, value=value))
           for value in (99.0, 100.0, 100.4, 101.0)}
    above = await client.get("/fhir/Observation", params={"value-quantity": "sa100"})
    assert _matches(above.json()) == {ids[101.0]}
    below = await client.get("/fhir/Observation", params={"value-quantity": "eb100"})
    assert _matches(below.json()) == {ids[99.0]}
    greater = await client.get("/fhir/Observation", params={"value-quantity": "gt100"})
    assert _matches(greater.json()) == {ids[100.4], ids[101.0]}


def _condition(subject: str, code: str) -> dict[str, Any]:
    condition = dict(HEALTH_BOOK_RESOURCES["Condition"])
    condition.update(subject={"reference": subject},
                     code={"coding": [{"system": ICD10, "code": code}]})
    return condition


async def test_token_below_an_icd10_range(client: httpx.AsyncClient) -> None:
    subject = f"Patient/{await _create(client, patient())}"
    ids = {code: await _create(client, _condition(subject, code))
           for code in ("J06.9", "J45", "K29.7", "I10")}
    respiratory = await client.get("/fhir/Condition", params={"code:below": f"{ICD10}|J00-J99"})
    assert _matches(respiratory.json()) == {ids["J06.9"], ids["J45"]}
    assert not _warnings(respiratory.json())
    two_chapters = await client.get("/fhir/Condition",
                                    params={"code:below": f"{ICD10}|I00-K93"})
    assert _matches(two_chapters.json()) == {ids["J06.9"], ids["J45"], ids["K29.7"], ids["I10"]}
    every_chapter = await client.get("/fhir/Condition",
                                     params={"code:below": f"{ICD10}|A00-Z99"})
    assert _matches(every_chapter.json()) == set(ids.values())


async def test_a_below_the_server_cannot_expand_is_reported_or_refused(
    client: httpx.AsyncClient,
) -> None:
    lenient = await client.get("/fhir/Condition", params={"code:below": "http://snomed.info/sct|"
                                                          "404684003"})
    assert lenient.status_code == 200
    assert _warnings(lenient.json()) == ["MSG_PARAM_MODIFIER_UNSUPPORTED"]
    strict = await client.get("/fhir/Condition", params={"code:below": f"{ICD10}|Z00-Q"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


@pytest.mark.parametrize("value", ["*", "*:*"])
async def test_include_wildcards_follow_every_reference(
    client: httpx.AsyncClient, value: str
) -> None:
    organization = await _create(client, HEALTH_BOOK_RESOURCES["Organization"])
    subject = await _create(client, patient(managingOrganization={
        "reference": f"Organization/{organization}"}))
    found = await client.get("/fhir/Patient", params={"_id": subject, "_include": value})
    assert found.status_code == 200, found.text
    included = {e["resource"]["id"] for e in found.json()["entry"]
                if e["search"]["mode"] == "include"}
    assert included == {organization}
    assert not _warnings(found.json())


async def test_revinclude_wildcard_is_reported_or_refused(client: httpx.AsyncClient) -> None:
    lenient = await client.get("/fhir/Patient", params={"_revinclude": "*:*"})
    assert _warnings(lenient.json()) == ["MSG_PARAM_UNSUPPORTED"]
    strict = await client.get("/fhir/Patient", params={"_revinclude": "*"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400

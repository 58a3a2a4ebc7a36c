"""API tests of search over HTTP: paging while others write, includes, chaining, _has,
sorting, POST _search, compartment and system search, and the error answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import CCCD_SYSTEM, observation, patient
from tests.conftest import on_sqlite_only

FHIR = {"Content-Type": "application/fhir+json"}


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource,
                                 headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _ids(body: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == mode]


def _next(body: dict[str, Any]) -> str | None:
    url = next((link["url"] for link in body["link"] if link["relation"] == "next"), None)
    return url.removeprefix("http://test") if url else None


@pytest.fixture
async def people(client: httpx.AsyncClient) -> dict[str, str]:
    names = {"an": ("Nguyễn", "001090000001"), "binh": ("Đặng", "001090000002"),
             "chi": ("Trần", "001090000003")}
    made = {}
    for key, (family, cccd) in names.items():
        made[key] = await _create(client, patient(cccd=cccd, family=family))
    return made


async def test_accent_insensitive_name_and_identifier(
    client: httpx.AsyncClient, people: dict[str, str]
) -> None:
    by_name = (await client.get("/fhir/Patient", params={"family": "dang"})).json()
    assert _ids(by_name) == [people["binh"]]
    by_cccd = (await client.get("/fhir/Patient", params={
        "identifier": f"{CCCD_SYSTEM}|001090000003"})).json()
    assert _ids(by_cccd) == [people["chi"]]


async def test_paging_is_stable_while_others_write(
    client: httpx.AsyncClient, people: dict[str, str]
) -> None:
    page = (await client.get("/fhir/Patient", params={"_count": 2, "_sort": "_id"})).json()
    seen = _ids(page)
    written = False
    while (link := _next(page)) is not None:
        if not written:  # a write between pages must not shift or repeat them
            await _create(client, patient(cccd="001090000009", family="Bùi"))
            written = True
        page = (await client.get(link)).json()
        seen += _ids(page)
    assert len(seen) == len(set(seen))
    assert set(people.values()) <= set(seen)


async def test_tampered_cursor_is_400(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    first = (await client.get("/fhir/Patient", params={"_count": 1})).json()
    link = _next(first) or ""
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    response = await client.get(tampered)
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "MSG_CURSOR_INVALID"


async def test_unknown_parameter_lenient_outcome_and_strict_400(client: httpx.AsyncClient) -> None:
    lenient = (await client.get("/fhir/Patient", params={"shoe-size": "42"})).json()
    outcomes = [e for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    strict = await client.get("/fhir/Patient", params={"shoe-size": "42"},
                              headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    invalid = await client.get("/fhir/Patient", params={"birthdate": "abc"})
    assert invalid.status_code == 400
    assert "birthdate" in invalid.json()["issue"][0]["diagnostics"]


async def test_include_revinclude_chain_has_and_sort(
    client: httpx.AsyncClient, people: dict[str, str]
) -> None:
    low = await _create(client, observation(f"Patient/{people['an']}", value=60))
    high = await _create(client, observation(f"Patient/{people['an']}", value=90))
    other = await _create(client, observation(f"Patient/{people['binh']}", value=70))
    included = (await client.get("/fhir/Observation", params={
        "subject": f"Patient/{people['an']}", "_include": "Observation:subject"})).json()
    assert sorted(_ids(included)) == sorted([low, high])
    assert _ids(included, "include") == [people["an"]]
    reverse = (await client.get("/fhir/Patient", params={
        "_id": people["binh"], "_revinclude": "Observation:subject"})).json()
    assert _ids(reverse, "include") == [other]
    chained = (await client.get("/fhir/Observation", params={
        "subject:Patient.identifier": f"{CCCD_SYSTEM}|001090000002"})).json()
    assert _ids(chained) == [other]
    has = (await client.get("/fhir/Patient", params={
        "_has:Observation:subject:value-quantity": "gt80"})).json()
    assert _ids(has) == [people["an"]]
    ordered = (await client.get("/fhir/Observation", params={
        "_sort": "-value-quantity"})).json()
    assert _ids(ordered) == [high, other, low]


async def test_post_search_compartment_and_system_search(
    client: httpx.AsyncClient, people: dict[str, str]
) -> None:
    mine = await _create(client, observation(f"Patient/{people['chi']}"))
    posted = await client.post("/fhir/Observation/_search",
                               data={"subject": f"Patient/{people['chi']}"})
    assert _ids(posted.json()) == [mine]
    compartment = (await client.get(f"/fhir/Patient/{people['chi']}/Observation")).json()
    assert _ids(compartment) == [mine]
    system = (await client.get("/fhir", params={"_type": "Observation",
                                                "_id": mine})).json()
    assert _ids(system) == [mine]
    counted = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()
    assert counted["total"] == 3


async def test_count_defaults_and_maximum_come_from_settings(client_with: Any) -> None:
    http = await client_with(default_count=2, max_count=3)
    for number in range(5):
        await _create(http, patient(cccd=f"00109000002{number}"))
    default = (await http.get("/fhir/Patient")).json()
    assert len(_ids(default)) == 2
    capped = (await http.get("/fhir/Patient", params={"_count": 100})).json()
    assert len(_ids(capped)) == 3


async def test_combo_parameters_search_code_and_components_together(
    client: httpx.AsyncClient, people: dict[str, str]
) -> None:
    """combo-code and combo-value-quantity span the Observation and its components (the
    embedded store keeps no rows of its own for them: docs/search.md)."""
    subject = f"Patient/{people['an']}"
    heart = await _create(client, observation(subject, "8867-4", 72))
    pressure = observation(subject, "85354-9", 0)
    del pressure["valueQuantity"]
    pressure["component"] = [
        {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
         "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}}
        for code, value in (("8480-6", 130), ("8462-4", 85))
    ]
    bp = await _create(client, pressure)

    async def ids(**params: str) -> list[str]:
        answer = await client.get("/fhir/Observation", params={**params, "_count": "50"})
        assert answer.status_code == 200, answer.text
        return _ids(answer.json())

    assert await ids(**{"combo-code": "8480-6"}) == [bp]
    assert sorted(await ids(**{"combo-code": "http://loinc.org|8867-4,8462-4"})) == sorted(
        [heart, bp])
    assert await ids(**{"combo-code:not": "8462-4", "subject": subject}) == [heart]
    assert await ids(**{"combo-value-quantity": "gt100"}) == [bp]
    assert await ids(**{"combo-value-quantity": "lt80", "subject": subject}) == [heart]
    assert await ids(**{"combo-code:missing": "false", "_sort": "combo-code"}) == [bp, heart]


@on_sqlite_only
async def test_a_search_past_the_time_limit_answers_503_too_costly(
    client_with: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage.sqlite import store as store_module

    http = await client_with(search_timeout_s=0.1)
    await _create(http, patient(cccd="001090000001", family="Nguyễn"))
    real = store_module.run_search

    def endless(conn: Any, *args: Any) -> Any:
        conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                     "LIMIT 200000000) SELECT count(*) FROM c").fetchone()
        return real(conn, *args)

    monkeypatch.setattr(store_module, "run_search", endless)
    response = await http.get("/fhir/Patient", params={"family": "nguyen"})
    assert response.status_code == 503
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["details"]["coding"][0]["code"] == "MSG_SEARCH_TOO_COSTLY"
    monkeypatch.undo()
    again = await http.get("/fhir/Patient", params={"family": "nguyen"})
    assert again.status_code == 200 and len(_ids(again.json())) == 1

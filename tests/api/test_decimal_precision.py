"""Decimals keep their precision (R4 datatypes.html#decimal): what is written is read back,
through read, vread, search, history, Bundles, PATCH and _pretty, on every store."""

from __future__ import annotations

import re

import httpx

from tests import builders
from tests.builders import observation

FHIR = {"Content-Type": "application/fhir+json"}
DECIMALS = ("1.50", "105.00", "1.000000000000000000E-245", "0.1000000000000000000001",
            "123456789012345678901234567890", "7.0", "2")


def _observation_text(value: str, component: str, subject: str = "Patient/p1") -> bytes:
    """An Observation whose quantities are written with the given texts."""
    resource = observation(subject, value=0.0)
    body = httpx.Request("POST", "http://x", json=resource).content.decode()
    body = body.replace('"value":0.0', f'"value":{value}')
    return body.replace('"effectiveDateTime"', '"component":[{"code":{"text":"c"},'
                        f'"valueQuantity":{{"value": {component} }}}}],"effectiveDateTime"'
                        ).encode()


def _numbers(text: str) -> list[str]:
    """The texts of the quantity values in the JSON ``text``, sorted."""
    return sorted(re.findall(r'"value": ?([-0-9.eE+]+)', text))


async def test_decimals_read_back_as_written_everywhere(client: httpx.AsyncClient) -> None:
    for value, component in zip(DECIMALS, reversed(DECIMALS), strict=True):
        created = await client.post("/fhir/Observation", content=_observation_text(
            value, component), headers=FHIR)
        assert created.status_code == 201, created.text
        assert _numbers(created.text) == sorted([value, component])
        id = created.json()["id"]
        read = await client.get(f"/fhir/Observation/{id}")
        assert _numbers(read.text) == sorted([value, component])
        pretty = await client.get(f"/fhir/Observation/{id}", params={"_pretty": "true"})
        assert _numbers(pretty.text) == sorted([value, component])
        vread = await client.get(f"/fhir/Observation/{id}/_history/1")
        assert _numbers(vread.text) == sorted([value, component])
        found = await client.get("/fhir/Observation", params={"_id": id})
        assert _numbers(found.text) == sorted([value, component])
        history = await client.get(f"/fhir/Observation/{id}/_history")
        assert _numbers(history.text) == sorted([value, component])


async def test_a_change_of_precision_alone_is_a_new_version(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Observation", content=_observation_text("1.5", "2"),
                                headers=FHIR)
    id = created.json()["id"]
    body = _observation_text("1.50", "2").replace(b'{"resourceType":"Observation",',
                                                  f'{{"resourceType":"Observation","id":"{id}",'
                                                  .encode())
    updated = await client.put(f"/fhir/Observation/{id}", content=body, headers=FHIR)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    read = await client.get(f"/fhir/Observation/{id}")
    assert _numbers(read.text) == sorted(["1.50", "2"])
    again = await client.put(f"/fhir/Observation/{id}", content=body, headers=FHIR)
    assert again.json()["meta"]["versionId"] == "2"  # same text: no new version


async def test_decimals_in_a_transaction_and_a_patch(client: httpx.AsyncClient) -> None:
    patient = await client.post("/fhir/Patient", json=builders.patient(), headers=FHIR)
    subject = f"Patient/{patient.json()['id']}"
    resource = _observation_text("36.60", "1.0E2", subject).decode()
    bundle = ('{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":'
              '"urn:uuid:0b0c4f0e-1a52-4ef1-9cbb-111111111111","resource":' + resource
              + ',"request":{"method":"POST","url":"Observation"}}]}')
    answer = await client.post("/fhir", content=bundle.encode(),
                               headers={**FHIR, "Prefer": "return=representation"})
    assert answer.status_code == 200, answer.text
    location = answer.json()["entry"][0]["response"]["location"]
    id = location.split("/")[1]
    read = await client.get(f"/fhir/Observation/{id}")
    assert _numbers(read.text) == sorted(["36.60", "1.0E2"])
    patch = b'[{"op":"replace","path":"/valueQuantity/value","value":37.10}]'
    patched = await client.patch(f"/fhir/Observation/{id}", content=patch,
                                 headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    read = await client.get(f"/fhir/Observation/{id}")
    assert _numbers(read.text) == sorted(["37.10", "1.0E2"])


async def test_search_compares_exact_decimals_by_value(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Observation", content=_observation_text("1.50", "2"),
                                headers=FHIR)
    id = created.json()["id"]
    for query in ("1.5", "1.50", "ge1.49", "le1.500"):
        found = await client.get("/fhir/Observation", params={"value-quantity": query})
        assert [e["resource"]["id"] for e in found.json().get("entry", [])
                if e["search"]["mode"] == "match"] == [id], query

"""Helpers of the bulk export tests: kick an export off, poll it to its end, read its files;
and a small world of two facilities and three patients in two provinces, for Groups."""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.builders import HEALTH_BOOK_RESOURCES, observation, patient

ASYNC = {"Prefer": "respond-async"}
FHIR = {"Content-Type": "application/fhir+json"}
FACILITY_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"
MEMBER_FILTER = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/member-filter"
#: Provinces and a commune of each (CodeSystem/province and CodeSystem/commune).
PROVINCES = {"19": "05443", "01": "00004"}


def local(url: str) -> str:
    """A URL of the test server as the in-process client asks for it."""
    return url.removeprefix("http://test")


async def kick_off(http: httpx.AsyncClient, path: str = "/fhir/$export",
                   params: dict[str, Any] | list[tuple[str, str]] | None = None,
                   headers: dict[str, str] | None = None,
                   body: dict[str, Any] | None = None) -> httpx.Response:
    """Send a kick-off request (GET, or POST with a Parameters ``body``)."""
    merged = {**ASYNC, **(headers or {})}
    if body is not None:
        return await http.post(path, params=params, content=orjson.dumps(body),
                               headers={**FHIR, **merged})
    return await http.get(path, params=params, headers=merged)


async def finished(http: httpx.AsyncClient, location: str,
                   headers: dict[str, str] | None = None, timeout_s: float = 60.0
                   ) -> httpx.Response:
    """Poll a status location until it answers something else than 202."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(local(location), headers=headers)
        if response.status_code != 202:
            return response
        assert time.monotonic() < deadline, f"the export did not end: {response.headers}"
        await asyncio.sleep(0.05)


async def files(http: httpx.AsyncClient, manifest: dict[str, Any],
                headers: dict[str, str] | None = None, key: str = "output"
                ) -> dict[str, list[dict[str, Any]]]:
    """The resources of a manifest's files, by the ``type`` of each file (or its url)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest[key]:
        response = await http.get(local(item["url"]), headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in response.content.splitlines() if line]
        assert len(lines) == item["count"]
        found.setdefault(item.get("type", item["url"]), []).extend(lines)
    return found


async def exported(http: httpx.AsyncClient, path: str = "/fhir/$export",
                   params: dict[str, Any] | list[tuple[str, str]] | None = None,
                   headers: dict[str, str] | None = None,
                   body: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run an export to its end and return its resources by type."""
    started = await kick_off(http, path, params, headers, body)
    assert started.status_code == 202, started.text
    done = await finished(http, started.headers["content-location"], headers)
    assert done.status_code == 200, done.text
    return await files(http, done.json(), headers)


def ids(found: dict[str, list[dict[str, Any]]]) -> set[str]:
    """``Type/id`` of every exported resource."""
    return {f"{r['resourceType']}/{r['id']}" for items in found.values() for r in items}


@dataclass
class Facilities:
    """Two facilities (``f1``: code 19101, ``f2``: 01929) and three patients: ``p1`` (province
    19) visited f1, ``p2`` (province 01) visited f1, ``p3`` (province 19) visited f2. Each
    visit has an Observation. Ids by name."""

    ids: dict[str, str]

    def ref(self, name: str) -> str:
        kind = {"f": "Organization", "p": "Patient", "e": "Encounter", "o": "Observation"}
        return f"{kind[name[0]]}/{self.ids[name]}"


def _resident(cccd: str, province: str) -> dict[str, Any]:
    address = {"extension": [
        {"url": "https://fhir.sskdt.vn/StructureDefinition/address-province-code",
         "valueCode": province},
        {"url": "https://fhir.sskdt.vn/StructureDefinition/address-commune-code",
         "valueCode": PROVINCES[province]}], "use": "home", "country": "VN"}
    return patient(cccd=cccd, address=[address])


async def _create(http: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await http.post(f"/fhir/{resource['resourceType']}", json=resource,
                               headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def facilities(http: httpx.AsyncClient) -> Facilities:
    """Store the world of :class:`Facilities`."""
    made: dict[str, str] = {}
    for name, code in (("f1", "19101"), ("f2", "01929")):
        org = copy.deepcopy(HEALTH_BOOK_RESOURCES["Organization"])
        org["identifier"] = [{"system": FACILITY_SYSTEM, "value": code}]
        made[name] = await _create(http, org)
    for n, (province, facility) in enumerate((("19", "f1"), ("01", "f1"), ("19", "f2")), 1):
        made[f"p{n}"] = await _create(http, _resident(f"0{province}0900{n:05d}", province))
        encounter = copy.deepcopy(HEALTH_BOOK_RESOURCES["Encounter"])
        encounter.pop("diagnosis", None)
        encounter.update(subject={"reference": f"Patient/{made[f'p{n}']}"},
                         serviceProvider={"reference": f"Organization/{made[facility]}"})
        made[f"e{n}"] = await _create(http, encounter)
        made[f"o{n}"] = await _create(http, observation(f"Patient/{made[f'p{n}']}"))
    return Facilities(made)


def cohort(name: str, *expressions: str, members: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Group of the Bulk Cohort profile: member-filter searches and named patients."""
    group: dict[str, Any] = {"resourceType": "Group", "type": "person", "actual": True,
                             "name": name}
    if expressions:
        group["modifierExtension"] = [
            {"url": MEMBER_FILTER, "valueExpression": {
                "language": "application/x-fhir-query", "expression": text}}
            for text in expressions]
    if members:
        group["member"] = [{"entity": {"reference": ref}} for ref in members]
    return group


async def create_group(http: httpx.AsyncClient, group: dict[str, Any]) -> str:
    """Store a Group as an operator would; return its id."""
    return await _create(http, group)

"""An export is a consistent snapshot of the store at its transactionTime, whatever is written
while it runs: nothing written after that time is in it, nothing is missing, nothing is
repeated (updated, deleted and newly created resources alike, and with a _typeFilter whose
answer the writes change)."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from fhir_server.settings import Settings
from tests.api.bulk_export import FHIR, files, finished, kick_off, local
from tests.api.two_patients import World, populate
from tests.builders import observation
from tests.conftest import API_STORAGE

TYPES = "Patient,Observation,Encounter,Condition"


async def _state(http: httpx.AsyncClient, types: str,
                 params: dict[str, str] | None = None) -> dict[str, str]:
    """``Type/id`` -> versionId of every current resource of ``types``."""
    found: dict[str, str] = {}
    for kind in types.split(","):
        query = {"_count": "1000", **(params or {})}
        bundle = (await http.get(f"/fhir/{kind}", params=query)).json()
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            found[f"{kind}/{resource['id']}"] = resource["meta"]["versionId"]
    return found


async def _write_meanwhile(http: httpx.AsyncClient, worlds: list[World]) -> list[str]:
    """Update every Patient, swap a laboratory and a vital-signs Observation's categories,
    delete results, create new ones; return the new resources' ``Type/id``."""
    created = []
    for world in worlds:
        for person in (world.a, world.b):
            changed = {**person.resources["patient"], "gender": "other"}
            answer = await http.put(f"/fhir/{person.ref('patient')}", json=changed, headers=FHIR)
            assert answer.status_code == 200, answer.text
            for role, category in (("lab", "vital-signs"), ("vital", "laboratory")):
                swapped = copy.deepcopy(person.resources[role])
                swapped["category"][0]["coding"][0]["code"] = category
                answer = await http.put(f"/fhir/{person.ref(role)}", json=swapped, headers=FHIR)
                assert answer.status_code == 200, answer.text
            new = await http.post("/fhir/Observation", json=observation(person.ref("patient")),
                                  headers=FHIR)
            created.append(f"Observation/{new.json()['id']}")
        assert (await http.delete(f"/fhir/{world.a.ref('condition')}")).status_code == 204
    return created


async def _exported(http: httpx.AsyncClient, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for items in (await files(http, manifest)).values() for r in items]


async def test_an_export_is_the_snapshot_at_its_transaction_time_despite_concurrent_writes(
    client_with: Any, settings: Settings,
) -> None:
    # Slow enough that the writes happen while it runs (the stand-in's pages are slower).
    share = 0.5 if API_STORAGE == "mongo-fake" else 0.05
    http = await client_with(export_page_size=1, export_cpu_share=share)
    worlds = [await populate(http, settings) for _ in range(3)]
    before = await _state(http, TYPES)
    lab_before = await _state(http, "Observation", {"category": "laboratory"})
    started = await kick_off(http, params={"_type": TYPES})
    filtered = await kick_off(http, params=[("_type", "Observation"),
                                            ("_typeFilter", "Observation?category=laboratory")])
    created = await _write_meanwhile(http, worlds)
    status = await http.get(local(started.headers["content-location"]))
    assert status.status_code == 202, "the writes were to happen while the export ran"
    done = await finished(http, started.headers["content-location"])
    manifest = done.json()
    exported = await _exported(http, manifest)
    keys = [f"{r['resourceType']}/{r['id']}" for r in exported]
    assert len(keys) == len(set(keys)), "a resource was exported twice"
    assert set(keys) == set(before), "the export is not the snapshot"
    assert {key: r["meta"]["versionId"] for key, r in zip(keys, exported, strict=True)} == before
    assert all(r["meta"]["lastUpdated"] <= manifest["transactionTime"] for r in exported)
    assert not set(created) & set(keys)
    lab = await _exported(http, (await finished(
        http, filtered.headers["content-location"])).json())
    assert {f"Observation/{r['id']}": r["meta"]["versionId"] for r in lab} == lab_before
    assert all(r["category"][0]["coding"][0]["code"] == "laboratory" for r in lab)

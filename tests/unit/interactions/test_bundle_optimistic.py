"""Transactions resolve and index a copy outside the write lock, and verify it inside."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.interactions.bundle import process_bundle
from fhir_server.interactions.context import Services
from fhir_server.loader import open_services
from fhir_server.settings import Settings
from fhir_server.synthetic import generate


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", seed_search_parameters=False)
    async with open_services(settings) as opened:
        yield opened


def _visits(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    out = tmp_path / "visits"
    generate(count, 7, out)
    lines = (out / "visits-00001.ndjson").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def _count_index_calls(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record, per call of ``Services.index``, whether a write transaction was open."""
    calls: list[str] = []
    index = Services.index
    store: Any = services.store

    def spying(self: Services, resource: dict[str, Any]) -> object | None:
        calls.append("in lock" if store._write_lock.locked() else "outside")
        return index(self, resource)

    monkeypatch.setattr(Services, "index", spying)
    return calls


async def test_a_new_visit_is_indexed_outside_the_write_lock(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _visits(tmp_path, 1)[0]
    calls = _count_index_calls(services, monkeypatch)
    outcome = await process_bundle(services, bundle)
    assert outcome.status == 200
    assert calls and set(calls) == {"outside"}


async def test_a_stale_optimistic_answer_is_recomputed_under_the_lock(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patient exists, but the optimistic finds say nothing does (as if another worker
    had just created it): the copy points at a new Patient id, the real resolution at the
    existing one, so the index is computed again and the Encounter is found by its patient."""
    first, second = _visits(tmp_path, 2)[:2]
    await process_bundle(services, first)
    patient_entry = next(e for e in first["entry"] if e["resource"]["resourceType"] == "Patient")
    second["entry"][0] = {**patient_entry, "fullUrl": second["entry"][0]["fullUrl"]}

    async def nothing_found(queries: Sequence[Any]) -> list[list[str]]:
        return [[] for _ in queries]

    monkeypatch.setattr(services.store, "find_many", nothing_found)
    calls = _count_index_calls(services, monkeypatch)
    outcome = await process_bundle(services, second)
    assert outcome.body is not None
    assert "in lock" in calls
    patient_location = outcome.body["entry"][0]["response"]["location"]
    assert outcome.body["entry"][0]["response"]["status"] == "200 OK"  # the existing one
    patient_id = patient_location.split("/")[1]
    async with services.store.transaction() as tx:
        encounters = await tx.find("Encounter", [("subject", f"Patient/{patient_id}")])
    assert len(encounters) == 2  # both visits, each indexed under the existing Patient

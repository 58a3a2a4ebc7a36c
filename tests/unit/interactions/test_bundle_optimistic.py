"""Transactions resolve and index a copy outside the write lock, and verify it inside."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.interactions.bundle import process_bundle
from fhir_server.interactions.context import Outcome, Services
from fhir_server.loader import open_services
from fhir_server.router.door import EntryDoor
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import SERVER
from fhir_server.settings import Settings
from fhir_server.synthetic import generate
from tests.builders import criteria


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", seed_search_parameters=False)
    async with open_services(settings) as opened:
        yield opened


async def push(services: Services, bundle: dict[str, Any]) -> Outcome:
    """A transaction Bundle through the Bundle processing, as the server itself."""
    return await process_bundle(services, bundle, EntryDoor(services, SERVER),
                                AuditNote("transaction"))


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
    outcome = await push(services, bundle)
    assert outcome.status == 200
    assert calls and set(calls) == {"outside"}


def _stale_finds(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimistic finds say nothing exists (as if another worker had just created it)."""

    async def nothing_found(queries: Sequence[Any]) -> list[list[str]]:
        return [[] for _ in queries]

    monkeypatch.setattr(services.store, "find_many", nothing_found)


def _finds_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of queries of each ``find_many`` of a write transaction (the
    store's own ``find_many`` outside the lock runs one on the reader connection)."""
    from fhir_server.storage.sqlite.writes import SqliteTransaction

    calls: list[int] = []
    find_many = SqliteTransaction.find_many

    async def spying(self: SqliteTransaction, queries: Sequence[Any]) -> list[list[str]]:
        if self.conn is not self.store.reader:
            calls.append(len(queries))
        return await find_many(self, queries)

    monkeypatch.setattr(SqliteTransaction, "find_many", spying)
    return calls


def _patient_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


async def _patients_with_identifier(services: Services, patient: dict[str, Any]) -> list[str]:
    identifier = patient["resource"]["identifier"][0]
    async with services.store.transaction() as tx:
        return await tx.find(criteria("Patient", [
            ("identifier", f"{identifier['system']}|{identifier['value']}")]))


async def test_a_write_after_the_finds_outside_the_lock_makes_the_transaction_find_again(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Bundle creates the visit's Patient just after this one found it missing
    outside the lock (the race of two pushes of one new patient): under the lock the
    criteria are found again, and the Bundle refers to that Patient instead of creating a
    second one."""
    first, second = _visits(tmp_path, 2)[:2]
    second["entry"][0] = {**copy.deepcopy(_patient_of(first)),
                          "fullUrl": second["entry"][0]["fullUrl"]}
    find_many = services.store.find_many  # type: ignore[attr-defined]
    calls = _finds_under_the_lock(monkeypatch)

    async def found_then_raced(queries: Sequence[Any]) -> list[list[str]]:
        answers = await find_many(queries)
        monkeypatch.setattr(services.store, "find_many", find_many)
        assert (await push(services, first)).status == 200  # creates the Patient meanwhile
        calls.clear()  # the first Bundle's own
        return answers

    monkeypatch.setattr(services.store, "find_many", found_then_raced)
    outcome = await push(services, second)
    assert outcome.body is not None, outcome
    assert calls  # found again under the lock
    assert outcome.body["entry"][0]["response"]["status"] == "200 OK"  # the existing one
    patient = _patient_of(first)
    found = await _patients_with_identifier(services, patient)
    assert len(found) == 1
    assert outcome.body["entry"][0]["response"]["location"].split("/")[1] == found[0]


async def _encounters_of(services: Services, patient_id: str) -> list[str]:
    async with services.store.transaction() as tx:
        return await tx.find(criteria("Encounter", [("subject", f"Patient/{patient_id}")]))


async def test_a_stale_optimistic_patient_is_patched_into_the_index_not_recomputed(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patient exists, but the optimistic finds say it does not: the copy points at a new
    Patient id, the real resolution at the existing one. The resources differ only in those
    references, so their indexes are patched (no indexing under the lock), and the Encounter
    is found by its patient."""
    first, second = _visits(tmp_path, 2)[:2]
    await push(services, first)
    patient_entry = next(e for e in first["entry"] if e["resource"]["resourceType"] == "Patient")
    second["entry"][0] = {**patient_entry, "fullUrl": second["entry"][0]["fullUrl"]}
    _stale_finds(services, monkeypatch)
    calls = _count_index_calls(services, monkeypatch)
    outcome = await push(services, second)
    assert outcome.body is not None
    assert calls and "in lock" not in calls
    assert outcome.body["entry"][0]["response"]["status"] == "200 OK"  # the existing one
    patient_id = outcome.body["entry"][0]["response"]["location"].split("/")[1]
    assert len(await _encounters_of(services, patient_id)) == 2  # both visits


def test_the_precomputed_index_is_kept_patched_or_dropped() -> None:
    """Same resolution: its index. Differing only in renamed references: the patched index.
    Anything else (here the resource's own id, or another reference): none, so the index is
    computed again."""
    from fhir_server.interactions.bundle_entries import Entry, Optimistic
    from fhir_server.interactions.bundle_exec import precomputed_index
    from fhir_server.interactions.references import references_in
    from fhir_server.router.request import FhirRequest
    from fhir_server.search.model import SearchIndex

    planned = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"},
               "serviceProvider": {"reference": "Organization/o1"}}
    index = SearchIndex("Encounter", "e1", references=(("subject", "Patient", "p1", ""),),
                        compartments=("p1",))
    renames = {"Patient/p1": "Patient/p0"}
    signature = ("e1", ("Patient/p1", "Organization/o1"))

    def entry(resource: dict[str, Any], renamed: dict[str, str] | None = None) -> Entry:
        found = Entry(0, FhirRequest("POST", "create", "Encounter"), resource=resource,
                      holders=references_in(resource), renames=renamed or {})
        found.optimistic = Optimistic("Encounter/e1", signature, index)
        return found

    assert precomputed_index(entry(orjson.loads(orjson.dumps(planned)))) is index
    found = {**planned, "subject": {"reference": "Patient/p0"}}
    assert precomputed_index(entry(found)) is None  # no renames noted: not the same resource
    patched = precomputed_index(entry(found, renames))
    assert patched == SearchIndex("Encounter", "e1", references=(
        ("subject", "Patient", "p0", ""),), compartments=("p0",))
    assert precomputed_index(entry({**found, "id": "e0"}, renames)) is None
    elsewhere = {**found, "serviceProvider": {"reference": "Organization/o2"}}
    assert precomputed_index(entry(elsewhere, renames)) is None


async def test_resolving_outside_the_lock_leaves_the_entries_as_they_were(
    services: Services, tmp_path: Path
) -> None:
    """The optimistic resolution runs on the entries themselves and is undone: afterwards
    each entry's write has its own target, criteria and resource back (id and references),
    with what it planned kept aside in ``optimistic``, so the resolution under the lock
    starts from the Bundle as it was posted."""
    from fhir_server.interactions import bundle
    from fhir_server.interactions.bundle_entries import parse_entry
    from fhir_server.interactions.bundle_exec import optimistic_indexes

    posted = _visits(tmp_path, 1)[0]
    door = EntryDoor(services, SERVER)
    entries = [parse_entry(i, e, services.base_url) for i, e in enumerate(posted["entry"])]
    for entry in entries:
        await bundle._prepare(services, door, entry, transaction=True)

    def state(entry: Any) -> tuple[Any, ...]:
        write = entry.write
        return (write.id, write.criteria, write.if_none_exist, entry.existing,
                orjson.dumps(entry.resource))

    before = [state(e) for e in entries]
    await optimistic_indexes(services, entries)
    urns = [h["reference"] for e in entries for h in e.holders]
    assert any(r.startswith("urn:uuid:") for r in urns)  # not rewritten to Type/id
    assert [state(e) for e in entries] == before
    assert all(e.optimistic is not None and e.optimistic.index is not None for e in entries)

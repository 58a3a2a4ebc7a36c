"""Contract: searches return the same resources in the same order on every store.

Every test stores the same small set of health-book resources (``_seed``) and runs a search
given as a query string; the expected ids are written out once and asserted for each
adapter (SQLite, the MongoDB stand-in, a real MongoDB when configured).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhir_server.search.indexing import index_resource
from fhir_server.search.model import SearchQuery, SearchResult
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.port import ResourceStore
from tests.builders import CCCD_SYSTEM, observation, patient

_REGISTRY = SearchParameterRegistry.load()
LOINC = "http://loinc.org"


def _resources() -> list[dict[str, Any]]:
    """Four patients (two named Nguyen, one without the accent), their readings and visits."""
    return [
        {"resourceType": "Organization", "id": "org1", "name": "Bệnh viện Bạch Mai"},
        {**patient("001", "Nguyễn", "Văn An", "male", "1990-05-17"), "id": "p1"},
        {**patient("002", "Trần", "Thị Bình", "female", "1985-01-02"), "id": "p2"},
        {
            **patient("003", "Lê", "Văn Cường", "male", "2001-12-31"),
            "id": "p3",
            "managingOrganization": {"reference": "Organization/org1"},
        },
        {**patient("004", "Nguyen", "Thị Dung", "female", "1990-05-01"), "id": "p4"},
        _reading("o1", "p1", "8867-4", 72.0, "2026-03-01T08:30:00+07:00"),
        _reading("o2", "p1", "8310-5", 37.2, "2026-03-02T09:00:00+07:00"),
        _reading("o3", "p2", "8867-4", 80.0, "2026-02-15T10:00:00+07:00"),
        _reading("o4", "p3", "8867-4", 65.0, "2025-12-31T23:30:00+07:00"),
        _visit("e1", "p1", "2026-03-01T08:00:00+07:00"),
        _visit("e2", "p2", "2025-11-20T14:00:00+07:00"),
    ]


def _reading(id: str, patient_id: str, code: str, value: float, when: str) -> dict[str, Any]:
    reading = observation(f"Patient/{patient_id}", code, value)
    return {**reading, "id": id, "effectiveDateTime": when}


def _visit(id: str, patient_id: str, start: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": id,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start},
    }


@pytest.fixture
async def seeded(store: ResourceStore) -> ResourceStore:
    """The store with its registry set, holding ``_resources()`` written in list order."""
    store.registry = _REGISTRY  # type: ignore[attr-defined]
    async with store.transaction() as tx:
        for resource in _resources():
            await tx.create(resource, index_resource(resource, _REGISTRY))
    return store


def _query(resource_type: str, text: str, **changes: Any) -> SearchQuery:
    query = parse_search(resource_type, parse_qsl(text), _REGISTRY, strict=True).query
    return dataclasses.replace(query, **changes)


def _ids(result: SearchResult) -> list[str]:
    return [stored.id for stored in result.matches]


CASES: list[tuple[str, str, list[str]]] = [
    ("Patient", f"identifier={CCCD_SYSTEM}|002", ["p2"]),
    ("Patient", "identifier=003", ["p3"]),
    ("Patient", "gender=female", ["p2", "p4"]),
    ("Patient", "gender:not=male", ["p2", "p4"]),
    ("Observation", f"code={LOINC}|8867-4", ["o1", "o3", "o4"]),
    ("Observation", "code=8310-5,8867-4", ["o1", "o2", "o3", "o4"]),
    ("Patient", "family=nguyen", ["p1", "p4"]),
    ("Patient", "family=NGUYỄN", ["p1", "p4"]),
    ("Patient", "name=bình", ["p2"]),
    ("Patient", "family:exact=Nguyễn", ["p1"]),
    ("Patient", "family:contains=uye", ["p1", "p4"]),
    ("Organization", "name=benh vien bach", ["org1"]),
    ("Patient", "birthdate=1990", ["p1", "p4"]),
    ("Patient", "birthdate=1990-05", ["p1", "p4"]),
    ("Patient", "birthdate=1990-05-17", ["p1"]),
    ("Patient", "birthdate=ne1990", ["p2", "p3"]),
    ("Patient", "birthdate=ge2000", ["p3"]),
    ("Patient", "birthdate=lt1986", ["p2"]),
    ("Patient", "birthdate=le1990-05-01", ["p2", "p4"]),
    ("Patient", "birthdate=sa1990-12-31", ["p3"]),
    ("Patient", "birthdate=eb1990-05-02", ["p2", "p4"]),
    ("Observation", "date=2026-03", ["o1", "o2"]),
    ("Observation", "date=gt2026-03-01T08:30:00%2B07:00", ["o2"]),
    ("Observation", "value-quantity=gt70", ["o1", "o3"]),
    ("Observation", "value-quantity=72||/min", ["o1"]),
    ("Observation", "subject=Patient/p1", ["o1", "o2"]),
    ("Observation", "patient=p2", ["o3"]),
    ("Observation", "subject:Patient=p3", ["o4"]),
    ("Patient", "organization:missing=true", ["p1", "p2", "p4"]),
    ("Patient", "organization:missing=false", ["p3"]),
    ("Patient", "_id=p3,p1", ["p1", "p3"]),
    ("Patient", "_lastUpdated=gt2000-01-01", ["p1", "p2", "p3", "p4"]),
    ("Patient", "_lastUpdated=lt2000-01-01", []),
    ("Observation", "subject:Patient.family=tran", ["o3"]),
    ("Observation", "patient.gender=male", ["o1", "o2", "o4"]),
    ("Observation", "patient.organization.name=bệnh", ["o4"]),
    ("Patient", "_has:Observation:patient:code=8310-5", ["p1"]),
    ("Patient", "_has:Observation:subject:value-quantity=gt70", ["p1", "p2"]),
    ("Patient", "_has:Observation:patient:code=0000-0", []),
    ("Observation", f"code-value-quantity={LOINC}|8867-4$gt70", ["o1", "o3"]),
    ("Patient", "_sort=birthdate", ["p2", "p4", "p1", "p3"]),
    ("Patient", "_sort=-birthdate", ["p3", "p1", "p4", "p2"]),
    ("Patient", "_sort=gender,-birthdate", ["p4", "p2", "p3", "p1"]),
    ("Patient", "_sort=family", ["p3", "p1", "p4", "p2"]),
    ("Patient", "_sort=-_id", ["p4", "p3", "p2", "p1"]),
    ("Patient", "_sort=organization", ["p1", "p2", "p4", "p3"]),
    ("Patient", "_sort=-organization", ["p3", "p1", "p2", "p4"]),
    ("Observation", "code=8867-4&_sort=-value-quantity", ["o3", "o1", "o4"]),
    ("Observation", "_sort=date", ["o4", "o3", "o1", "o2"]),
]


@pytest.mark.parametrize(("resource_type", "text", "expected"), CASES, ids=[c[1] for c in CASES])
async def test_search_finds_the_same_resources_in_the_same_order(
    seeded: ResourceStore, resource_type: str, text: str, expected: list[str]
) -> None:
    result = await seeded.search(_query(resource_type, text))
    assert _ids(result) == expected


async def _all_pages(store: ResourceStore, query: SearchQuery) -> list[list[str]]:
    pages, result = [], await store.search(query)
    pages.append(_ids(result))
    while result.next_cursor is not None:
        result = await store.search(dataclasses.replace(query, cursor=result.next_cursor))
        pages.append(_ids(result))
    return pages


@pytest.mark.parametrize(
    ("resource_type", "text", "expected"),
    [
        ("Patient", "_count=1", [["p1"], ["p2"], ["p3"], ["p4"]]),
        ("Patient", "_count=3&_sort=-birthdate", [["p3", "p1", "p4"], ["p2"]]),
        ("Patient", "_count=1&_sort=organization", [["p1"], ["p2"], ["p4"], ["p3"]]),
        ("Patient", "_count=1&_sort=-organization", [["p3"], ["p1"], ["p2"], ["p4"]]),
        ("Patient", "_count=2&_sort=family", [["p3", "p1"], ["p4", "p2"]]),
        ("Observation", f"_count=1&code-value-quantity={LOINC}|8867-4$gt70", [["o1"], ["o3"]]),
        (
            "Observation",
            f"_count=1&_sort=-date&code-value-quantity={LOINC}|8867-4$gt70",
            [["o1"], ["o3"]],
        ),
    ],
)
async def test_paging_through_next_links_visits_every_match_once_in_order(
    seeded: ResourceStore,
    resource_type: str,
    text: str,
    expected: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Candidates the matcher decides are read one at a time here, so that the MongoDB store
    # continues past a rejected candidate within a page.
    monkeypatch.setattr("fhir_server.storage.mongo.search._BATCH", 1)
    assert await _all_pages(seeded, _query(resource_type, text)) == expected


async def test_previous_links_lead_back_to_the_first_page(seeded: ResourceStore) -> None:
    query = _query("Patient", "_count=1&_sort=-birthdate")
    first = await seeded.search(query)
    assert first.next_cursor is not None
    second = await seeded.search(dataclasses.replace(query, cursor=first.next_cursor))
    assert second.prev_cursor is not None
    back = await seeded.search(dataclasses.replace(query, cursor=second.prev_cursor))
    assert (_ids(first), _ids(second), _ids(back)) == (["p3"], ["p1"], ["p3"])
    assert back.prev_cursor is None


@pytest.mark.parametrize(
    ("resource_type", "text", "matches", "included"),
    [
        ("Observation", "code=8867-4&_include=Observation:subject", ["o1", "o3", "o4"],
         ["p1", "p2", "p3"]),
        ("Observation", "_id=o4&_include=Observation:subject:Group", ["o4"], []),
        ("Patient", "_id=p1&_revinclude=Observation:subject", ["p1"], ["o1", "o2"]),
        ("Patient", "_id=p2&_revinclude=Encounter:*", ["p2"], ["e2"]),
        ("Observation", "_id=o4&_include=Observation:subject"
         "&_include:iterate=Patient:organization", ["o4"], ["org1", "p3"]),
        ("Organization", "_revinclude=Patient:organization"
         "&_revinclude:iterate=Observation:subject", ["org1"], ["o4", "p3"]),
    ],
)  # fmt: skip
async def test_include_and_revinclude_add_each_referenced_resource_once(
    seeded: ResourceStore, resource_type: str, text: str, matches: list[str], included: list[str]
) -> None:
    result = await seeded.search(_query(resource_type, text))
    assert (_ids(result), sorted(r.id for r in result.included)) == (matches, included)


@pytest.mark.parametrize(
    ("resource_type", "text", "expected"),
    [
        ("Observation", "", ["o1", "o2"]),
        ("Observation", "code=8867-4", ["o1"]),
        ("Encounter", "", ["e1"]),
        ("Patient", "", ["p1"]),
    ],
)
async def test_compartment_search_finds_only_that_patients_resources(
    seeded: ResourceStore, resource_type: str, text: str, expected: list[str]
) -> None:
    query = _query(resource_type, text, compartment=("Patient", "p1"))
    assert _ids(await seeded.search(query)) == expected


@pytest.mark.parametrize(
    ("text", "total"),
    [
        ("code=8867-4&_count=1&_total=accurate", 3),
        (f"code-value-quantity={LOINC}|8867-4$gt70&_count=1&_total=accurate", 2),
        ("code=8867-4&_count=1", None),
    ],
)
async def test_total_is_counted_only_when_asked(
    seeded: ResourceStore, text: str, total: int | None
) -> None:
    result = await seeded.search(_query("Observation", text))
    assert (len(result.matches), result.total) == (1, total)


async def test_deleted_and_replaced_resources_are_searched_as_they_are_now(
    seeded: ResourceStore,
) -> None:
    moved = {**_resources()[2], "gender": "male"}
    async with seeded.transaction() as tx:
        await tx.delete("Patient", "p1")
        await tx.update(moved, index_resource(moved, _REGISTRY))
    result = await seeded.search(_query("Patient", "gender=male"))
    assert _ids(result) == ["p2", "p3"]

"""The search interaction: the searchset Bundle over a fake store on in-memory SQLite."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from fhir_server import decimals
from fhir_server.errors import BadRequest
from fhir_server.interactions.search import search, searchset
from fhir_server.search.model import SearchQuery, SearchResult
from fhir_server.storage.sqlite.search_sql import run_search
from tests.unit.search.search_builders import Database, observation, patient, registry

BASE = "http://localhost/fhir"


class FakeStore:
    """The one store method search uses, over the test database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def search(self, query: SearchQuery) -> SearchResult:
        return run_search(self.db.conn, query, registry())


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


async def test_searchset_has_match_entries_with_full_urls_and_no_total_by_default() -> None:
    db = Database()
    db.add(patient("p1"))
    bundle = await search(FakeStore(db), registry(), BASE, "Patient", [("name", "nguyen")],
                          strict=False)  # fmt: skip
    assert bundle["type"] == "searchset" and "total" not in bundle
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{BASE}/Patient/p1"
    assert entry["search"] == {"mode": "match"}
    assert _links(bundle)["self"] == f"{BASE}/Patient?name=nguyen"


async def test_next_links_walk_every_page_and_previous_goes_back() -> None:
    db = Database()
    for number in range(5):
        db.add(patient(f"p{number}"))
    store, seen = FakeStore(db), []
    params: list[tuple[str, str]] = [("_count", "2"), ("_total", "accurate")]
    pages = []
    while True:
        bundle = await search(store, registry(), BASE, "Patient", params, strict=True)
        pages.append(bundle)
        assert bundle["total"] == 5
        seen += [entry["resource"]["id"] for entry in bundle["entry"]]
        if "next" not in _links(bundle):
            break
        params = _params(_links(bundle)["next"])
    assert seen == [f"p{n}" for n in range(5)]
    back = await search(store, registry(), BASE, "Patient", _params(_links(pages[2])["previous"]),
                        strict=True)  # fmt: skip
    assert [e["resource"]["id"] for e in back["entry"]] == ["p2", "p3"]


async def test_lenient_search_reports_ignored_parameters_in_an_outcome_entry() -> None:
    db = Database()
    db.add(patient("p1"))
    bundle = await search(FakeStore(db), registry(), BASE, "Patient",
                          [("shoe-size", "42"), ("gender", "male")], strict=False)  # fmt: skip
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    issue = outcome[0]["resource"]["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_PARAM_UNKNOWN"
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [
        "p1"
    ]


async def test_strict_search_rejects_unknown_parameters() -> None:
    with pytest.raises(BadRequest):
        await search(FakeStore(Database()), registry(), BASE, "Patient", [("shoe-size", "42")],
                     strict=True)  # fmt: skip


async def test_included_resources_have_mode_include() -> None:
    db = Database()
    db.add(patient("p1"))
    db.add(observation("o1"))
    bundle = await search(FakeStore(db), registry(), BASE, "Observation",
                          [("_include", "Observation:subject")], strict=True)  # fmt: skip
    modes = {e["resource"]["id"]: e["search"]["mode"] for e in bundle["entry"]}
    assert modes == {"o1": "match", "p1": "include"}


async def test_compartment_search_links_and_filters_by_patient() -> None:
    db = Database()
    db.add(observation("o1"))
    db.add(observation("o2", subject={"reference": "Patient/p2"}))
    bundle = await search(FakeStore(db), registry(), BASE, "Observation", [], strict=True,
                          compartment=("Patient", "p2"))  # fmt: skip
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["o2"]
    assert _links(bundle)["self"] == f"{BASE}/Patient/p2/Observation"


async def test_elements_subset_the_resources_and_mark_them() -> None:
    db = Database()
    db.add(patient("p1"))
    bundle = await search(FakeStore(db), registry(), BASE, "Patient", [("_elements", "gender")],
                          strict=True)  # fmt: skip
    resource = bundle["entry"][0]["resource"]
    assert "gender" in resource and "name" not in resource
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"


async def test_raw_entries_are_the_stored_json_and_serialise_as_parsed_ones_do() -> None:
    db = Database()
    db.add(observation("o1", valueQuantity={"value": 1.50, "unit": "mmol/L"}))
    db.add(patient("p1"))
    params = [("_id", "o1"), ("_include", "Observation:subject")]
    raw = await searchset(FakeStore(db), registry(), BASE, "Observation", params, strict=True,
                          raw=True)  # fmt: skip
    parsed = await search(FakeStore(db), registry(), BASE, "Observation", params, strict=True)
    assert [type(e["resource"]) for e in raw.bundle["entry"]] == [orjson.Fragment] * 2
    assert [(s.resource_type, s.id) for s in raw.resources] == [("Observation", "o1"),
                                                                ("Patient", "p1")]
    assert orjson.loads(decimals.dumps(raw.bundle)) == orjson.loads(decimals.dumps(parsed))


async def test_raw_entries_shaped_by_elements_or_summary_are_parsed_and_subsetted() -> None:
    db = Database()
    db.add(patient("p1"))
    for shaping in (("_elements", "gender"), ("_summary", "true")):
        found = await searchset(FakeStore(db), registry(), BASE, "Patient", [shaping],
                                strict=True, raw=True)  # fmt: skip
        resource = found.bundle["entry"][0]["resource"]
        assert isinstance(resource, dict)
        assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"

"""Which declared index serves each query of the search benchmark's set on MongoDB.

There is no ``mongod`` here, and the stand-in has no ``explain``: these tests run each search
of ``benchmarks/search_growth.py`` and ``benchmarks/big_data.py`` through the adapter over the
stand-in, record every ``find`` it sends (filter, sort), and check each against the index list
the adapter creates (``storage.mongo.indexes.INDEXES``) the way MongoDB's planner can use an
index: its leading keys bounded by the filter (equality, range, ``$in``, or the fields of one
``$elemMatch`` on the array they belong to), and the sort read from the index after the keys
the filter fixes by equality (no blocking sort). A change in the adapter's query shape that
leaves a query to a collection scan, or a page to a sort of every match, fails here; what a
real server chooses among the usable indexes needs ``explain`` on one (docs/mongodb.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhir_server.search.indexing import index_resource
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.mongo.indexes import INDEXES, IndexSpec
from fhir_server.storage.mongo.search_filters import clause_filter
from fhir_server.storage.mongo.store import MongoStore
from tests.builders import CCCD_SYSTEM, observation, patient
from tests.contract.mongo_fake import FakeCollection, FakeMongoClient

LOINC = "http://loinc.org|8867-4"
_ID = IndexSpec("resources", (("_id", 1),), (("name", "_id_"),), "every collection's key")
_RANGES = {"$gt", "$gte", "$lt", "$lte"}


@dataclass(frozen=True)
class Use:
    """How a query can use an index: the keys it bounds, and whether it reads the sort."""

    index: str
    bounded: int
    sorted: bool


def _bounds(filter_: dict[str, Any]) -> dict[str, str]:
    """The fields the filter bounds as it must hold for every match: ``eq`` (one value,
    or ``$in``) or ``range``; an ``$or`` bounds what all its branches bound."""
    found: dict[str, str] = {}
    for field, condition in filter_.items():
        if field == "$and":
            for part in condition:
                found.update(_bounds(part))
        elif field == "$or":
            branches = [_bounds(branch) for branch in condition]
            common = set.intersection(*(set(b) for b in branches)) if branches else set()
            found.update({f: max(b[f] for b in branches) for f in common})
        elif not field.startswith("$"):
            found.update(_field_bounds(field, condition))
    return found


def _field_bounds(field: str, condition: Any) -> dict[str, str]:
    if not isinstance(condition, dict):
        return {field: "eq"}
    if "$elemMatch" in condition:
        return {f"{field}.{key}": kind
                for key, kind in _bounds(condition["$elemMatch"]).items()}
    if "$in" in condition or "$eq" in condition:
        return {field: "eq"}
    if _RANGES & set(condition):
        return {field: "range"}
    return {}  # $ne, $nin, $exists, $regex...: no bound an index seek can use


def _uses(filter_: dict[str, Any], sort: list[tuple[str, int]]) -> list[Use]:
    bounds = _bounds(filter_)
    uses = []
    for spec in (*INDEXES, _ID):
        if spec.collection != "resources":
            continue
        keys = list(spec.keys)
        bounded = 0
        while bounded < len(keys) and keys[bounded][0] in bounds:
            bounded += 1
        if bounded == 0:
            continue
        fixed = 0
        while fixed < len(keys) and bounds.get(keys[fixed][0]) == "eq":
            fixed += 1
        rest = keys[fixed:fixed + len(sort)]
        same = [d == k[1] for (_, d), k in zip(sort, rest, strict=False)]
        reads_sort = (not sort or ([f for f, _ in sort] == [k for k, _ in rest]
                      and (all(same) or not any(same))))
        uses.append(Use(str(dict(spec.options)["name"]), bounded, reads_sort))
    return uses


@dataclass
class Recorded:
    """The ``find`` calls the adapter sent to the ``resources`` collection."""

    finds: list[tuple[dict[str, Any], list[tuple[str, int]]]]


@pytest.fixture
async def store(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[MongoStore, Recorded]]:
    registry = SearchParameterRegistry.load()
    client = FakeMongoClient()
    mongo = MongoStore("mongodb://fake/fhir", client=client)
    mongo.registry = registry
    await mongo.open()
    nguyen = patient(birth_date="1995-02-03", id="p1")
    unnamed = patient("019203107473", family="Trần", id="p2")
    unnamed.pop("birthDate")
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"},
                 "period": {"start": "2026-01-02T08:00:00+07:00"}}
    without_value = {**observation("Patient/p2"), "id": "o2"}
    without_value.pop("valueQuantity", None)
    async with mongo.transaction() as tx:
        for resource in (nguyen, unnamed, encounter, {**observation("Patient/p1"), "id": "o1"},
                         without_value):
            await tx.create(dict(resource), index_resource(resource, registry))
    recorded = Recorded([])
    original = FakeCollection.find

    def find(self: FakeCollection, filter_: dict[str, Any] | None = None, **options: Any) -> Any:
        if self.name == "resources":
            recorded.finds.append((filter_ or {}, list(options.get("sort") or [])))
        return original(self, filter_, **options)

    monkeypatch.setattr(FakeCollection, "find", find)
    yield mongo, recorded
    await mongo.close()


#: The searches of ``benchmarks/search_growth.py`` and ``benchmarks/big_data.py``, and the
#: index expected to stream each page in its order (a walk that stops at the page), or
#: ``bounds:<index>`` where the page is the few matches that index bounds (one patient's
#: records), sorted after.
BENCHMARK_SET = [
    ("Patient", "name=nguyen", "type_rid"),
    ("Patient", "name=nguyen&birthdate=ge1990&_count=50", "type_rid"),
    ("Patient", "_has:Encounter:patient:_id=e1", "type_rid"),
    ("Patient", f"_has:Observation:patient:code={LOINC}", "type_rid"),
    ("Encounter", "_sort=-date", "type_date"),
    ("Observation", f"code={LOINC}&_sort=-date", "type_date"),
    ("Observation", f"patient=Patient/p1&code={LOINC}&_sort=-date", "bounds:reference"),
    ("Observation", "value-quantity:missing=true", "type_rid"),
    ("Patient", "birthdate:missing=false", "type_rid"),
    ("Patient", "name=nguyen&_revinclude=Encounter:patient", "type_rid"),
    ("Patient", f"identifier={CCCD_SYSTEM}|001090012345", "type_rid"),
    ("Encounter", "patient=p1&_include=Encounter:service-provider"
                  "&_revinclude=Condition:encounter", "type_rid"),
]


@pytest.mark.parametrize(("kind", "text", "streams"), BENCHMARK_SET,
                         ids=[f"{k}?{t}" for k, t, _ in BENCHMARK_SET])
async def test_every_find_of_a_benchmark_search_is_served_by_a_declared_index(
    store: tuple[MongoStore, Recorded], kind: str, text: str, streams: str,
) -> None:
    mongo, recorded = store
    query = parse_search(kind, parse_qsl(text), mongo.registry, strict=True).query
    await mongo.search(query)
    assert recorded.finds
    page_filter, page_sort = next((f, s) for f, s in recorded.finds if s)
    uses = _uses(page_filter, page_sort)
    if streams.startswith("bounds:"):
        assert streams.removeprefix("bounds:") in {use.index for use in uses}, page_filter
    else:
        assert streams in {use.index for use in uses if use.sorted}, (page_filter, page_sort)
    for filter_, sort in recorded.finds:  # the page, the _has/chain lists, the includes
        assert _uses(filter_, sort), f"no declared index bounds {filter_}"


def test_a_selective_clause_is_bounded_by_its_own_index() -> None:
    """Beside the walk in page order, each benchmark clause that selects few resources has
    an index bounding it (the planner's other candidate)."""
    expected = {
        "name=nguyen": "string",
        f"identifier={CCCD_SYSTEM}|001090012345": "token",
        f"code={LOINC}": "token",
        "patient=p1": "reference",
    }
    registry = SearchParameterRegistry.load()
    kinds = {"name": "Patient", "identifier": "Patient", "code": "Observation",
             "patient": "Encounter"}
    for text, index in expected.items():
        (clause,) = parse_search(kinds[text.split("=")[0]], parse_qsl(text), registry,
                                 strict=True).query.clauses
        compiled = clause_filter(clause)  # type: ignore[arg-type]
        assert compiled is not None
        assert index in {use.index for use in _uses(compiled, [])}, compiled


def test_the_checker_refuses_what_no_index_serves() -> None:
    """The check itself: a negation bounds nothing, a sort on an unindexed field is not
    read from an index, and a prefix range on a string row is."""
    assert _uses({"idx.tokens": {"$not": {"$elemMatch": {"p": "x"}}}}, []) == []
    assert not any(u.sorted for u in _uses({"type": "Patient"}, [("idx.sa.family", 1)]))
    prefix = {"idx.strings": {"$elemMatch": {"p": "name", "f": {"$gte": "a", "$lt": "b"}}}}
    assert Use("string", 2, True) in _uses(prefix, [])

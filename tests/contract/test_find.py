"""Contract: conditional searches inside a scope (``find``), over the real search index.

Skipped for an adapter whose search is not built yet (the SQLite search compiler).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from fhir_server.search.indexing import index_resource
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.port import ResourceStore, StoreTransaction
from tests.builders import CCCD_SYSTEM, criteria, patient

_REGISTRY = SearchParameterRegistry.load()


@pytest.fixture
def searchable(store: ResourceStore) -> ResourceStore:
    """The store, with its registry set; skipped where the adapter cannot search yet."""
    if (
        type(store).__name__ == "SqliteStore"
        and importlib.util.find_spec("fhir_server.storage.sqlite.search_sql") is None
    ):
        pytest.skip("the SQLite search compiler (search_sql) is not built yet")
    store.registry = _REGISTRY  # type: ignore[attr-defined]
    return store


async def _create(tx: StoreTransaction, resource: dict[str, Any]) -> None:
    await tx.create(resource, index_resource(resource, _REGISTRY))


async def test_find_matches_current_resources_by_identifier(searchable: ResourceStore) -> None:
    async with searchable.transaction() as tx:
        await _create(tx, {**patient(cccd="001090000001"), "id": "a"})
        await _create(tx, {**patient(cccd="001090000002"), "id": "b"})
    async with searchable.transaction() as tx:
        found = await tx.find(criteria("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000002")]))
        by_value = await tx.find(criteria("Patient", [("identifier", "001090000001")]))
        none = await tx.find(criteria("Patient", [("identifier", "other|001090000002")]))
    assert (found, by_value, none) == (["b"], ["a"], [])


async def test_find_ignores_deleted_resources(searchable: ResourceStore) -> None:
    async with searchable.transaction() as tx:
        await _create(tx, {**patient(), "id": "a"})
    async with searchable.transaction() as tx:
        await tx.delete("Patient", "a")
    async with searchable.transaction() as tx:
        assert await tx.find(criteria("Patient", [("identifier", "001090012345")])) == []


async def test_find_sees_the_scopes_own_writes(searchable: ResourceStore) -> None:
    async with searchable.transaction() as tx:
        await _create(tx, {**patient(family="Trần"), "id": "a"})
        assert await tx.find(criteria("Patient", [("family", "tran")])) == ["a"]


async def test_reindex_replaces_what_find_matches(searchable: ResourceStore) -> None:
    resource = {**patient(), "id": "a"}
    async with searchable.transaction() as tx:
        await tx.create(dict(resource), None)
    async with searchable.transaction() as tx:
        assert await tx.find(criteria("Patient", [("gender", "male")])) == []
        await tx.reindex(resource, index_resource(resource, _REGISTRY))
    async with searchable.transaction() as tx:
        assert await tx.find(criteria("Patient", [("gender", "male")])) == ["a"]


async def test_find_many_answers_each_query_as_find_does(searchable: ResourceStore) -> None:
    async with searchable.transaction() as tx:
        await _create(tx, {**patient(cccd="001090000001"), "id": "a"})
        await _create(tx, {**patient(cccd="001090000002", family="Trần"), "id": "b"})
        await _create(tx, {**patient(cccd="001090000002"), "id": "c"})  # a duplicate CCCD
        await _create(tx, {**patient(cccd="001090000003"), "id": "d"})
    async with searchable.transaction() as tx:
        await tx.delete("Patient", "d")
    queries: list[tuple[str, list[tuple[str, str]]]] = [
        ("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000001")]),
        ("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000002")]),
        ("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000003")]),  # deleted
        ("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000009")]),  # none
        ("Patient", [("identifier", "001090000001")]),                 # no system
        ("Patient", [("family", "tran")]),                             # not an identifier
        ("Encounter", [("identifier", f"{CCCD_SYSTEM}|001090000001")]),  # another type
        ("Patient", [("identifier", f"{CCCD_SYSTEM}|001090000001")]),  # asked twice
    ]
    async with searchable.transaction() as tx:
        many = await tx.find_many([criteria(kind, params) for kind, params in queries])
    one_by_one = []
    for kind, params in queries:
        async with searchable.transaction() as tx:
            one_by_one.append(sorted(await tx.find(criteria(kind, params))))
    assert [sorted(ids) for ids in many] == one_by_one
    assert one_by_one[:4] == [["a"], ["b", "c"], [], []]

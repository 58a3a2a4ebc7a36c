"""Contract: a transaction scope commits all its writes or none, and reads its own writes."""

from __future__ import annotations

import pytest

from fhir_server.errors import NotFound, VersionConflict
from fhir_server.storage.port import HistoryQuery, ResourceStore
from tests.builders import observation, patient


class Boom(Exception):
    """Raised inside a scope to abandon it."""


async def test_rollback_on_exception_leaves_no_trace(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "kept"}, None)
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.create({**patient(cccd="2"), "id": "p1"}, None)
            await tx.create({**observation(), "id": "o1"}, None)
            await tx.update({**patient(gender="female"), "id": "kept"}, None)
            await tx.delete("Patient", "kept")
            raise Boom
    for resource_type, id in (("Patient", "p1"), ("Observation", "o1")):
        with pytest.raises(NotFound):
            await store.read(resource_type, id)
    kept = await store.read("Patient", "kept")
    assert (kept.version, kept.resource()["gender"]) == (1, "male")
    history = await store.history(HistoryQuery())
    assert [(e.id, e.version) for e in history.entries] == [("kept", 1)]


async def test_a_conflict_inside_a_scope_rolls_back_its_earlier_writes(
    store: ResourceStore,
) -> None:
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.create({**observation(), "id": "o1"}, None)
            await tx.update({**patient(gender="female"), "id": "p1"}, None, expected_version=7)
    with pytest.raises(NotFound):
        await store.read("Observation", "o1")


async def test_reads_inside_a_scope_see_its_own_writes(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        created = await tx.create({**patient(), "id": "p1"}, None)
        seen = await tx.read("Patient", "p1")
        assert seen is not None
        assert (seen.version, seen.content) == (1, created.content)
        second = await tx.update({**patient(gender="female"), "id": "p1"}, None)
        assert second.stored.version == 2
        marker = await tx.delete("Patient", "p1")
        assert marker is not None and marker.version == 3
        after = await tx.read("Patient", "p1")
        assert after is not None and after.deleted
        assert await tx.existing([("Patient", "p1")]) == set()
    history = await store.history(HistoryQuery("Patient", "p1"))
    assert [e.version for e in history.entries] == [3, 2, 1]


async def test_transaction_read_returns_none_for_unknown_and_a_marker_for_deleted(
    store: ResourceStore,
) -> None:
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
    async with store.transaction() as tx:
        await tx.delete("Patient", "p1")
    async with store.transaction() as tx:
        assert await tx.read("Patient", "nobody") is None
        marker = await tx.read("Patient", "p1")
        assert marker is not None
        assert (marker.deleted, marker.version, marker.method) == (True, 2, "DELETE")


async def test_existing_returns_only_current_resources(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
        await tx.create({**patient(cccd="2"), "id": "p2"}, None)
        await tx.create({**observation(), "id": "o1"}, None)
    async with store.transaction() as tx:
        await tx.delete("Patient", "p2")
    async with store.transaction() as tx:
        await tx.create({**patient(cccd="3"), "id": "p3"}, None)
        found = await tx.existing(
            [
                ("Patient", "p1"),
                ("Patient", "p2"),
                ("Patient", "p3"),
                ("Observation", "o1"),
                ("Observation", "p1"),
                ("Patient", "nobody"),
            ]
        )
    assert found == {("Patient", "p1"), ("Patient", "p3"), ("Observation", "o1")}


async def test_existing_of_many_keys_answers_all_of_them(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        for n in range(0, 900, 3):
            await tx.create({**patient(cccd=str(n)), "id": f"p{n}"}, None)
    async with store.transaction() as tx:
        found = await tx.existing([("Patient", f"p{n}") for n in range(900)])
    assert found == {("Patient", f"p{n}") for n in range(0, 900, 3)}


async def test_reindex_changes_no_version_and_ignores_deleted_or_unknown(
    store: ResourceStore,
) -> None:
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
        await tx.create({**patient(cccd="2"), "id": "gone"}, None)
    async with store.transaction() as tx:
        await tx.delete("Patient", "gone")
    before = await store.read("Patient", "p1")
    async with store.transaction() as tx:
        await tx.reindex({**patient(), "id": "p1"}, None)
        await tx.reindex({**patient(), "id": "gone"}, None)
        await tx.reindex({**patient(), "id": "nobody"}, None)
    after = await store.read("Patient", "p1")
    assert (after.version, after.content) == (before.version, before.content)
    history = await store.history(HistoryQuery())
    assert len(history.entries) == 3

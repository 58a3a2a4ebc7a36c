"""Contract: the write order (``port.WriteLog``) a consistent snapshot reads: the position of
the newest write, the versions written after a position in commit order, and a resource as
it was at a position."""

from __future__ import annotations

from fhir_server.search.cursor import decode_cursor
from fhir_server.search.parse import parse_search
from fhir_server.storage.port import ResourceStore, WriteLog
from tests.builders import observation, patient
from tests.unit.search.search_builders import registry


async def test_an_empty_store_is_at_position_zero(store: ResourceStore) -> None:
    assert isinstance(store, WriteLog)
    assert await store.write_position() == (0, None)
    assert await store.changes_after(0, 10) == []


async def test_changes_after_a_position_come_in_commit_order(store: ResourceStore) -> None:
    assert isinstance(store, WriteLog)
    async with store.transaction() as tx:
        first = await tx.create({**patient(), "id": "p1"}, None)
    position, last_updated = await store.write_position()
    assert last_updated == first.last_updated
    async with store.transaction() as tx:
        await tx.create({**observation(), "id": "o1"}, None)
        await tx.update({**patient(gender="female"), "id": "p1"}, None)
    async with store.transaction() as tx:
        await tx.delete("Observation", "o1")
    changes = await store.changes_after(position, 10)
    assert [(c.resource_type, c.id) for c in changes] == [
        ("Observation", "o1"), ("Patient", "p1"), ("Observation", "o1")]
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert all(c.seq > position for c in changes)
    assert await store.changes_after(position, 1) == changes[:1]
    assert await store.changes_after(changes[-1].seq, 10) == []


async def test_a_change_carries_the_row_id_searches_page_by(store: ResourceStore) -> None:
    assert isinstance(store, WriteLog)
    async with store.transaction() as tx:
        for n in range(3):
            await tx.create({**patient(cccd=f"07920000000{n}"), "id": f"p{n}"}, None)
    store.registry = registry()  # type: ignore[attr-defined]
    query = parse_search("Patient", [("_count", "1")], registry()).query
    page = await store.search(query)
    assert page.next_cursor is not None
    boundary = decode_cursor(query, page.next_cursor).rid
    changes = await store.changes_after(0, 10)
    rids = {c.id: c.rid for c in changes}
    assert rids[page.matches[0].id] == boundary
    assert sorted(rids.values()) == [rids["p0"], rids["p1"], rids["p2"]]


async def test_version_at_is_the_resource_as_it_was_then(store: ResourceStore) -> None:
    assert isinstance(store, WriteLog)
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
    before, _ = await store.write_position()
    async with store.transaction() as tx:
        await tx.update({**patient(gender="female"), "id": "p1"}, None)
    updated, _ = await store.write_position()
    async with store.transaction() as tx:
        await tx.delete("Patient", "p1")
    deleted, _ = await store.write_position()
    assert await store.version_at("Patient", "p1", before - 1) is None
    old = await store.version_at("Patient", "p1", before)
    assert old is not None and old.version == 1 and not old.deleted
    assert old.resource()["gender"] != "female"
    new = await store.version_at("Patient", "p1", updated)
    assert new is not None and new.version == 2 and new.resource()["gender"] == "female"
    gone = await store.version_at("Patient", "p1", deleted)
    assert gone is not None and gone.deleted and gone.version == 3
    assert await store.version_at("Patient", "nobody", deleted) is None

"""Contract: create, read, vread, update, delete and scan behave the same on every store."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_server.errors import Conflict, Gone, NotFound, VersionConflict
from fhir_server.storage.port import ResourceStore, StoredResource, WriteResult
from tests.builders import observation, patient


def _patient(id: str = "p1", **extra: Any) -> dict[str, Any]:
    return {**patient(**extra), "id": id}


async def create(store: ResourceStore, resource: dict[str, Any]) -> StoredResource:
    async with store.transaction() as tx:
        return await tx.create(dict(resource), None)


async def update(store: ResourceStore, resource: dict[str, Any], **options: Any) -> WriteResult:
    async with store.transaction() as tx:
        return await tx.update(dict(resource), None, **options)


async def delete(store: ResourceStore, resource_type: str, id: str) -> StoredResource | None:
    async with store.transaction() as tx:
        return await tx.delete(resource_type, id)


async def test_create_then_read_returns_version_1_with_meta_stamped(store: ResourceStore) -> None:
    created = await create(store, _patient())
    read = await store.read("Patient", "p1")
    assert (read.version, read.method, read.deleted) == (1, "POST", False)
    assert read.content == created.content
    meta = read.resource()["meta"]
    assert meta == {"versionId": "1", "lastUpdated": read.last_updated}
    assert read.resource()["identifier"] == _patient()["identifier"]


async def test_read_of_unknown_resource_raises_not_found(store: ResourceStore) -> None:
    with pytest.raises(NotFound):
        await store.read("Patient", "nobody")


async def test_create_of_an_existing_id_raises_conflict(store: ResourceStore) -> None:
    await create(store, _patient())
    with pytest.raises(Conflict) as raised:
        await create(store, _patient())
    assert raised.value.message_id == "MSG_ID_EXISTS"


async def test_update_stores_a_new_version_and_vread_returns_each(store: ResourceStore) -> None:
    await create(store, _patient(gender="male"))
    result = await update(store, _patient(gender="female"))
    assert (result.stored.version, result.created, result.changed) == (2, False, True)
    assert (await store.read("Patient", "p1")).resource()["gender"] == "female"
    assert (await store.vread("Patient", "p1", 1)).resource()["gender"] == "male"
    second = await store.vread("Patient", "p1", 2)
    assert (second.version, second.method, second.resource()["meta"]["versionId"]) == (
        2,
        "PUT",
        "2",
    )


@pytest.mark.parametrize("key", [("Patient", "p1", 3), ("Patient", "other", 1)])
async def test_vread_of_unknown_version_raises_not_found(
    store: ResourceStore, key: tuple[str, str, int]
) -> None:
    await create(store, _patient())
    await update(store, _patient(gender="female"))
    with pytest.raises(NotFound):
        await store.vread(*key)


async def test_update_with_equal_content_changes_nothing(store: ResourceStore) -> None:
    first = await create(store, _patient())
    # The client echoes the meta it was served: versionId and lastUpdated do not count.
    result = await update(store, first.resource())
    assert (result.changed, result.created, result.stored.version) == (False, False, 1)
    assert result.stored.content == first.content
    assert (await store.read("Patient", "p1")).last_updated == first.last_updated
    with pytest.raises(NotFound):
        await store.vread("Patient", "p1", 2)


async def test_update_of_an_unknown_id_creates_it(store: ResourceStore) -> None:
    result = await update(store, _patient("new"))
    assert (result.stored.version, result.created, result.changed) == (1, True, True)
    assert (await store.read("Patient", "new")).method == "PUT"


@pytest.mark.parametrize(
    ("existing", "expected_version"),
    [(True, 2), (True, 0), (False, 1)],
    ids=["ahead", "behind", "absent"],
)
async def test_update_with_a_wrong_expected_version_raises_version_conflict(
    store: ResourceStore, existing: bool, expected_version: int
) -> None:
    if existing:
        await create(store, _patient())
    with pytest.raises(VersionConflict):
        await update(store, _patient(gender="female"), expected_version=expected_version)
    if existing:
        assert (await store.read("Patient", "p1")).version == 1


async def test_update_with_the_current_expected_version_succeeds(store: ResourceStore) -> None:
    await create(store, _patient())
    result = await update(store, _patient(gender="female"), expected_version=1)
    assert result.stored.version == 2


async def test_delete_records_a_marker_and_read_then_raises_gone(store: ResourceStore) -> None:
    await create(store, _patient())
    marker = await delete(store, "Patient", "p1")
    assert marker is not None
    assert (marker.version, marker.deleted, marker.method, marker.content) == (
        2,
        True,
        "DELETE",
        b"",
    )
    with pytest.raises(Gone) as raised:
        await store.read("Patient", "p1")
    assert raised.value.headers["ETag"] == 'W/"2"'


@pytest.mark.parametrize("deleted_first", [False, True], ids=["unknown", "already-deleted"])
async def test_delete_of_nothing_returns_none(store: ResourceStore, deleted_first: bool) -> None:
    if deleted_first:
        await create(store, _patient())
        await delete(store, "Patient", "p1")
    assert await delete(store, "Patient", "p1") is None


async def test_vread_of_a_deletion_raises_gone_and_earlier_versions_remain(
    store: ResourceStore,
) -> None:
    await create(store, _patient())
    await delete(store, "Patient", "p1")
    with pytest.raises(Gone):
        await store.vread("Patient", "p1", 2)
    assert (await store.vread("Patient", "p1", 1)).version == 1


async def test_recreate_after_delete_continues_the_versions(store: ResourceStore) -> None:
    await create(store, _patient())
    await delete(store, "Patient", "p1")
    result = await update(store, _patient())
    assert (result.stored.version, result.created, result.changed) == (3, True, True)
    assert (await store.read("Patient", "p1")).version == 3


async def test_create_over_a_deleted_id_raises_conflict(store: ResourceStore) -> None:
    await create(store, _patient())
    await delete(store, "Patient", "p1")
    with pytest.raises(Conflict):
        await create(store, _patient())


async def test_stored_content_keeps_decimals_and_vietnamese_text(store: ResourceStore) -> None:
    resource = {**observation(value=36.50), "id": "o1", "note": [{"text": "Bệnh nhân ổn định"}]}
    await create(store, resource)
    read = await store.read("Observation", "o1")
    assert read.resource()["note"] == [{"text": "Bệnh nhân ổn định"}]
    assert orjson.loads(read.content)["valueQuantity"]["value"] == 36.5


async def test_scan_yields_every_current_resource_and_filters_by_type(
    store: ResourceStore,
) -> None:
    for id in ("a", "b", "c"):
        await create(store, _patient(id))
    await create(store, {**observation(), "id": "o1"})
    await delete(store, "Patient", "b")
    everything = {(s.resource_type, s.id) async for s in store.scan()}
    assert everything == {("Patient", "a"), ("Patient", "c"), ("Observation", "o1")}
    patients = [s async for s in store.scan("Patient")]
    assert sorted(s.id for s in patients) == ["a", "c"]
    assert all(s.version == 1 and s.content for s in patients)


async def test_ping_succeeds_on_an_open_store(store: ResourceStore) -> None:
    await store.ping()

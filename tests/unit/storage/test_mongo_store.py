"""MongoDB store behaviour beyond the contract: start-up, standalone servers, races, the factory.

Runs against the in-process stand-in (``tests.contract.mongo_fake``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymongo")  # until pyproject lists it, CI may lack it

from fhir_server.errors import VersionConflict
from fhir_server.settings import Settings
from fhir_server.storage.factory import open_store
from fhir_server.storage.mongo.indexes import INDEXES
from fhir_server.storage.mongo.store import MongoStore, TransactionsUnavailable
from tests.builders import CCCD_SYSTEM, criteria, observation, patient
from tests.contract.mongo_fake import FakeMongoClient


async def _open(replica_set: bool = True) -> tuple[MongoStore, FakeMongoClient]:
    client = FakeMongoClient(replica_set=replica_set)
    store = MongoStore("mongodb://fake/fhir", client=client)
    await store.open()
    return store, client


async def test_open_creates_every_listed_index() -> None:
    _store, client = await _open()
    created = client.state_by_db["fhir"].indexes
    assert created == [(s.collection, *s.create_args()) for s in INDEXES]


async def test_open_on_a_replica_set_enables_transactions() -> None:
    store, _ = await _open(replica_set=True)
    assert store.transactions_supported


async def test_open_on_a_standalone_server_warns_clearly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fhir_server.storage.mongo.store"):
        store, _ = await _open(replica_set=False)
    assert not store.transactions_supported
    assert "standalone" in caplog.text and "replica set" in caplog.text


async def test_standalone_server_refuses_a_multi_resource_scope_and_writes_nothing() -> None:
    store, _ = await _open(replica_set=False)
    with pytest.raises(TransactionsUnavailable) as raised:
        async with store.transaction() as tx:
            await tx.create({**patient(), "id": "p1"}, None)
            await tx.create({**observation(), "id": "o1"}, None)
    assert (raised.value.status, raised.value.message_id) == (501, "MSG_TRANSACTIONS_UNAVAILABLE")
    assert [s async for s in store.scan()] == []


async def test_standalone_server_accepts_a_single_resource_write() -> None:
    store, _ = await _open(replica_set=False)
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
        await tx.update({**patient(gender="female"), "id": "p1"}, None)
    assert (await store.read("Patient", "p1")).version == 2


async def test_a_scope_that_lost_the_race_raises_version_conflict() -> None:
    store, _ = await _open()
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
    with pytest.raises(VersionConflict):
        async with store.transaction() as slow:
            await slow.update({**patient(gender="female"), "id": "p1"}, None)
            async with store.transaction() as fast:
                await fast.update({**patient(gender="other"), "id": "p1"}, None)
    current = await store.read("Patient", "p1")
    assert (current.version, current.resource()["gender"]) == (2, "other")


async def test_two_creates_of_one_id_cannot_both_win() -> None:
    store, _ = await _open()
    with pytest.raises(VersionConflict):
        async with store.transaction() as slow:
            await slow.create({**patient(), "id": "p1"}, None)
            await slow.create({**observation(), "id": "o1"}, None)
            async with store.transaction() as fast:
                await fast.create({**patient(gender="female"), "id": "p1"}, None)
    assert (await store.read("Patient", "p1")).resource()["gender"] == "female"
    assert [s.id async for s in store.scan("Observation")] == []


async def test_concurrent_conditional_creates_of_one_identifier_create_one_resource() -> None:
    store, _ = await _open()
    search = [("identifier", f"{CCCD_SYSTEM}|001090012345")]
    with pytest.raises(VersionConflict) as raised:
        async with store.transaction() as slow:
            assert await slow.find(criteria("Patient", search)) == []
            async with store.transaction() as fast:
                assert await fast.find(criteria("Patient", search)) == []
                await fast.create({**patient(), "id": "fast"}, None)
            await slow.create({**patient(), "id": "slow"}, None)
    assert raised.value.message_id == "MSG_CONDITIONAL_RACE"
    assert [s.id async for s in store.scan("Patient")] == ["fast"]


async def test_a_transient_write_conflict_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymongo.errors import OperationFailure

    from fhir_server.storage.mongo import store as store_module
    from fhir_server.storage.mongo import writes as writes_module

    store, _ = await _open()
    calls: list[int] = []
    real = writes_module.apply_writes

    async def flaky(db: Any, plan: Any, session: Any = None) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationFailure(
                "WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]}
            )
        await real(db, plan, session)

    monkeypatch.setattr(store_module, "apply_writes", flaky)  # the name store.py calls
    async with store.transaction() as tx:
        await tx.create({**patient(), "id": "p1"}, None)
    assert len(calls) == 2
    assert (await store.read("Patient", "p1")).version == 1


async def test_close_closes_the_client() -> None:
    store, client = await _open()
    await store.close()
    assert client.closed
    with pytest.raises(RuntimeError):
        await store.ping()


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("mongodb://db1:27017/health_book", "health_book"),
        ("mongodb://a,b,c/?replicaSet=rs0", "fhir"),
        ("mongodb+srv://cluster.example/fhir_vn?retryWrites=true", "fhir_vn"),
    ],
)
def test_storage_url_selects_mongodb_and_its_database(
    tmp_path: Path, url: str, database: str
) -> None:
    store = open_store(Settings(data_dir=tmp_path, storage=url))
    assert isinstance(store, MongoStore)
    assert (store.url, store.database) == (url, database)


async def test_a_resource_carries_its_index_and_moves_with_its_owning_patient() -> None:
    from fhir_server.search.indexing import index_resource
    from fhir_server.search.registry import SearchParameterRegistry

    registry = SearchParameterRegistry.load()
    store, client = await _open()
    first = {**observation("Patient/p1"), "id": "o1"}
    moved = {**observation("Patient/p2"), "id": "o1"}
    async with store.transaction() as tx:
        await tx.create(dict(first), index_resource(first, registry))
    documents = client.state_by_db["fhir"].docs
    stored = documents["resources"]["Observation/o1"]
    assert (stored["pk"], stored["idx"]["compartments"]) == ("p1", ["p1"])
    async with store.transaction() as tx:
        await tx.update(dict(moved), index_resource(moved, registry))
    stored = documents["resources"]["Observation/o1"]
    assert (stored["pk"], stored["version"]) == ("p2", 2)
    assert [documents["versions"][f"Observation/o1/{n}"]["pk"] for n in (1, 2)] == ["p1", "p2"]
    assert documents["versions"]["Observation/o1/1"]["until"] == stored["lastUpdated"]


async def test_a_search_runs_under_the_operation_timeout_and_a_timeout_is_too_costly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pymongo import _csot  # the driver's own view of the timeout in force
    from pymongo.errors import ExecutionTimeout, OperationFailure

    from fhir_server.errors import SearchTooCostly
    from fhir_server.search.model import SearchQuery
    from fhir_server.storage.mongo import search as search_module

    client = FakeMongoClient()
    store = MongoStore("mongodb://fake/fhir", client=client, search_timeout_s=2.5)
    await store.open()
    seen: list[float | None] = []
    failure: list[Exception] = [ExecutionTimeout("operation exceeded time limit")]

    async def timed(*args: Any) -> Any:
        seen.append(_csot.get_timeout())
        raise failure[0]

    monkeypatch.setattr(search_module, "run_search", timed)
    with pytest.raises(SearchTooCostly):
        await store.search(SearchQuery("Patient"))
    assert seen == [2.5]
    failure[0] = OperationFailure("something else")
    with pytest.raises(OperationFailure):  # other driver errors are not timeouts
        await store.search(SearchQuery("Patient"))

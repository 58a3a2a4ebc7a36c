"""Stores for the contract suite: every adapter, each opened fresh for each test.

``sqlite`` and ``mongo-fake`` always run; ``mongo-real`` runs when
``FHIR_SERVER_TEST_MONGODB_URL`` names a MongoDB server (a replica set, for transactions),
each test in a database of its own that is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fhir_server.storage.port import ResourceStore
from fhir_server.storage.sqlite.store import SqliteStore

MONGODB_URL = os.environ.get("FHIR_SERVER_TEST_MONGODB_URL")
ADAPTERS = [
    "sqlite",
    "mongo-fake",
    pytest.param(
        "mongo-real",
        marks=pytest.mark.skipif(not MONGODB_URL, reason="FHIR_SERVER_TEST_MONGODB_URL is not set"),
    ),
]


def sqlite_index_tables() -> ModuleType:
    """The search index tables of the embedded store."""
    from fhir_server.storage.sqlite import search_tables

    return search_tables


async def _mongo_store(url: str | None, client: Any) -> tuple[Any, str]:
    from fhir_server.storage.mongo.store import MongoStore

    database = f"fhir_contract_{uuid.uuid4().hex[:12]}"
    return MongoStore(url or "mongodb://fake", database=database, client=client), database


@pytest.fixture(params=ADAPTERS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResourceStore]:
    """An opened, empty store of each adapter."""
    adapter: str = request.param
    if adapter == "sqlite":
        opened: Any = SqliteStore(tmp_path / "store.db", index_tables=sqlite_index_tables())
        await opened.open()
        yield opened
        await opened.close()
        return
    pytest.importorskip("pymongo")
    if adapter == "mongo-fake":
        from tests.contract.mongo_fake import FakeMongoClient

        opened, _ = await _mongo_store(None, FakeMongoClient())
        await opened.open()
        yield opened
        await opened.close()
        return
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(MONGODB_URL)
    opened, database = await _mongo_store(MONGODB_URL, client)
    await opened.open()
    yield opened
    await client.drop_database(database)
    await opened.close()

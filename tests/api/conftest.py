"""The ``door`` fixture: one app per test module, in which each test stores its own world of
two patients (tests/api/two_patients.py), so hundreds of access checks need not start hundreds
of apps. Modules using it run on the module's event loop:
``pytestmark = pytest.mark.asyncio(loop_scope="module")``."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhir_server import main as app_module
from fhir_server.settings import Settings
from tests.api.two_patients import World, populate
from tests.conftest import API_STORAGE, token_for


@dataclass
class Door:
    """A running app and a ``system/*.cruds`` client of it."""

    http: httpx.AsyncClient
    settings: Settings
    services: Any = None
    _shared: World | None = None
    #: The ASGI app (for the websocket endpoint, outside the HTTP client's reach).
    app: Any = None

    async def flush_audit(self) -> None:
        """Write the AuditEvents of the reads so far (they are written in batches)."""
        await self.services.audit_trail.flush()

    async def world(self, rng: random.Random | None = None, extras: int = 0) -> World:
        """Store a new world of two patients and return it."""
        return await populate(self.http, self.settings, rng, extras)

    async def reading_world(self) -> World:
        """One world for the module's requests that must not write (those that do, wrongly,
        fail the test that sent them)."""
        if self._shared is None:
            self._shared = await self.world()
        return self._shared


def _module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    storage = ""
    if API_STORAGE.startswith("mongodb"):
        storage = f"{API_STORAGE.rstrip('/')}/fhir_door_{uuid.uuid4().hex[:12]}"
    return Settings(data_dir=tmp_path_factory.mktemp("door") / "data",
                    base_url="http://test/fhir", storage=storage, max_body_bytes=64 * 1024,
                    seed_search_parameters=False, export_jobs_per_client=10_000)


def _open_mongo_fake(settings: Settings, registry: Any = None) -> Any:
    from fhir_server.storage.mongo.store import MongoStore
    from tests.contract.mongo_fake import FakeMongoClient

    store = MongoStore("mongodb://fake", database="fhir", client=FakeMongoClient())
    store.registry = registry
    return store


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def door(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Door]:
    """One app for the module (on the mongo stand-in when the API suite runs on it)."""
    settings = _module_settings(tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        if API_STORAGE == "mongo-fake":
            patch.setattr(app_module, "open_store", _open_mongo_fake)
        app = app_module.create_app(settings)
        async with app.router.lifespan_context(app):
            headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://test", headers=headers) as http:
                yield Door(http, settings, app.state.services, app=app)

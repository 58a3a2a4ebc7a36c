"""Shared fixtures: a fresh store and an in-process API client per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.main import create_app
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token
from fhir_server.settings import PROJECT_DIR, Settings

#: Point the API suite at another store, e.g. a MongoDB replica set:
#: FHIR_SERVER_TEST_API_STORAGE=mongodb://localhost:27017 (one database per test), or
#: ``mongo-fake`` for the in-process stand-in of the contract suite.
API_STORAGE = os.environ.get("FHIR_SERVER_TEST_API_STORAGE", "")


@pytest.fixture(autouse=True)
def _api_on_mongo_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``FHIR_SERVER_TEST_API_STORAGE=mongo-fake``, the app opens the stand-in."""
    if API_STORAGE != "mongo-fake":
        return
    from fhir_server import main as app_module
    from fhir_server.storage.mongo.store import MongoStore
    from tests.contract.mongo_fake import FakeMongoClient

    # One stand-in server per data directory: an app started again on it (a restart) finds
    # what the one before wrote, as it would on a real MongoDB.
    servers: dict[str, FakeMongoClient] = {}

    def open_fake(settings: Settings, registry: Any = None) -> Any:
        client = servers.setdefault(str(settings.data_dir), FakeMongoClient())
        store = MongoStore("mongodb://fake", database="fhir", client=client)
        store.registry = registry
        return store

    monkeypatch.setattr(app_module, "open_store", open_fake)
on_sqlite_only = pytest.mark.skipif(bool(API_STORAGE), reason="inspects the SQLite file")


#: Files of terminology/ at least this large (the administrative units and their conversion,
#: 4 MB and ~40,000 index rows) are left out of the store the tests' servers seed.
LARGE_TERMINOLOGY_BYTES = 100_000


@pytest.fixture(scope="session")
def small_terminology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy (links) of terminology/ without its large files."""
    folder = tmp_path_factory.mktemp("terminology")
    for path in sorted((PROJECT_DIR / "terminology").glob("*.json")):
        if path.stat().st_size < LARGE_TERMINOLOGY_BYTES:
            (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture
def settings(tmp_path: Path, small_terminology: Path) -> Settings:
    """Settings of a server whose data lives in the test's temporary directory."""
    # Storing the 1,369 SearchParameters costs ~0.5 s per fresh store, the large code systems
    # of the administrative units ~1 s: only the tests that read them through the API store
    # them. The terminology operations and the validator read terminology/ itself.
    storage = ""
    if API_STORAGE.startswith("mongodb"):
        storage = f"{API_STORAGE.rstrip('/')}/fhir_api_{uuid.uuid4().hex[:12]}"
    return Settings(data_dir=tmp_path / "data", base_url="http://test/fhir", storage=storage,
                    max_body_bytes=64 * 1024, seed_search_parameters=False,
                    referential_integrity=False, terminology_dir=small_terminology)


def token_for(settings: Settings, scope: str, **claims: Any) -> str:
    """An access token signed by the test server's own key."""
    base = settings.public_base_url()
    return mint_access_token(load_server_key(settings.data_dir), issuer=base, audience=base,
                             subject=claims.pop("subject", "test-client"), scope=scope,
                             **claims)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process (lifespan run around the test).

    Access control is on, as in production; the client carries a ``system/*.cruds`` token.
    """
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers=headers) as http:
            yield http


@pytest.fixture
async def client_with(settings: Settings) -> AsyncIterator[Any]:
    """Make clients of apps whose settings differ from the default test settings."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> httpx.AsyncClient:
        changed = settings.model_copy(update=overrides)
        app = create_app(changed)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        headers = {"Authorization": f"Bearer {token_for(changed, 'system/*.cruds')}"}
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test", headers=headers)
        opened.append((context, http))
        return http

    yield make
    for context, http in opened:
        await http.aclose()
        await context.__aexit__(None, None, None)

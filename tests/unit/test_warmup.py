"""The start-up warm-up (``fhir_server.warmup``): what the first push would build is built
before the first request, and a warm-up that fails does not stop the server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhir_server.conformance import elements, profiles
from fhir_server.interactions.context import Services
from fhir_server.main import create_app
from fhir_server.search import indexing
from fhir_server.search.setup import prepare_search
from fhir_server.settings import Settings
from fhir_server.storage.sqlite.store import SqliteStore
from fhir_server.warmup import warm_up
from tests.conftest import token_for

PUSH_TYPES = {"Patient", "Organization", "Encounter", "Condition", "Observation",
              "MedicationRequest", "DocumentReference"}


def _services(settings: Settings) -> Services:
    """What the warm-up is given; the store is never opened (nothing is stored)."""
    return Services(store=SqliteStore(":memory:"), settings=settings,
                    registry=prepare_search(settings))


@pytest.fixture
def cold() -> Iterator[None]:
    """Empty the caches the first push fills; they are rebuilt on use by later tests."""
    elements._structures.cache_clear()
    profiles.default_validator.cache_clear()
    yield
    elements._structures.cache_clear()
    profiles.default_validator.cache_clear()


@pytest.mark.usefixtures("cold")
def test_the_warm_up_builds_the_tables_the_validator_and_the_plans_of_every_push_type(
    tmp_path: Path,
) -> None:
    services = _services(Settings(data_dir=tmp_path))
    done = warm_up(services)
    assert done is not None and done.types == PUSH_TYPES
    assert done.resources >= len(PUSH_TYPES)
    assert elements._structures.cache_info().currsize == 1
    assert profiles.default_validator.cache_info().currsize == 1
    assert set(indexing._TYPE_PLANS[services.registry]) >= PUSH_TYPES


@pytest.mark.usefixtures("cold")
def test_without_profile_validation_the_warm_up_leaves_the_validator_unbuilt(
    tmp_path: Path,
) -> None:
    done = warm_up(_services(Settings(data_dir=tmp_path, validation="off")))
    assert done is not None and done.types == PUSH_TYPES
    assert profiles.default_validator.cache_info().currsize == 0
    assert elements._structures.cache_info().currsize == 1  # structure is always checked


def test_a_failing_warm_up_is_logged_and_the_start_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no plans today")

    services = _services(Settings(data_dir=tmp_path))
    monkeypatch.setattr(services, "index", broken)
    with caplog.at_level(logging.INFO, logger="fhir_server"):
        done = warm_up(services)
    assert done is None
    assert "warm-up failed" in caplog.text and "no plans today" in caplog.text
    assert "warmed up" not in caplog.text


@pytest.mark.usefixtures("cold")
async def test_the_server_is_warm_before_its_first_request(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", base_url="http://test/fhir",
                        seed_search_parameters=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        registry = app.state.services.registry
        assert set(indexing._TYPE_PLANS[registry]) >= PUSH_TYPES
        assert elements._structures.cache_info().currsize == 1
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers=headers) as http:
            for kind in sorted(PUSH_TYPES):  # the warm-up stored nothing
                answer = await http.get(f"/fhir/{kind}")
                assert answer.status_code == 200
                assert answer.json().get("entry", []) == []

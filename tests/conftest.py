"""Shared fixtures: a fresh store and an in-process API client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_server.main import create_app
from fhir_server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a server whose data lives in the test's temporary directory."""
    return Settings(data_dir=tmp_path / "data", base_url="http://test/fhir",
                    max_body_bytes=64 * 1024)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process (lifespan run around the test)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http

"""Shared fixtures: a fresh store and an in-process API client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.main import create_app
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token
from fhir_server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a server whose data lives in the test's temporary directory."""
    # Storing the 1,369 SearchParameters costs ~0.5 s per fresh store: only the tests of
    # GET /SearchParameter turn it on.
    return Settings(data_dir=tmp_path / "data", base_url="http://test/fhir",
                    max_body_bytes=64 * 1024, seed_search_parameters=False)


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

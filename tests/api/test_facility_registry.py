"""The facility registry seen through the API: pushes naming an unknown facility get a
warning, and no FHIR client can make a facility known by writing a registry-looking
Organization."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.facilities.known import load_known_facilities
from fhir_server.facilities.loading import load_facilities
from fhir_server.facilities.organization import REGISTRY_SOURCE, REGISTRY_TAG
from fhir_server.loader import open_services
from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests.conftest import on_sqlite_only, token_for

pytestmark = on_sqlite_only  # the registry is loaded into the test's SQLite file first
ROOT = Path(__file__).resolve().parents[2]
VISIT = (ROOT / "examples" / "visit-bundle.json").read_text()
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with open_services(settings) as services:
        await load_facilities(services, ROOT / "examples" / "facilities" / "facilities.csv")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=headers) as http:
            yield app, http


def facility_warnings(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [issue for entry in answer.get("entry", [])
            for issue in (entry["response"].get("outcome") or {}).get("issue", [])
            if issue["details"]["coding"][0]["code"] == "MSG_FACILITY_UNKNOWN"]


async def test_a_push_from_an_unregistered_facility_is_stored_with_warnings(
    app_and_client: tuple[Any, httpx.AsyncClient],
) -> None:
    _, http = app_and_client
    known = await http.post("/fhir", content=VISIT, headers=FHIR)
    unknown = await http.post("/fhir", content=VISIT.replace("19101", "19999"), headers=FHIR)
    assert known.status_code == unknown.status_code == 200
    assert facility_warnings(known.json()) == []
    assert facility_warnings(unknown.json()) != []


async def test_a_fhir_client_cannot_register_a_facility(
    app_and_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, http = app_and_client
    forged = {"resourceType": "Organization", "name": "Phòng khám X",
              "meta": {"tag": [REGISTRY_TAG], "source": REGISTRY_SOURCE},
              "identifier": [{"system": "http://fhir.ehealth.gov.vn/core/sid/provider-code",
                              "value": "19999"}]}
    created = await http.post("/fhir/Organization", json=forged, headers=FHIR)
    assert created.status_code == 201
    assert created.json()["meta"]["source"] != REGISTRY_SOURCE
    await load_known_facilities(app.state.services)  # what the next refresh would read
    push = await http.post("/fhir", content=VISIT.replace("19101", "19999"), headers=FHIR)
    assert facility_warnings(push.json()) != []

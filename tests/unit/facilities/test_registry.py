"""The facility registry in a store: an idempotent load of Organizations of the Vietnamese
profile, and the check of pushes that name a facility the registry lacks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fhir_server.conformance.profiles import default_validator
from fhir_server.errors import Unprocessable
from fhir_server.facilities.known import load_known_facilities
from fhir_server.facilities.loading import load_facilities
from fhir_server.interactions.context import Services
from fhir_server.loader import open_services
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.security.caller import SERVER
from fhir_server.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "examples" / "facilities" / "facilities.csv"


async def push(services: Services, transaction: dict[str, Any]) -> FhirResponse:
    """A transaction Bundle through the router, as the server itself."""
    assert services.handle is not None
    return await services.handle(services, FhirRequest("POST", "bundle", body=transaction),
                                 SERVER)


VISIT = json.loads((ROOT / "examples" / "visit-bundle.json").read_text())  # facility 19101


def visit_at(code: str) -> dict[str, Any]:
    """The example visit, sent by facility ``code`` instead of 19101."""
    return json.loads(json.dumps(VISIT).replace("19101", code))


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", seed_search_parameters=False)
    async with open_services(settings) as opened:
        yield opened


def with_mode(services: Services, mode: str) -> Services:
    return replace(services, settings=services.settings.model_copy(
        update={"unknown_facility": mode}))


async def versions(services: Services) -> int:
    total = 0
    async for stored in services.store.scan("Organization"):
        total += stored.version
    return total


async def test_loading_twice_creates_each_facility_once_and_no_new_version(
    services: Services,
) -> None:
    first = await load_facilities(services, SAMPLE)
    assert (first.created, first.present, first.failed) == (306, 0, False)
    before = await versions(services)
    second = await load_facilities(services, SAMPLE)
    assert (second.created, second.present, second.failed) == (0, 306, False)
    assert await versions(services) == before == 306


async def test_a_changed_row_updates_its_organization(services: Services, tmp_path: Path) -> None:
    await load_facilities(services, SAMPLE)
    changed = tmp_path / "changed.csv"
    changed.write_text("code,name,level,province\n01001,Bệnh viện Hữu nghị,3,01\n")
    assert (await load_facilities(services, changed)).present == 1
    found = [s async for s in services.store.scan("Organization")
             if s.resource()["identifier"][0]["value"] == "01001"]
    assert found[0].version == 2 and found[0].resource()["name"] == "Bệnh viện Hữu nghị"


async def test_registry_organizations_conform_to_the_vietnamese_profile(
    services: Services,
) -> None:
    await load_facilities(services, SAMPLE)
    async for stored in services.store.scan("Organization"):
        organization = stored.resource()
        errors = [i for i in default_validator().validate_resource(organization)
                  if i.severity == "error"]
        assert errors == [], organization["identifier"]
        assert organization["meta"]["tag"][0]["code"] == "registry"


async def test_malformed_rows_are_reported_and_the_others_loaded(
    services: Services, tmp_path: Path,
) -> None:
    path = tmp_path / "some.csv"
    path.write_text("code,name,level,province\n01001,A,3,01\n0100X,B,9,01\n79088,C,1,79\n")
    result = await load_facilities(services, path)
    assert result.created == 2 and result.failed
    assert [row.line for row in result.malformed] == [3]
    assert "line 3:" in result.describe()


async def test_an_unknown_facility_code_in_a_push_gets_a_warning(services: Services) -> None:
    await load_facilities(services, SAMPLE)
    await load_known_facilities(services)
    answer = await push(services, visit_at("19999"))
    outcomes = [e["response"].get("outcome") for e in (answer.body or {})["entry"]]
    issues = [i for o in outcomes if o for i in o["issue"]
              if i["details"]["coding"][0]["code"] == "MSG_FACILITY_UNKNOWN"]
    assert issues and all(i["severity"] == "warning" for i in issues)
    assert {"Organization.identifier[0].value", "Encounter.identifier[0].system"} <= {
        i["expression"][0] for i in issues}


async def test_a_known_facility_code_gets_no_warning(services: Services) -> None:
    await load_facilities(services, SAMPLE)
    await load_known_facilities(services)
    answer = await push(services, visit_at("19101"))
    assert not any("MSG_FACILITY_UNKNOWN" in json.dumps(e) for e in (answer.body or {})["entry"])


async def test_in_error_mode_a_push_naming_an_unknown_facility_is_refused(
    services: Services,
) -> None:
    await load_facilities(services, SAMPLE)
    await load_known_facilities(services)
    strict = with_mode(services, "error")
    with pytest.raises(Unprocessable) as refused:
        await push(strict, visit_at("19999"))
    assert refused.value.message_id == "MSG_FACILITY_UNKNOWN"
    assert [s async for s in services.store.scan("Encounter")] == []  # nothing stored


async def test_without_a_registry_nothing_is_checked(services: Services) -> None:
    await load_known_facilities(services)
    strict = with_mode(services, "error")
    answer = await push(strict, visit_at("19999"))
    assert answer.status == 200

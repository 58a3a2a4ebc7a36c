"""The AuditEvents a search writes are the same on the MongoDB adapter as on the embedded
store, for the same data and the same tokens (matches, ``_include`` and ``_revinclude``
pages, a citizen's, a clinician's, a facility's and an operator's tokens, and a citizen's
token aimed at someone else's record), and neither store parses a page's resources to find
their patients: the page carries them as indexed (``StoredResource.patients``; MongoDB:
``idx.compartments``, SQLite: ``search_compartment``).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhir_server import main as app_module
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.parse import parse_search
from fhir_server.security.policy import Access
from fhir_server.settings import Settings
from fhir_server.storage.factory import open_store
from fhir_server.storage.mongo.store import MongoStore
from tests.api import two_patients
from tests.api.two_patients import World, populate
from tests.conftest import token_for
from tests.contract.mongo_fake import FakeMongoClient

#: The tokens (``two_patients.TOKENS``) and the searches: A's and B's records, with their
#: includes; A's tokens aimed at B's record are an attacker's.
KINDS = ("p.rs", "p.lab", "dr.X", "dr.Y", "fac.X", "op", "s.lab")
SEARCHES = (
    "Observation?patient=Patient/{a}&_include=Observation:encounter",
    "Encounter?patient=Patient/{a}&_revinclude=Condition:encounter"
    "&_revinclude=Observation:encounter",
    "Patient?_id={a},{b}&_revinclude=Observation:subject",
    "Condition?_include=Condition:subject&_include=Condition:encounter",
    "Observation?patient=Patient/{b}",
    "Patient/{a}/Observation?_include=Observation:subject",
    "Observation?_count=3",
)


def _mongo_fake(settings: Settings, registry: Any = None) -> MongoStore:
    store = MongoStore("mongodb://fake", database="fhir", client=FakeMongoClient())
    store.registry = registry
    return store


@pytest_asyncio.fixture
async def worlds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[dict[str, tuple[httpx.AsyncClient, World, Any]]]:
    """The same world (same ids) stored on SQLite and on the MongoDB stand-in."""
    out: dict[str, tuple[httpx.AsyncClient, World, Any]] = {}
    for name, opener in (("sqlite", open_store), ("mongo", _mongo_fake)):
        monkeypatch.setattr(app_module, "open_store", opener)
        ids = itertools.count()
        monkeypatch.setattr(two_patients, "new_id",
                            lambda ids=ids: uuid.UUID(int=next(ids) + 1).hex)
        settings = Settings(data_dir=tmp_path / name, base_url="http://test/fhir",
                            seed_search_parameters=False)
        app = app_module.create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test", headers=headers)
        out[name] = (http, await populate(http, settings), app.state.services, lifespan)
    yield {name: (http, world, services) for name, (http, world, services, _) in out.items()}
    for http, _, _, lifespan in out.values():
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


def _normalized(event: dict[str, Any]) -> str:
    """What an AuditEvent says, without its id, times and the network address; its entities
    in a fixed order (a page lists the resources one Bundle stored in the order of their
    ``rid``, which a transaction assigns in no set order on either store)."""
    kept = {k: v for k, v in event.items() if k not in ("id", "meta", "recorded", "period")}
    for agent in kept.get("agent") or ():
        agent.pop("network", None)
    kept["entity"] = sorted(kept.get("entity") or (), key=str)
    return str(sorted(kept.items()))


async def _search_events(http: httpx.AsyncClient, services: Any) -> list[str]:
    await services.audit_trail.flush()
    found = await http.get("/fhir/AuditEvent?_count=1000")
    assert found.status_code == 200, found.text
    events = [e["resource"] for e in found.json().get("entry", [])]
    return sorted(_normalized(e) for e in events
                  if any(s.get("code") == "search-type" for s in e.get("subtype") or ()))


async def test_a_search_writes_the_same_audit_events_on_both_stores(
    worlds: dict[str, tuple[httpx.AsyncClient, World, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    original = Access.patients_of

    def patients_of(self: Access, resource: dict[str, Any]) -> frozenset[str]:
        parsed.append(f"{resource.get('resourceType')}/{resource.get('id')}")
        return original(self, resource)

    monkeypatch.setattr(Access, "patients_of", patients_of)
    answers: dict[str, list[tuple[str, str, int, str]]] = {}
    events: dict[str, list[str]] = {}
    for name, (http, world, services) in worlds.items():
        answers[name] = []
        for kind in KINDS:
            for search in SEARCHES:
                url = "/fhir/" + search.format(a=world.a.patient, b=world.b.patient)
                response = await http.get(url, headers=world.headers(kind))
                ids = sorted(e["resource"]["id"] for e in response.json().get("entry", ())
                             ) if response.status_code == 200 else []
                answers[name].append((kind, search, response.status_code, str(ids)))
        assert parsed == [], name  # no page's resource parsed for its patients
        events[name] = await _search_events(http, services)
        parsed.clear()
    assert answers["mongo"] == answers["sqlite"]
    assert len(events["sqlite"]) > len(KINDS) * 3  # one per patient of each page, at least
    assert events["mongo"] == events["sqlite"]


async def test_a_mongo_page_carries_the_patients_of_its_compartments(
    worlds: dict[str, tuple[httpx.AsyncClient, World, Any]]
) -> None:
    _, world, services = worlds["mongo"]
    query = parse_search("Observation", [
        ("patient", f"Patient/{world.a.patient}"), ("_include", "Observation:encounter"),
        ("_include", "Observation:subject")], services.registry).query
    result = await services.store.search(query)
    found = [*result.matches, *result.included]
    assert {s.resource_type for s in result.included} == {"Encounter", "Patient"}
    for stored in found:
        assert stored.patients == compartment_patients(stored.resource(), services.registry)
    assert {p for s in found for p in s.patients or ()} == {world.a.patient}

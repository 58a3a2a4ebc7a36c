"""Two server processes on one MongoDB database (two apps over one stand-in server): a
Consent the citizen revokes through one applies to the very next request of a clinician or
facility through the other, and while nothing changes the other reads no grant at all (it
checks the counters of grant changes once per question: ``storage.mongo.grant_memo``).

Every caller where access matters: the citizen's own token (who writes the Consent), the
doctor of the facility the Consent names (``dr.X``), that facility's system (``fac.X``), a
doctor of another facility (``dr.Y``: a valid token for someone else's record) and a national
operator (``op``: not governed by Consent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhir_server import main as app_module
from fhir_server.settings import Settings
from fhir_server.storage.mongo.grant_memo import CHANGES
from fhir_server.storage.mongo.store import MongoStore
from tests.api.two_patients import FHIR, World, populate
from tests.conftest import token_for
from tests.contract.mongo_fake import FakeMongoClient

Apps = tuple[httpx.AsyncClient, httpx.AsyncClient, Settings, dict[str, int], FakeMongoClient]


class _Counting:
    """A view of a database (or collection) of the stand-in that counts the ``find`` calls
    sent through it: of Consents' grants (``grants``) and of the counters (``counters``)."""

    def __init__(self, inner: Any, counted: dict[str, int]) -> None:
        self._inner, self._counted = inner, counted

    def __getitem__(self, name: str) -> _Counting:
        return _Counting(self._inner[name], self._counted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def find(self, filter_: dict[str, Any] | None = None, **options: Any) -> Any:
        if self._inner.name == CHANGES:
            self._counted["counters"] += 1
        elif (filter_ or {}).get("type") == "Consent":
            self._counted["grants"] += 1
        return self._inner.find(filter_, **options)


class _CountingClient(FakeMongoClient):
    """A second client of the same stand-in server (another process), counting its reads."""

    def __init__(self, server: FakeMongoClient, counted: dict[str, int]) -> None:
        super().__init__()
        self.state_by_db = server.state_by_db
        self.counted = counted

    def __getitem__(self, name: str) -> Any:
        return _Counting(super().__getitem__(name), self.counted)


@pytest_asyncio.fixture
async def two_apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Apps]:
    """Two apps over one stand-in server, and the count of the reads the second sends."""
    server = FakeMongoClient()
    counted = {"grants": 0, "counters": 0}
    clients_of_stores = iter([server, _CountingClient(server, counted)])

    def open_fake(settings: Settings, registry: Any = None) -> MongoStore:
        store = MongoStore("mongodb://fake", database="fhir", client=next(clients_of_stores))
        store.registry = registry
        return store

    monkeypatch.setattr(app_module, "open_store", open_fake)
    settings = Settings(data_dir=tmp_path / "data", base_url="http://test/fhir",
                        seed_search_parameters=False)
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = app_module.create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test",
                headers=headers)))
        yield clients[0], clients[1], settings, counted, server


async def _as(client: httpx.AsyncClient, world: World, kind: str, url: str) -> httpx.Response:
    return await client.get(url, headers=world.headers(kind))


async def test_a_revocation_through_one_process_applies_to_the_next_request_of_another(
    two_apps: Apps
) -> None:
    one, other, settings, _, _ = two_apps
    world = await populate(one, settings)
    a = world.a
    lab = f"/fhir/{a.ref('lab')}"
    search = f"/fhir/Observation?patient=Patient/{a.patient}"
    for kind in ("dr.X", "fac.X", "op"):  # A's Consent permits facility X
        assert (await _as(other, world, kind, lab)).status_code == 200, kind
        assert a.ids["lab"] in (await _as(other, world, kind, search)).text, kind
    assert (await _as(other, world, "dr.Y", lab)).status_code == 404
    assert a.ids["lab"] not in (await _as(other, world, "dr.Y", search)).text

    consent = {**a.resources["consent"], "status": "inactive"}
    revoked = await one.put(f"/fhir/{a.ref('consent')}", json=consent,
                            headers={**FHIR, **world.headers("p.cruds")})
    assert revoked.status_code == 200, revoked.text

    for kind in ("dr.X", "fac.X"):  # the very next request, through the other process
        assert (await _as(other, world, kind, lab)).status_code == 404, kind
        assert a.ids["lab"] not in (await _as(other, world, kind, search)).text, kind
    assert (await _as(other, world, "op", lab)).status_code == 200
    assert (await _as(other, world, "p.rs", lab)).status_code == 200  # the citizen themself
    assert (await _as(other, world, "dr.Y", lab)).status_code == 404


async def test_while_nothing_changes_no_request_reads_a_grant(two_apps: Apps) -> None:
    """After a caller's first request, its reads and searches (whose AuditEvents name the
    Consents that allowed them) read no grant, though the first process keeps writing
    (other patients' records, AuditEvents); a change of A's grants is read once."""
    one, other, settings, counted, _ = two_apps
    world = await populate(one, settings)
    a = world.a
    requests = [f"/fhir/{a.ref('lab')}", f"/fhir/Observation?patient=Patient/{a.patient}",
                f"/fhir/Encounter?patient=Patient/{a.patient}&_revinclude=Condition:encounter",
                f"/fhir/Patient/{a.patient}/$everything"]
    for kind in ("dr.X", "fac.X"):
        for url in requests:  # the first of each: the grants are read
            assert (await _as(other, world, kind, url)).status_code == 200, url
    await populate(one, settings)  # another world: writes, none of A's grants
    counted.update(grants=0, counters=0)
    for _ in range(3):
        for kind in ("dr.X", "fac.X"):
            for url in requests:
                response = await _as(other, world, kind, url)
                shown = a.ids["encounter" if "Encounter?" in url else "lab"]
                assert response.status_code == 200 and shown in response.text, url
    assert counted["grants"] == 0
    assert counted["counters"] > 0  # each request still asks whether anything changed

    narrowed = {**a.resources["consent"], "provision": {
        **a.resources["consent"]["provision"],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Encounter"}]}}
    changed = await one.put(f"/fhir/{a.ref('consent')}", json=narrowed,
                            headers={**FHIR, **world.headers("p.cruds")})
    assert changed.status_code == 200, changed.text
    assert (await _as(other, world, "dr.X", requests[0])).status_code == 404
    read_again = counted["grants"]
    assert read_again > 0
    assert (await _as(other, world, "dr.X", requests[0])).status_code == 404
    assert counted["grants"] == read_again


async def test_a_failed_transaction_revokes_nothing_and_counts_nothing(two_apps: Apps) -> None:
    """A revocation inside a transaction Bundle that fails writes neither the Consent nor
    its counters: the other process goes on reading what the Consent shares."""
    one, other, settings, _, server = two_apps
    world = await populate(one, settings)
    a = world.a
    lab = f"/fhir/{a.ref('lab')}"
    assert (await _as(other, world, "dr.X", lab)).status_code == 200
    counters = dict(server.state_by_db["fhir"].docs.get(CHANGES, {}))
    revoked = {**a.resources["consent"], "status": "inactive"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": revoked, "request": {"method": "PUT", "url": a.ref("consent")}},
        {"request": {"method": "DELETE", "url": "Patient/not-there"}}]}
    failed = await one.post("/fhir", json=bundle, headers={**FHIR, **world.headers("p.cruds")})
    assert failed.status_code >= 400, failed.text
    assert dict(server.state_by_db["fhir"].docs.get(CHANGES, {})) == counters
    assert (await _as(other, world, "dr.X", lab)).status_code == 200
    assert (await _as(other, world, "p.rs", f"/fhir/{a.ref('consent')}")
            ).json()["status"] == "active"

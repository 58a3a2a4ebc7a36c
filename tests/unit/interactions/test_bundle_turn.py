"""A transaction Bundle's preparation shares the event loop between its entries, so that a
write holding (or just given) the store's write turn resumes within about one entry's work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.interactions import bundle
from fhir_server.interactions.bundle import Turn, process_bundle
from fhir_server.interactions.context import Services
from fhir_server.loader import open_services
from fhir_server.router.door import EntryDoor
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import SERVER
from fhir_server.settings import Settings
from fhir_server.synthetic import generate


async def _other_task_ran(turn: Turn, computed_s: float) -> bool:
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    task = asyncio.ensure_future(other())
    time.sleep(computed_s)  # computation without a wait, as validation is
    await turn.share()
    seen = bool(ran)
    await task
    return seen


async def test_sharing_yields_once_the_slice_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "_SLICE_S", 0.001)
    assert await _other_task_ran(Turn(), 0.003)


async def test_sharing_does_not_yield_before_the_slice_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bundle, "_SLICE_S", 60.0)
    assert not await _other_task_ran(Turn(), 0.0)


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", seed_search_parameters=False)
    async with open_services(settings) as opened:
        yield opened


async def test_a_visit_bundle_lets_other_work_run_between_its_entries(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a slice of zero, another task runs between the entries' preparations, and the
    Bundle is stored whole."""
    monkeypatch.setattr(bundle, "_SLICE_S", 0.0)
    generate(1, 11, tmp_path / "visits")
    visit = orjson.loads((tmp_path / "visits" / "visits-00001.ndjson").read_bytes()
                         .splitlines()[0])
    prepared: list[int] = []
    prepare = bundle._prepare

    async def counted(*args: Any, **kwargs: Any) -> None:
        await prepare(*args, **kwargs)
        prepared.append(1)

    monkeypatch.setattr(bundle, "_prepare", counted)
    seen: set[int] = set()
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            seen.add(len(prepared))
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    outcome = await process_bundle(services, visit, EntryDoor(services, SERVER),
                                   AuditNote("transaction"))
    done.set()
    await task
    entries = len(visit["entry"])
    assert set(range(1, entries)) <= seen  # between the first entry and the last
    assert outcome.status == 200 and isinstance(outcome.body, dict)
    statuses = [e["response"]["status"] for e in outcome.body["entry"]]
    assert all(status.startswith("201") for status in statuses)

"""A load tries again an item the store answered busy, instead of rejecting it at once."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server import loader
from fhir_server.storage.sqlite.turn import StorageBusy


def _busy_then(times: int, written: int) -> Any:
    calls = {"n": 0}

    async def load_item(services: Any, item: dict[str, Any]) -> int:
        calls["n"] += 1
        if calls["n"] <= times:
            raise StorageBusy("The database is busy; try again later")
        return written

    load_item.calls = calls  # type: ignore[attr-defined]
    return load_item


async def test_an_item_the_store_answered_busy_is_loaded_on_a_later_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _busy_then(3, written=11)
    monkeypatch.setattr(loader, "_load_item", fake)
    monkeypatch.setattr(loader, "BUSY_PAUSES_S", (0.0,) * 5)
    summary = loader.LoadSummary()
    await loader._load_one(None, "visits.ndjson:7", b'{"resourceType": "Bundle"}',  # type: ignore[arg-type]
                           summary, None)
    assert (summary.resources, summary.rejected, summary.reasons) == (11, 0, [])
    assert fake.calls["n"] == 4


async def test_an_item_busy_past_every_pause_is_rejected_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _busy_then(100, written=11)
    monkeypatch.setattr(loader, "_load_item", fake)
    monkeypatch.setattr(loader, "BUSY_PAUSES_S", (0.0,) * 3)
    summary = loader.LoadSummary()
    await loader._load_one(None, "visits.ndjson:7", b'{"resourceType": "Bundle"}',  # type: ignore[arg-type]
                           summary, None)
    assert (summary.resources, summary.rejected) == (0, 1)
    assert summary.reasons == ["visits.ndjson:7: The database is busy; try again later"]
    assert fake.calls["n"] == 4  # the first try and one after each pause

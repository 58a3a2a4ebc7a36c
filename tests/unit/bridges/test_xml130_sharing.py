"""The import's conversion shares the event loop between its steps (``bundle.Turn``), as a
Bundle's preparation does between entries, and converts exactly what the one-go path does."""

from __future__ import annotations

import asyncio
from functools import cache

import orjson
import pytest

from fhir_server.bridges.xml130 import visits
from fhir_server.bridges.xml130.checks import check_visit
from fhir_server.bridges.xml130.engine import Mapped, map_tables, mapping_steps
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.interactions import bundle
from fhir_server.synthetic.generation import synthetic_visits
from fhir_server.synthetic.xml130 import visit_envelope

STANDARD = load_standard("4750")


@cache
def _envelopes() -> tuple[bytes, ...]:
    """Twelve synthetic one-visit envelopes, the one with the most tables first."""
    found = [visit_envelope(visit, made) for visit, made in synthetic_visits(12, 20261207)]
    return tuple(sorted(found, key=lambda e: -len(visits.decode(e, STANDARD).visits[0].files)))


def _resources(mapped: Mapped) -> bytes:
    return orjson.dumps([(i.table, i.role, i.n, i.resource) for i in mapped.instances])


def test_mapping_steps_name_each_mapped_table_and_map_what_map_tables_maps() -> None:
    for envelope in _envelopes():
        records, _, _ = check_visit(STANDARD, visits.decode(envelope, STANDARD).visits[0])
        mapped = Mapped()
        steps = list(mapping_steps(STANDARD, records, "79001", mapped))
        assert steps == [name for name, table in STANDARD.tables.items()
                         if not table.unmapped and name in records]
        assert _resources(mapped) == _resources(map_tables(STANDARD, records, "79001"))


async def _ticks_while_preparing(envelope: bytes) -> tuple[int, visits._Visit]:
    """How often another task ran while ``_prepare_sharing`` converted the envelope's visit."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    decoded = visits.decode(envelope, STANDARD)
    before = ticks
    prepared = await visits._prepare_sharing(STANDARD, decoded, decoded.visits[0], bundle.Turn())
    during = ticks - before
    task.cancel()
    assert isinstance(prepared, visits._Visit)
    return during, prepared


async def test_the_conversion_lets_other_work_run_after_each_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    envelope = _envelopes()[0]
    decoded = visits.decode(envelope, STANDARD)
    records, _, _ = check_visit(STANDARD, decoded.visits[0])
    tables = [name for name, table in STANDARD.tables.items()
              if not table.unmapped and name in records]
    assert len(tables) >= 4
    monkeypatch.setattr(bundle, "_SLICE_S", -1.0)  # every share gives the loop away
    during, prepared = await _ticks_while_preparing(envelope)
    assert during >= len(tables) + 1  # after the checks, and after each table's mapping
    alone = visits._prepare(STANDARD, decoded, decoded.visits[0])
    assert isinstance(alone, visits._Visit)
    assert _resources(prepared.mapped) == _resources(alone.mapped)
    assert prepared.issues == alone.issues


async def test_the_conversion_keeps_the_loop_while_within_its_slice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "_SLICE_S", 60.0)
    during, _ = await _ticks_while_preparing(_envelopes()[0])
    assert during == 0

"""The embedded store's figures: write-lock wait and hold per commit, checkpoints with the
WAL's size, and the time of the last checkpoint kept for ``fhir-server status``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fhir_server.metrics.catalogue import (
    CHECKPOINT_SECONDS,
    LAST_CHECKPOINT,
    WRITE_LOCK_HOLD_SECONDS,
    WRITE_LOCK_WAIT_SECONDS,
)
from fhir_server.storage.sqlite.store import SqliteStore
from tests.builders import patient


def _count(histogram: object, **labels: str) -> float:
    for metric in histogram.collect():  # type: ignore[attr-defined]
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_each_write_scope_and_commit_group_is_timed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    waits, holds = _count(WRITE_LOCK_WAIT_SECONDS), _count(WRITE_LOCK_HOLD_SECONDS)
    try:
        for number in range(3):
            async with store.transaction() as tx:
                await tx.create({**patient(cccd=f"{number:012d}"), "id": f"p{number}"}, None)
    finally:
        await store.close()
    assert _count(WRITE_LOCK_WAIT_SECONDS) - waits == 3
    assert _count(WRITE_LOCK_HOLD_SECONDS) - holds == 3  # one scope a group, one after another


async def test_a_background_checkpoint_is_noted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    claim = tmp_path / "db.sqlite3-checkpoint"
    os.utime(claim, (0, 0))
    passive = _count(CHECKPOINT_SECONDS, mode="passive")
    try:
        async with store.transaction() as tx:
            await tx.create({**patient(), "id": "p1"}, None)
        for _ in range(40):  # a checkpoint step runs every second
            await asyncio.sleep(0.1)
            if _count(CHECKPOINT_SECONDS, mode="passive") > passive:
                break
    finally:
        await store.close()
    assert _count(CHECKPOINT_SECONDS, mode="passive") > passive
    assert LAST_CHECKPOINT.collect()[0].samples[0].value > 0
    assert claim.stat().st_mtime > 0

"""The writer of read audit batches: its own transaction in a thread, in turn with the store's
writers, and nothing left of a batch that failed."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from fhir_server.audit_record import AuditRecord, new_event_id
from fhir_server.search.model import Clause, ParamType, ReferenceValue, SearchQuery
from fhir_server.security.audit import BatchAuditLog
from fhir_server.storage.sqlite import audit_log
from fhir_server.storage.sqlite.store import SqliteStore
from tests.builders import patient


def _records(first: int, count: int) -> list[AuditRecord]:
    return [AuditRecord("search-type", 200, new_event_id(n), n, touched=(f"Patient/p{n}",),
                        patients=(f"p{n}",), client_id="c1")
            for n in range(first, first + count)]


def _stored_events(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM audit_events ORDER BY seq")]
    finally:
        conn.close()


def _patient_search(pid: str) -> SearchQuery:
    clause = Clause("patient", ParamType.REFERENCE, (ReferenceValue(type="Patient", id=pid),))
    return SearchQuery(resource_type="AuditEvent", clauses=(clause,))


async def test_a_batch_is_stored_and_found_by_patient(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    log = store.audit_log
    assert isinstance(log, BatchAuditLog)
    records = _records(1, 5)
    try:
        await log.append_batch(records)
        found = await log.search(_patient_search("p3"))
    finally:
        await store.close()
    assert [m.id for m in found.matches] == [records[2].id]
    assert _stored_events(tmp_path / "db.sqlite3") == [r.id for r in records]


async def test_a_batch_waits_for_the_write_turn_and_the_store_waits_for_it(
    tmp_path: Path,
) -> None:
    """Another process's writer (here: the turn file locked on a descriptor of its own) keeps
    the batch out; the event loop goes on meanwhile; the batch lands once the turn is free."""
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    log = store.audit_log
    assert isinstance(log, BatchAuditLog)
    other = os.open(f"{path}-writer", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        batch = asyncio.ensure_future(log.append_batch(_records(1, 3)))
        await asyncio.sleep(0.2)  # the loop is free while the thread waits
        assert not batch.done() and _stored_events(path) == []
        fcntl.flock(other, fcntl.LOCK_UN)
        await asyncio.wait_for(batch, 10)
        async with store.transaction() as tx:  # the store's own writer gets its turn after
            await tx.create({**patient(cccd="000000000001"), "id": "p1"}, None)
    finally:
        os.close(other)
        await store.close()
    assert len(_stored_events(path)) == 3


async def test_a_failing_batch_leaves_nothing_and_the_next_one_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    log = store.audit_log
    assert isinstance(log, BatchAuditLog)
    real_merge = audit_log.merge_recent_refs

    def failing_merge(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(audit_log, "MERGE_ROWS", 4)  # the batch of 3 names 6 references
    monkeypatch.setattr(audit_log, "merge_recent_refs", failing_merge)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await log.append_batch(_records(1, 3))
        assert _stored_events(path) == []
        monkeypatch.setattr(audit_log, "merge_recent_refs", real_merge)
        await log.append_batch(_records(10, 3))
    finally:
        await store.close()
    assert len(_stored_events(path)) == 3
    conn = sqlite3.connect(path)
    try:
        merged = conn.execute("SELECT count(*) FROM audit_refs").fetchone()[0]
    finally:
        conn.close()
    assert merged == 6  # a patient and an agent reference each


async def test_a_store_in_memory_writes_batches_in_its_own_scope() -> None:
    """A database in memory is one connection's: the batch goes through the store's writer."""
    store = SqliteStore(":memory:")
    await store.open()
    log = store.audit_log
    assert isinstance(log, BatchAuditLog)
    records = _records(1, 2)
    try:
        await log.append_batch(records)
        stored = store._writer_conn().execute("SELECT id FROM audit_events ORDER BY seq")
        assert [row[0] for row in stored] == [r.id for r in records]
    finally:
        await store.close()

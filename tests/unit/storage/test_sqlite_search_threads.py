"""Searches of the embedded store run off the event loop and stop at their time limit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import SearchTooCostly
from fhir_server.search.model import SearchQuery
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.store import SqliteStore
from tests.builders import patient


def _counting(rows: int) -> str:
    """SQL that keeps SQLite busy (about 0.25 s per million rows on the development machine)."""
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        f"LIMIT {rows}) SELECT count(*) FROM c"
    )


def _slowed(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    real = store_module.run_search

    def slow_search(conn: sqlite3.Connection, *args: Any) -> Any:
        conn.execute(_counting(rows)).fetchone()
        return real(conn, *args)

    monkeypatch.setattr(store_module, "run_search", slow_search)


async def _store_with_a_patient(tmp_path: Path, **options: Any) -> SqliteStore:
    store = SqliteStore(tmp_path / "db.sqlite3", **options)
    await store.open()
    async with store.transaction() as tx:
        await tx.create({**patient(cccd="001090000001"), "id": "p1"}, None)
    return store


async def test_a_cheap_search_runs_on_the_loop_and_a_long_one_moves_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store_with_a_patient(tmp_path)
    real = store_module.run_search
    release = threading.Event()
    ran_on: list[str] = []

    def long_search(conn: sqlite3.Connection, *args: Any) -> Any:
        on_loop = threading.current_thread() is threading.main_thread()
        ran_on.append("loop" if on_loop else "thread")
        if on_loop:
            conn.execute(_counting(200_000_000)).fetchone()  # stopped at the inline budget
        else:
            release.wait(10)  # on the event loop, this would hold every other request
        return real(conn, *args)

    try:
        found = await store.search(SearchQuery("Patient"))
        assert [stored.id for stored in found.matches] == ["p1"]
        assert store._idle_searchers == []  # the cheap search needed no thread
        monkeypatch.setattr(store_module, "run_search", long_search)
        search = asyncio.ensure_future(store.search(SearchQuery("Patient")))
        while len(ran_on) < 2:
            await asyncio.sleep(0.01)
        read = await store.read("Patient", "p1")  # answered while the search runs
        assert read.id == "p1"
        assert not search.done()
        release.set()
        found = await search
        assert [stored.id for stored in found.matches] == ["p1"]
        assert ran_on == ["loop", "thread"]
    finally:
        release.set()
        await store.close()


async def test_a_search_past_its_time_limit_is_stopped_and_the_next_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store_with_a_patient(tmp_path, search_timeout_s=0.1)
    try:
        _slowed(monkeypatch, 200_000_000)  # about a minute, unless stopped
        with pytest.raises(SearchTooCostly) as caught:
            await store.search(SearchQuery("Patient"))
        assert caught.value.status == 503 and caught.value.issue_code == "too-costly"
        monkeypatch.undo()
        found = await store.search(SearchQuery("Patient"))
        assert [stored.id for stored in found.matches] == ["p1"]
    finally:
        await store.close()


async def test_searches_beyond_the_threads_wait_and_all_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store_with_a_patient(tmp_path)
    real = store_module.run_search

    def long_on_the_loop(conn: sqlite3.Connection, *args: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            conn.execute(_counting(200_000_000)).fetchone()  # stopped at the inline budget
        return real(conn, *args)

    monkeypatch.setattr(store_module, "run_search", long_on_the_loop)
    try:
        results = await asyncio.gather(*(store.search(SearchQuery("Patient")) for _ in range(5)))
        assert all([s.id for s in r.matches] == ["p1"] for r in results)
        assert 1 <= len(store._idle_searchers) <= store_module._SEARCH_THREADS
    finally:
        await store.close()

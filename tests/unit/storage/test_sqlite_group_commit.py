"""Group commit of the embedded store: concurrent scopes share a commit, failures stay local."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fhir_server.storage.sqlite import turn as turn_module
from fhir_server.storage.sqlite import wal as wal_module
from fhir_server.storage.sqlite.memory import PYTHON_RESERVE_MB
from fhir_server.storage.sqlite.store import SqliteStore
from fhir_server.storage.sqlite.turn import StorageBusy
from tests.builders import patient


class Boom(Exception):
    pass


async def _write(store: SqliteStore, number: int, fail: bool) -> str:
    async with store.transaction() as tx:
        resource = {**patient(cccd=f"{number:012d}"), "id": f"p{number}"}
        await tx.create(resource, None)
        await asyncio.sleep(0)
        if fail:
            raise Boom
    return resource["id"]


def _stored_ids(tmp_path: Path) -> set[str]:
    """The ids of the stored resources, read on a connection of its own."""
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        return {row[0] for row in conn.execute("SELECT id FROM resources")}
    finally:
        conn.close()


async def test_concurrent_scopes_commit_and_a_failing_one_leaves_no_trace(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        results = await asyncio.gather(*(_write(store, n, fail=n == 7) for n in range(30)),
                                       return_exceptions=True)
    finally:
        await store.close()
    assert sum(isinstance(r, Boom) for r in results) == 1
    assert _stored_ids(tmp_path) == {f"p{n}" for n in range(30) if n != 7}


async def test_scope_returns_only_after_its_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        await asyncio.gather(*(_write(store, n, fail=False) for n in range(5)))
        other = sqlite3.connect(tmp_path / "db.sqlite3")
        count = other.execute("SELECT count(*) FROM resources").fetchone()[0]
        other.close()
    finally:
        await store.close()
    assert count == 5


@pytest.mark.parametrize("size", [1, 3])
async def test_sequential_scopes_each_commit(tmp_path: Path, size: int) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        for n in range(size):
            await _write(store, n, fail=False)
            other = sqlite3.connect(tmp_path / "db.sqlite3")
            assert other.execute("SELECT count(*) FROM resources").fetchone()[0] == n + 1
            other.close()
    finally:
        await store.close()


async def _scope(store: SqliteStore, number: int, durable: bool) -> None:
    async with store.transaction(durable=durable) as tx:
        await tx.create({**patient(cccd=f"{number:012d}"), "id": f"p{number}"}, None)
        await asyncio.sleep(0)


@pytest.mark.parametrize("order, commits", [
    ((False,), [(False, 1)]),                    # alone: no fsync at all
    ((True, False), [(True, 1)]),                # a relaxed scope may join a durable group
    ((False, True), [(True, 1)]),                # a durable one makes the group durable
    ((False, False, True, False), [(True, 1)]),
])
async def test_relaxed_scopes_skip_the_fsync_only_among_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: tuple[bool, ...],
    commits: list[tuple[bool, int]],
) -> None:
    """The writer runs synchronous=NORMAL; a group with a durable scope is synced after it."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    synced: list[str] = []
    sync = wal_module.sync_file

    def traced_sync(path: str) -> None:
        synced.append(path)
        sync(path)

    monkeypatch.setattr(wal_module, "sync_file", traced_sync)
    store = SqliteStore(tmp_path / "db.sqlite3", synchronous="FULL")
    await store.open()
    seen: list[tuple[bool, int]] = []
    commit = store._commit

    def spying(group: Any) -> None:
        assert store._writer is not None
        level = store._writer.execute("PRAGMA synchronous").fetchone()[0]  # 1 NORMAL, 2 FULL
        seen.append((group.durable, level))
        commit(group)

    store._commit = spying  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(_scope(store, n, durable) for n, durable in enumerate(order)))
    finally:
        await store.close()
    assert seen == commits
    assert synced == [f"{tmp_path / 'db.sqlite3'}-wal"] * sum(d for d, _ in commits)
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("SELECT count(*) FROM resources").fetchone()[0] == len(order)
    conn.close()


async def test_a_durable_write_returns_after_a_wal_sync_made_outside_the_lock_and_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """synchronous=FULL would fsync inside COMMIT, holding every writer of every process."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    store = SqliteStore(tmp_path / "db.sqlite3", synchronous="FULL")
    steps: list[str] = []

    def traced_sync(path: str) -> None:
        held = store._write_lock.locked() or store._turn._held
        steps.append(f"sync {Path(path).name} held={held} "
                     f"committed={_count_elsewhere(tmp_path)}")

    monkeypatch.setattr(wal_module, "sync_file", traced_sync)
    await store.open()
    try:
        await _write(store, 1, fail=False)
        steps.append("returned")
    finally:
        await store.close()
    assert steps == ["sync db.sqlite3-wal held=False committed=1", "returned"]


def _scalar(database: Path, sql: str, column: int = 0) -> int:
    """One number read on a connection of its own (another process's view)."""
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute(sql).fetchone()[column])
    finally:
        conn.close()


def _count_elsewhere(tmp_path: Path) -> int:
    return _scalar(tmp_path / "db.sqlite3", "SELECT count(*) FROM resources")


async def test_groups_committed_during_a_sync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    release = threading.Event()
    syncs: list[int] = []

    def slow_sync(path: str) -> None:
        syncs.append(_count_elsewhere(tmp_path))
        if len(syncs) == 1:
            assert release.wait(10)

    monkeypatch.setattr(wal_module, "sync_file", slow_sync)
    store = SqliteStore(tmp_path / "db.sqlite3", synchronous="FULL")
    await store.open()
    try:
        first = asyncio.ensure_future(_write(store, 0, fail=False))
        while not syncs:
            await asyncio.sleep(0.001)
        # The first group is committed and its sync is running: two more groups commit.
        later = [asyncio.ensure_future(_write(store, n, fail=False)) for n in (1, 2)]
        while _count_elsewhere(tmp_path) < 3:
            await asyncio.sleep(0.001)
        assert not first.done() and not any(task.done() for task in later)
        release.set()
        await asyncio.gather(first, *later)
    finally:
        await store.close()
    assert syncs == [1, 3]  # one sync for the first group, one for the two after it


async def test_a_failed_wal_sync_fails_the_writes_it_would_acknowledge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fhir_server.storage.sqlite import store as store_module
    from fhir_server.storage.sqlite.store import StorageNotSynced

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)

    def failing_sync(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal_module, "sync_file", failing_sync)
    store = SqliteStore(tmp_path / "db.sqlite3", synchronous="FULL")
    await store.open()
    try:
        with pytest.raises(StorageNotSynced) as failed:
            await _write(store, 1, fail=False)
    finally:
        await store.close()
    assert failed.value.status == 500
    assert "synced" in str(failed.value)
    assert any("syncing the WAL" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)


async def test_a_store_run_with_synchronous_normal_never_syncs_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    synced: list[str] = []
    monkeypatch.setattr(wal_module, "sync_file", synced.append)
    store = SqliteStore(tmp_path / "db.sqlite3", synchronous="NORMAL")
    await store.open()
    try:
        await asyncio.gather(*(_write(store, n, fail=False) for n in range(3)))
    finally:
        await store.close()
    assert synced == []


async def test_a_wal_deleted_by_the_last_closer_is_synced_as_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process closing last checkpoints the WAL into the database file and deletes it
    between our COMMIT and our sync (seen in a three-process load): the commits are in the
    database file, which is synced instead, and the write succeeds."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    synced: list[str] = []
    sync = wal_module.sync_file
    database = tmp_path / "db.sqlite3"

    def sync_after_the_wal_went(path: str) -> None:
        if path.endswith("-wal"):
            other = sqlite3.connect(database)  # the checkpoint and delete of a last closer
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            other.close()
            Path(path).unlink()
        synced.append(Path(path).name)
        sync(path)

    monkeypatch.setattr(wal_module, "sync_file", sync_after_the_wal_went)
    store = SqliteStore(database, synchronous="FULL")
    await store.open()
    try:
        assert await _write(store, 1, fail=False) == "p1"
    finally:
        monkeypatch.undo()
        await store.close()
    assert synced == ["db.sqlite3-wal", "db.sqlite3"]
    assert _count_elsewhere(tmp_path) == 1


async def test_finding_identifiers_set_wise_uses_the_token_index(tmp_path: Path) -> None:
    from fhir_server.storage.sqlite.writes import identifiers_sql

    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        assert store._writer is not None
        plan = " ".join(str(row[3]) for row in store._writer.execute(
            "EXPLAIN QUERY PLAN " + identifiers_sql(3), ["Patient", 1, "x"] * 3 + [7]))
    finally:
        await store.close()
    assert "search_token_value (param=? AND code=? AND system=?)" in plan


async def _pragma_on_both_connections(store: SqliteStore, pragma: str) -> set[object]:
    """The values of ``PRAGMA pragma`` on the reader and the writer of a freshly opened store."""
    await store.open()
    try:
        assert store._writer is not None
        return {conn.execute(f"PRAGMA {pragma}").fetchone()[0]
                for conn in (store.reader, store._writer)}
    finally:
        await store.close()


async def test_the_memory_setting_splits_into_the_connections_caches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3", memory_mb=PYTHON_RESERVE_MB + 256)
    assert await _pragma_on_both_connections(store, "cache_size") == {-128 * 1024, -32 * 1024}
    assert await _pragma_on_both_connections(store, "soft_heap_limit") == {256 * 1024 * 1024}


async def test_connections_zero_freed_bytes_only_where_it_costs_no_io(tmp_path: Path) -> None:
    """``secure_delete=FAST`` (2) on every connection, whatever the SQLite build's default
    (Debian's is ON, which zeroes every cell an index insert moves)."""
    store = SqliteStore(tmp_path / "db.sqlite3")
    assert await _pragma_on_both_connections(store, "secure_delete") == {2}


async def test_two_writers_on_one_file_take_turns_and_both_progress(tmp_path: Path) -> None:
    """Two stores on one file stand for two worker processes (each has its own ``flock``)."""
    first, second = (SqliteStore(tmp_path / "db.sqlite3") for _ in range(2))
    await first.open()
    await second.open()
    try:
        writes = [_write(store, n, fail=False)
                  for n in range(40) for store in ((first, second)[n % 2],)]
        await asyncio.gather(*writes)
    finally:
        await first.close()
        await second.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("SELECT count(*) FROM resources").fetchone()[0] == 40
    conn.close()


async def test_waiting_too_long_for_the_turn_is_busy_and_leaks_nothing(tmp_path: Path) -> None:

    holder = SqliteStore(tmp_path / "db.sqlite3")
    waiter = SqliteStore(tmp_path / "db.sqlite3", busy_timeout_s=0.2)
    await holder.open()
    await waiter.open()
    try:
        await holder._turn.acquire(1.0)
        with pytest.raises(StorageBusy):
            await _write(waiter, 1, fail=False)
        holder._turn.release()  # the abandoned waiting thread takes the turn and passes it on
        assert await _write(waiter, 2, fail=False) == "p2"
        assert await _write(holder, 3, fail=False) == "p3"
    finally:
        await holder.close()
        await waiter.close()


async def test_commits_leave_checkpoints_to_the_background_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)  # not during the writes
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    database = tmp_path / "db.sqlite3"
    try:
        assert store._writer is not None
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size_before = database.stat().st_size
        await asyncio.gather(*(_write(store, n, fail=False) for n in range(300)))
        assert database.stat().st_size == size_before  # everything is still in the WAL
        monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 0.001)
        assert store._checkpointer is not None
        store._checkpointer.cancel()
        store._checkpointer = asyncio.get_running_loop().create_task(store._checkpoints())
        for _ in range(500):  # wait (bounded) for the task to copy the pages back
            await asyncio.sleep(0.01)
            if database.stat().st_size > size_before:
                break
        assert database.stat().st_size > size_before
    finally:
        await store.close()


def test_stored_instants_are_fixed_width_and_sort_as_text() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from fhir_server.storage.versions import instant_text

    moments = [datetime(500, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
               datetime(2026, 11, 23, 15, 0, 0, 120000, tzinfo=timezone(timedelta(hours=7)))]
    texts = [instant_text(moment) for moment in moments]
    assert texts[0] == "0500-01-01T00:00:00.000000+00:00"
    assert texts[2] == "2026-11-23T08:00:00.120000+00:00"
    assert {len(text) for text in texts} == {32} and texts == sorted(texts)


async def test_the_turn_is_free_the_moment_the_commit_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may write as soon as SQLite has committed: the COMMIT runs on the
    committing task's own thread and releases the turn itself, with no thread to start and no
    interpreter lock to wait for in between."""
    import fcntl
    import os

    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    real_commit = turn_module.commit_passing_turn
    seen: list[tuple[bool, bool]] = []

    def commit_then_look(conn: Any, turn: Any) -> None:
        other = os.open(tmp_path / "db.sqlite3-writer", os.O_RDWR)
        try:
            real_commit(conn, turn)
            committed = not conn.in_transaction
            try:  # as another process would, before this call has even returned
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other, fcntl.LOCK_UN)
                free = True
            except BlockingIOError:
                free = False
        finally:
            os.close(other)
        seen.append((committed, free))

    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        monkeypatch.setattr(turn_module, "commit_passing_turn", commit_then_look)
        await asyncio.gather(*(_write(store, n, fail=False) for n in range(3)))
        monkeypatch.undo()
        await _write(store, 3, fail=False)  # the turn is taken again as usual
    finally:
        await store.close()
    assert seen and all(entry == (True, True) for entry in seen)
    assert _stored_ids(tmp_path) == {"p0", "p1", "p2", "p3"}


async def test_a_commit_that_fails_fails_its_group_and_passes_the_turn_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A COMMIT that raises: every scope of its group fails, nothing of it is stored, the turn
    is released and the next write goes through."""
    import sqlite3

    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    real_commit = turn_module.commit_passing_turn

    def refused(conn: Any, turn: Any) -> None:
        conn.execute("ROLLBACK")
        turn.release()
        raise sqlite3.OperationalError("disk I/O error")

    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        monkeypatch.setattr(turn_module, "commit_passing_turn", refused)
        results = await asyncio.gather(*(_write(store, n, fail=False) for n in range(3)),
                                       return_exceptions=True)
        monkeypatch.setattr(turn_module, "commit_passing_turn", real_commit)
        assert await _write(store, 9, fail=False) == "p9"
    finally:
        await store.close()
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert _stored_ids(tmp_path) == {"p9"}


async def test_a_scope_cancelled_while_its_group_syncs_leaves_the_others_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that reaches a scope waiting for the WAL sync: its write is committed,
    and the scopes sharing it succeed."""
    import threading

    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    release = threading.Event()

    def slow_sync(path: str) -> None:
        assert release.wait(10)

    monkeypatch.setattr(wal_module, "sync_file", slow_sync)
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        tasks = [asyncio.ensure_future(_write(store, n, fail=False)) for n in range(3)]
        while _count_elsewhere(tmp_path) < 3:
            await asyncio.sleep(0.001)
        tasks[0].cancel()
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await store.close()
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == ["p1", "p2"]
    assert _count_elsewhere(tmp_path) == 3


def _wal_frames(database: Path) -> int:
    """The frames in the WAL now (a PASSIVE checkpoint on a connection of its own)."""
    return _scalar(database, "PRAGMA wal_checkpoint(PASSIVE)", column=1)


async def test_a_wal_written_during_every_checkpoint_starts_again_from_its_beginning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a steady write load each PASSIVE checkpoint runs while a write is open, so the
    WAL is never wholly copied when a writer begins and SQLite never starts it over; the
    checkpoint step does, once it holds more than ``_RESTART_FRAMES``."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)  # steps run by hand
    monkeypatch.setattr(store_module, "_RESTART_FRAMES", 50)
    database = tmp_path / "db.sqlite3"
    store = SqliteStore(database)
    await store.open()
    checkpointer = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    checkpointer.execute("PRAGMA busy_timeout=0")
    number = 0
    try:
        for _ in range(30):
            async with store.transaction() as tx:  # a write open while the step starts
                for _ in range(20):
                    number += 1
                    await tx.create({**patient(cccd=f"{number:012d}"), "id": f"p{number}"}, None)
                step = asyncio.ensure_future(store._checkpoint_step(checkpointer))
                await asyncio.sleep(0.05)
            await step
        await _write(store, number + 1, fail=False)
        frames_after_one_write = _wal_frames(database)
    finally:
        checkpointer.close()
        await store.close()
    # The WAL holds the last write only (33 frames here); without the restarts, all 31 (460).
    assert frames_after_one_write < 100


async def _one_write_and_checkpoint_step(store: SqliteStore, database: Path) -> None:
    """Write once to the opened ``store``, run one checkpoint step, close the store."""
    checkpointer = sqlite3.connect(database, check_same_thread=False)
    try:
        await _write(store, 1, fail=False)
        await store._checkpoint_step(checkpointer)
    finally:
        checkpointer.close()
        await store.close()


async def test_the_checkpoint_step_leaves_a_small_wal_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    restarts: list[object] = []

    async def restart(conn: object) -> None:
        restarts.append(conn)

    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    monkeypatch.setattr(store, "_restart_wal", restart)
    await _one_write_and_checkpoint_step(store, tmp_path / "db.sqlite3")
    assert restarts == []


async def test_the_database_file_is_synced_outside_the_write_lock_before_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restart holds every writer: what the PASSIVE checkpoints copied is synced first."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    monkeypatch.setattr(store_module, "_RESTART_FRAMES", 1)
    steps: list[str] = []
    checkpoint, sync = wal_module.checkpoint, wal_module.sync_file
    store = SqliteStore(tmp_path / "db.sqlite3")

    def traced_checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
        steps.append(f"{mode} locked={store._write_lock.locked()}")
        return checkpoint(conn, mode)

    def traced_sync(path: str) -> None:
        if not path.endswith("-wal"):  # the WAL's own sync acknowledges the write
            steps.append(f"sync locked={store._write_lock.locked()}")
        sync(path)

    monkeypatch.setattr(wal_module, "checkpoint", traced_checkpoint)
    monkeypatch.setattr(wal_module, "sync_file", traced_sync)
    await store.open()
    await _one_write_and_checkpoint_step(store, tmp_path / "db.sqlite3")
    assert steps == ["PASSIVE locked=False", "sync locked=False", "PASSIVE locked=False",
                     "sync locked=False", "RESTART locked=True"]


@pytest.mark.parametrize(("copied", "passes"), [
    ((10, 60, 75), 2),  # the second pass copied 15 frames: few enough
    ((10, 60, 110, 160, 210, 260), 4),  # never few: at most _CATCH_UP_PASSES
])
async def test_passes_before_a_restart_go_on_until_one_copies_few_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copied: tuple[int, ...], passes: int
) -> None:
    """Writes go on while the database file is synced; PASSIVE passes copy them until one
    copies fewer than ``_CATCH_UP_FRAMES`` (the restart, under the lock, finds about as many
    left), then what they copied is synced, still outside the lock."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    monkeypatch.setattr(store_module, "_RESTART_FRAMES", 1)
    monkeypatch.setattr(store_module, "_CATCH_UP_FRAMES", 20)
    steps: list[str] = []
    answers = iter(copied)

    def scripted_checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
        steps.append(mode)
        return (0, 300, next(answers)) if mode == "PASSIVE" else (0, 0, 0)

    def traced_sync(path: str) -> None:
        if not path.endswith("-wal"):
            steps.append("sync")

    monkeypatch.setattr(wal_module, "checkpoint", scripted_checkpoint)
    monkeypatch.setattr(wal_module, "sync_file", traced_sync)
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.open()
    await _one_write_and_checkpoint_step(store, tmp_path / "db.sqlite3")
    assert steps == ["PASSIVE", "sync", *["PASSIVE"] * passes, "sync", "RESTART"]


def _checkpoint_modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Checkpoint steps run by hand only; the list gets the mode of every checkpoint run."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_CHECKPOINT_EVERY_S", 3600.0)
    modes: list[str] = []
    checkpoint = wal_module.checkpoint

    def traced_checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
        modes.append(mode)
        return checkpoint(conn, mode)

    monkeypatch.setattr(wal_module, "checkpoint", traced_checkpoint)
    return modes


async def test_one_process_at_a_time_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores on one file (two processes' worth of open files): while one holds the
    checkpoint claim, the other's step does nothing; once it is given back, the step runs."""
    modes = _checkpoint_modes(monkeypatch)
    database = tmp_path / "db.sqlite3"
    first, second = SqliteStore(database), SqliteStore(database)
    await first.open()
    await second.open()
    checkpointer = sqlite3.connect(database, check_same_thread=False)
    try:
        await _write(second, 1, fail=False)
        assert first._checkpoint_claim.try_acquire()
        await second._checkpoint_step(checkpointer)
        assert modes == []
        first._checkpoint_claim.release()
        await second._checkpoint_step(checkpointer)
        assert modes == ["PASSIVE"]
    finally:
        checkpointer.close()
        await first.close()
        await second.close()


async def test_opening_waits_for_another_workers_schema_work_past_the_busy_timeout(
    tmp_path: Path,
) -> None:
    """A worker building an index at open holds the turn and SQLite's write lock for as long
    as the build takes; a second worker opening meanwhile waits for it, not only for
    ``busy_timeout_s``."""
    first = SqliteStore(tmp_path / "db.sqlite3")
    await first.open()
    await first.close()
    fd = os.open(tmp_path / "db.sqlite3-writer", os.O_RDWR)
    building = sqlite3.connect(
        tmp_path / "db.sqlite3", isolation_level=None, check_same_thread=False
    )
    fcntl.flock(fd, fcntl.LOCK_EX)
    building.execute("BEGIN IMMEDIATE")

    finished = threading.Event()

    def finish_the_build() -> None:
        time.sleep(0.6)
        try:
            building.execute("COMMIT")
            finished.set()  # before the turn is passed on: the opener may run at once
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    second = SqliteStore(tmp_path / "db.sqlite3", busy_timeout_s=0.1)
    build = asyncio.ensure_future(asyncio.to_thread(finish_the_build))
    try:
        await second.open()
        # it opened once the build was over (the thread's end, not its future's: the loop
        # may not have run the future's completion yet)
        assert finished.is_set()
        await _write(second, 1, fail=False)
    finally:
        await build
        await second.close()
        building.close()
        os.close(fd)
    assert _stored_ids(tmp_path) == {"p1"}


async def test_opening_that_gives_up_waiting_leaves_nothing_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_server.storage.sqlite import store as store_module

    first = SqliteStore(tmp_path / "db.sqlite3")
    await first.open()
    await first.close()
    monkeypatch.setattr(store_module, "_OPEN_WAIT_S", 0.1)
    fd = os.open(tmp_path / "db.sqlite3-writer", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another worker's build that outlasts the wait
    try:
        second = SqliteStore(tmp_path / "db.sqlite3")
        with pytest.raises(StorageBusy):
            await second.open()
        assert second._writer is None and second._turn._fd is None
    finally:
        os.close(fd)


async def test_an_idle_wal_already_restarted_is_not_restarted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a RESTART checkpoint the next writer starts the WAL over; until one comes, the
    WAL keeps its frames, and the steps of an idle store leave it (and the write lock) alone.
    A write makes the next large WAL due again."""
    from fhir_server.storage.sqlite import store as store_module

    monkeypatch.setattr(store_module, "_RESTART_FRAMES", 1)
    modes = _checkpoint_modes(monkeypatch)
    database = tmp_path / "db.sqlite3"
    store = SqliteStore(database)
    await store.open()
    checkpointer = sqlite3.connect(database, check_same_thread=False)
    try:
        await _write(store, 1, fail=False)
        for _ in range(3):  # one restart, then two idle steps
            await store._checkpoint_step(checkpointer)
        assert modes.count("RESTART") == 1
        await _write(store, 2, fail=False)
        await store._checkpoint_step(checkpointer)
        assert modes.count("RESTART") == 2
    finally:
        checkpointer.close()
        await store.close()

"""The write turn (an ``flock``) is never left taken by a wait that was given up.

A worker's read-audit writer takes the same turn on a descriptor of its own, so a turn the
store's descriptor kept after a cancelled or timed-out wait would block it for good (it hung
the app's shutdown: the trail's last flush waited for the turn forever).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.storage.sqlite.turn import StorageBusy, WriterTurn


def _other_descriptor(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


async def _free_within(path: Path, seconds: float = 2.0) -> bool:
    """Whether a descriptor of its own can take the turn within ``seconds``."""
    fd = _other_descriptor(path)
    try:
        for _ in range(int(seconds / 0.02)):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        return False
    finally:
        os.close(fd)


@pytest.fixture
def contended(tmp_path: Path) -> Iterator[tuple[Path, int, WriterTurn]]:
    """A turn file held by another descriptor, and the store's turn on it (not yet waiting)."""
    path = tmp_path / "store.sqlite3-writer"
    holder = _other_descriptor(path)
    fcntl.flock(holder, fcntl.LOCK_EX)
    turn = WriterTurn(str(path))
    turn.open()
    yield path, holder, turn
    turn.close()
    os.close(holder)


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
async def test_a_wait_given_up_leaves_the_turn_to_others(
    contended: tuple[Path, int, WriterTurn], stop: str,
) -> None:
    path, holder, turn = contended
    if stop == "cancel":
        waiting = asyncio.ensure_future(turn.acquire(30.0))
        await asyncio.sleep(0.1)  # the thread now waits for the holder
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    else:
        with pytest.raises(StorageBusy):
            await turn.acquire(0.1)
    fcntl.flock(holder, fcntl.LOCK_UN)  # the holder passes the turn on
    await asyncio.sleep(0.1)  # the given-up thread gets it and must pass it on
    assert await _free_within(path)


async def test_a_wait_that_succeeds_holds_the_turn_until_released(
    contended: tuple[Path, int, WriterTurn],
) -> None:
    path, holder, turn = contended
    waiting = asyncio.ensure_future(turn.acquire(30.0))
    await asyncio.sleep(0.1)
    fcntl.flock(holder, fcntl.LOCK_UN)
    await waiting
    assert not await _free_within(path, 0.2)
    turn.release()
    assert await _free_within(path)


async def test_a_wait_after_a_given_up_one_holds_the_turn_it_gets(
    contended: tuple[Path, int, WriterTurn],
) -> None:
    """A second wait while the first one's thread still waits on the same descriptor: the
    descriptor's lock is one, so the second wait takes the first one over instead of waiting
    beside it (the given-up thread would otherwise release the turn the second one got)."""
    path, holder, turn = contended
    with pytest.raises(StorageBusy):
        await turn.acquire(0.1)  # its thread still waits for the holder
    waiting = asyncio.ensure_future(turn.acquire(30.0))
    await asyncio.sleep(0.1)
    fcntl.flock(holder, fcntl.LOCK_UN)
    await waiting
    await asyncio.sleep(0.1)  # time for any given-up thread to pass the turn on
    assert not await _free_within(path, 0.2)
    turn.release()
    assert await _free_within(path)


async def test_a_given_up_wait_that_passed_the_turn_on_is_not_taken_over(
    contended: tuple[Path, int, WriterTurn],
) -> None:
    path, holder, turn = contended
    with pytest.raises(StorageBusy):
        await turn.acquire(0.1)
    fcntl.flock(holder, fcntl.LOCK_UN)
    assert await _free_within(path)  # the given-up thread got the turn and passed it on
    fcntl.flock(holder, fcntl.LOCK_EX)
    waiting = asyncio.ensure_future(turn.acquire(30.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # a wait of its own, for the holder
    fcntl.flock(holder, fcntl.LOCK_UN)
    await waiting
    assert not await _free_within(path, 0.2)
    turn.release()

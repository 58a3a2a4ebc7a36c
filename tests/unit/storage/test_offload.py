"""A blocking SQLite call in a thread is never left running when its caller is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fhir_server.storage.sqlite.offload import run_to_end


async def _cancelled_while_running(cancels: int) -> bool:
    """Start a 0.2 s call, cancel its caller ``cancels`` times; return whether the call had
    finished when the cancellation reached the caller."""
    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    task = asyncio.ensure_future(run_to_end(slow))
    while not started.is_set():
        await asyncio.sleep(0.005)
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0.02)
    with pytest.raises(asyncio.CancelledError):
        await task
    return finished.is_set()


async def test_a_cancelled_caller_waits_for_the_thread_to_finish() -> None:
    # Only once the call is over may the caller touch (or close) the connection it used.
    assert await _cancelled_while_running(1)


async def test_cancelled_twice_it_still_waits() -> None:
    assert await _cancelled_while_running(2)


async def test_the_result_and_errors_come_back() -> None:
    assert await run_to_end(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await run_to_end(lambda: 1 / 0)

"""Running a blocking SQLite call in a thread without leaving it behind on cancellation.

``asyncio.to_thread`` returns as soon as the awaiting task is cancelled, but the thread goes on
running the call. If the caller then uses or closes the same connection (a rollback after a
cancelled commit, ``close()`` after a cancelled checkpoint), two threads are inside one SQLite
connection at once, which can crash the process (seen as a segmentation fault in
``libsqlite3`` when a loader process closed its store during a checkpoint).
:func:`run_to_end` waits for the thread to finish before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_to_end"]

T = TypeVar("T")


async def run_to_end(call: Callable[..., T], *args: object) -> T:
    """Run ``call(*args)`` in a thread; if cancelled, let it finish, then re-raise."""
    work = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait({work})
            except asyncio.CancelledError:
                continue  # cancelled again: the connection is still busy, keep waiting
        raise

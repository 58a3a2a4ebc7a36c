"""The write turn: which process of those sharing the store's file may write now.

``WriterTurn`` is an ``flock`` on ``<db>-writer`` that the processes hand over to each other
(``_TurnWait``: the thread blocked in ``flock`` for it); ``commit_passing_turn`` commits and
releases it at once. ``StorageBusy`` when the turn does not come in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time

from fhir_server.errors import FhirError

#: A process that released its turn this recently queues behind waiting processes.
_TURN_COURTESY_S = 0.005


class StorageBusy(FhirError):
    """503: the database stayed locked by other writers for longer than the busy timeout."""

    status = 503
    issue_code = "transient"
    default_message_id = "MSG_STORAGE_BUSY"


class _TurnWait:
    """A thread blocked in ``flock`` for the write turn, and what its waiter decided.

    Under ``guard``: ``taken`` when the thread got the turn for a waiter still waiting;
    ``given_up`` when the waiter stopped waiting; ``passed`` once a given-up turn has been
    released again.
    """

    def __init__(self, fd: int) -> None:
        self.guard = threading.Lock()
        self.given_up = False
        self.taken = False
        self.passed = False
        self.future = asyncio.ensure_future(asyncio.to_thread(self._wait, fd))

    def _wait(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with self.guard:
            if self.given_up:  # nobody waits for it any more: pass the turn on
                fcntl.flock(fd, fcntl.LOCK_UN)
                self.passed = True
            else:
                self.taken = True


class WriterTurn:
    """Whose turn it is to write, among the processes sharing the file: an ``flock``.

    Waiting for SQLite's own lock means polling (``BEGIN IMMEDIATE`` and a back-off sleep),
    and the process that just committed usually takes the lock again before a sleeping one
    wakes up. The ``flock`` hands over instead: a process that wants its turn while another
    writes blocks in a thread until the kernel wakes it on release, and a process that has
    just released its turn queues behind any waiter. ``timeout_s`` bounds the wait
    (``StorageBusy``). Without a file (``:memory:``) there is nothing to share.

    The checkpoint claim is another one, on its own file, taken only without waiting
    (:meth:`try_acquire`).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._held = False
        self._released_at = 0.0
        self._given_up: _TurnWait | None = None

    def open(self) -> None:
        if self.path is not None and self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def try_acquire(self) -> bool:
        """Take the turn if no other process holds it; whether this process holds it now."""
        if self._fd is None or self._held:
            return True
        if self._given_up is not None and not self._given_up.passed:
            return False  # a given-up wait's thread would pass on what this took
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        return True

    async def acquire(self, timeout_s: float) -> None:
        fd = self._fd
        if fd is None or self._held:
            return
        given_up = self._given_up
        if given_up is None and time.monotonic() - self._released_at > _TURN_COURTESY_S:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held = True
                return
            except BlockingIOError:
                pass
        with given_up.guard if given_up is not None else contextlib.nullcontext():
            if given_up is not None and not given_up.passed:
                # A wait given up earlier still waits on this descriptor: take it over. A
                # wait of its own (or a lock taken without waiting) would share the
                # descriptor's one lock with it, and the given-up thread would pass on the
                # turn this one got.
                given_up.given_up = False
                wait = given_up
            else:
                wait = _TurnWait(fd)
        self._given_up = None
        try:
            await asyncio.wait_for(asyncio.shield(wait.future), timeout_s)
        except BaseException as stopped:
            # Timed out or cancelled while the thread waits: it passes the turn on when it
            # gets it, or it already has it and it is passed on here. A turn nobody holds must
            # never stay taken: the audit writer waits for it on a descriptor of its own.
            with wait.guard:
                wait.given_up = True
                if wait.taken:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    wait.passed = True
                else:
                    self._given_up = wait
            if isinstance(stopped, TimeoutError):
                raise StorageBusy("The database is busy; try again later") from None
            raise
        self._held = True

    def release(self) -> None:
        if self._fd is not None and self._held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False
            self._released_at = time.monotonic()

    def released_since(self, moment: float) -> float:
        """When the turn was last released, if after ``moment``; else now (``monotonic``)."""
        return self._released_at if self._released_at >= moment else time.monotonic()



def commit_passing_turn(conn: sqlite3.Connection, turn: WriterTurn) -> None:
    """COMMIT (or roll back what failed to commit), then release the turn."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        turn.release()

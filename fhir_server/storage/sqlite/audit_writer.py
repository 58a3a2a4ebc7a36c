"""The writer of read AuditEvents: each batch in one transaction of its own, in a thread.

Every read leaves AuditEvents (a page of 50 Patients leaves 50), buffered by the audit trail
(``security.audit.AuditTrail``) and written here in batches. Written through the store's
write scope, a batch held the write turn of every process while its coroutine waited for
the event loop between steps (after taking the turn, between the insert and the commit):
under a page of 50 at 360 pages a second each worker's loop was busy, a batch of 500 events
held the turn for tens of milliseconds, the two workers' batches queued behind each other,
and the trail stayed full, so requests waited for it (docs/performance.md).

Here a batch is one thread's work on a connection of its own: take the turn (the same
``flock`` as the store's writers, on a file descriptor of its own, so the writers of this
process and of the others wait for it and it for them), ``BEGIN IMMEDIATE``, the rows in a
few statements, the merge of the waiting references when it is due, ``COMMIT``, give the
turn back. The event loop is not needed at any point, and SQLite runs without the GIL, so
the turn is held for the work alone. The rows are built beforehand (``audit_log.prepare``).

Commits are not synced (``synchronous=NORMAL``): as before, a batch survives the process
being killed and reaches the disk with the next durable write's WAL sync or checkpoint
(docs/security.md, "Cost").
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable

from fhir_server.storage.sqlite import audit_log
from fhir_server.storage.sqlite.offload import run_to_end

__all__ = ["AuditWriter"]

#: How long a batch's ``BEGIN IMMEDIATE`` waits for a writer outside the server (one that
#: does not take the turn) before the batch fails and stays buffered for the next attempt.
_BUSY_TIMEOUT_MS = 10_000


class AuditWriter:
    """Writes batches of prepared audit rows to the store file ``path``, one at a time.

    ``connect`` opens a connection of the store (its pragmas and memory budget); ``turn_path``
    is the store's write-turn file. :meth:`close` waits for a batch in flight.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], turn_path: str) -> None:
        self._connect = connect
        self._turn_path = turn_path
        self._conn: sqlite3.Connection | None = None
        self._turn: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def write(self, prepared: audit_log.Prepared) -> None:
        """Store the rows in a transaction of their own (in a thread); raise what failed
        (nothing is stored then)."""
        await run_to_end(self._write, prepared)

    def _write(self, prepared: audit_log.Prepared) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            conn, turn = self._open()
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                self._transaction(conn, prepared)
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, prepared: audit_log.Prepared) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if audit_log.insert(conn, prepared):
                audit_log.merge_recent_refs(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _open(self) -> tuple[sqlite3.Connection, int]:
        if self._conn is None:
            conn = self._connect()
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")  # no fsync in COMMIT (see above)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the store's checkpointer does it
            self._conn = conn
        if self._turn is None:
            self._turn = os.open(self._turn_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._conn, self._turn

    def close(self) -> None:
        """Close the connection and the turn file (after the batch in flight, if any)."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._turn is not None:
                os.close(self._turn)
                self._turn = None

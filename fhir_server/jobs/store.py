"""The job store: one SQLite file, ``jobs.sqlite3`` in the data directory, shared by the
worker processes of a server and by ``fhir-server`` commands on the same data directory.

Jobs live here rather than in the resource store: a job is not a FHIR resource (no search,
history or audit of its own), the store is the same whichever resource store the server
uses (SQLite or MongoDB), and the progress a running job records every few seconds does not
take the resource store's write turn from the pushes. Each statement is one short
transaction; a job is worked on by whoever holds its lease (``claim``), which a live worker
renews with every checkpoint.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from fhir_server.jobs.model import Job, JobState

__all__ = ["JobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    owner_key TEXT NOT NULL,
    request TEXT NOT NULL,
    checkpoint TEXT,
    result TEXT,
    error TEXT,
    progress TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    expires REAL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner_key, state);
"""
_COLUMNS = ("id, kind, state, owner, request, checkpoint, result, error, progress, created, "
            "updated, expires")
_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loaded(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _job(row: Sequence[Any]) -> Job:
    (id, kind, state, owner, request, checkpoint, result, error, progress, created, updated,
     expires) = row
    return Job(id, kind, JobState(state), orjson.loads(owner), orjson.loads(request),
               _loaded(checkpoint), _loaded(result), _loaded(error), progress, created, updated,
               expires)


class JobStore:
    """The jobs of a data directory (``path``: the SQLite file)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open the file (creating it and the table if needed)."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("job store is not open")
        return self._conn

    def create(self, kind: str, owner: dict[str, Any], owner_key: str,
               request: dict[str, Any]) -> Job:
        """Store a new queued job and return it."""
        now = time.time()
        job_id = uuid.uuid4().hex
        self.conn.execute(
            "INSERT INTO jobs (id, kind, state, owner, owner_key, request, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, kind, JobState.QUEUED.value, _json(owner), owner_key, _json(request),
             now, now))
        found = self.get(job_id)
        assert found is not None
        return found

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?",
                                (job_id,)).fetchone()
        return None if row is None else _job(row)

    def owner_of(self, job_id: str) -> str | None:
        """The owner key of a job, or None."""
        row = self.conn.execute("SELECT owner_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def active(self, owner_key: str, kind: str) -> int:
        """How many of the owner's jobs of ``kind`` are queued or running."""
        row = self.conn.execute(
            "SELECT count(*) FROM jobs WHERE owner_key = ? AND kind = ? AND state IN (?, ?)",
            (owner_key, kind, *_ACTIVE)).fetchone()
        return int(row[0])

    def claim(self, worker: str, kinds: Sequence[str], lease_s: float,
              dead: Callable[[str], bool]) -> Job | None:
        """Take the oldest job of ``kinds`` that is queued, or running under a lease that
        ran out or whose worker is ``dead``; None if there is none. Two workers never both
        get one job: the update names the lease it replaces."""
        now = time.time()
        marks = ", ".join("?" for _ in kinds)
        rows = self.conn.execute(
            f"SELECT id, state, coalesce(lease_owner, ''), lease_until FROM jobs "
            f"WHERE kind IN ({marks}) AND state IN (?, ?) ORDER BY created LIMIT 50",
            (*kinds, *_ACTIVE)).fetchall()
        for job_id, state, holder, until in rows:
            if state == JobState.RUNNING and until >= now and not dead(holder):
                continue
            taken = self.conn.execute(
                "UPDATE jobs SET state = ?, lease_owner = ?, lease_until = ?, updated = ? "
                "WHERE id = ? AND state = ? AND coalesce(lease_owner, '') = ?",
                (JobState.RUNNING.value, worker, now + lease_s, now, job_id, state, holder))
            if taken.rowcount == 1:
                return self.get(job_id)
        return None

    def renew(self, job_id: str, worker: str, lease_s: float, *, progress: str | None = None,
              checkpoint: dict[str, Any] | None = None) -> bool:
        """Extend the worker's lease (recording progress and a checkpoint); False when the
        job is no longer the worker's to run (cancelled, or taken over)."""
        now = time.time()
        sets = ["lease_until = ?", "updated = ?"]
        args: list[Any] = [now + lease_s, now]
        if progress is not None:
            sets.append("progress = ?")
            args.append(progress)
        if checkpoint is not None:
            sets.append("checkpoint = ?")
            args.append(_json(checkpoint))
        done = self.conn.execute(
            f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND lease_owner = ? AND state = ?",
            (*args, job_id, worker, JobState.RUNNING.value))
        return done.rowcount == 1

    def finish(self, job_id: str, worker: str, state: JobState, expires: float, *,
               result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> bool:
        """Record the end of the worker's job; False if it was not the worker's any more."""
        done = self.conn.execute(
            "UPDATE jobs SET state = ?, result = ?, error = ?, expires = ?, updated = ?, "
            "lease_owner = NULL, lease_until = 0 WHERE id = ? AND lease_owner = ? AND state = ?",
            (state.value, _json(result), _json(error), expires, time.time(), job_id, worker,
             JobState.RUNNING.value))
        return done.rowcount == 1

    def release(self, job_id: str, worker: str) -> None:
        """Give the lease up (the process is stopping): any worker may resume the job now."""
        self.conn.execute(
            "UPDATE jobs SET lease_until = 0, updated = ? WHERE id = ? AND lease_owner = ?",
            (time.time(), job_id, worker))

    def cancel(self, job_id: str) -> Job | None:
        """Mark a job cancelled (it expires at once); return it as it was, None if unknown
        or already cancelled."""
        before = self.get(job_id)
        if before is None or before.state is JobState.CANCELLED:
            return None
        now = time.time()
        self.conn.execute(
            "UPDATE jobs SET state = ?, expires = ?, updated = ? WHERE id = ?",
            (JobState.CANCELLED.value, now, now, job_id))
        return before

    def expired(self, now: float | None = None) -> list[Job]:
        """The finished jobs whose time is up."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE expires IS NOT NULL AND expires < ? "
            "AND state NOT IN (?, ?)", (now or time.time(), *_ACTIVE)).fetchall()
        return [_job(row) for row in rows]

    def delete(self, job_id: str) -> None:
        """Forget a job."""
        self.conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

"""Baseline: raw SQLite inserts (and primary-key reads) of the benchmark Patient, in-process.

The file is set up like the server's store (WAL, ``synchronous=FULL``), so one transaction per
insert pays the same fsync per commit that each FHIR create pays; the batched variant shows what
group commit would buy. Each loop runs for a fixed time, so every measurement is bounded.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from patients import patient_document

__all__ = ["SqliteFigures", "measure_batched_inserts", "measure_inserts", "measure_reads"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS resources (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, "
    "id TEXT NOT NULL, content BLOB NOT NULL, UNIQUE (type, id))"
)
_INSERT = "INSERT INTO resources (type, id, content) VALUES ('Patient', ?, ?)"
_SELECT = "SELECT content FROM resources WHERE type = 'Patient' AND id = ?"


@dataclass(frozen=True)
class SqliteFigures:
    """Operations per second and per-operation latency percentiles (ms) of one loop."""

    operations: int
    per_s: float
    p50_ms: float
    p99_ms: float


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


def _timed_loop(step: Callable[[int], int], duration_s: float) -> SqliteFigures:
    """Call ``step(i)`` (which returns operations done) until ``duration_s`` has passed."""
    latencies: list[float] = []
    done = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while (now := time.perf_counter()) < deadline:
        count = step(done)
        latencies.append((time.perf_counter() - now) * 1000 / count)
        done += count
    elapsed = time.perf_counter() - started
    latencies.sort()
    return SqliteFigures(
        done, done / elapsed, _percentile(latencies, 50), _percentile(latencies, 99)
    )


def _percentile(sorted_values: list[float], percent: int) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(percent / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def measure_inserts(path: Path, duration_s: float) -> SqliteFigures:
    """One ``BEGIN IMMEDIATE``/``COMMIT`` per inserted Patient, like one FHIR create."""
    conn = _connect(path)

    def insert_one(n: int) -> int:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT, (str(uuid.uuid4()), patient_document(n)))
        conn.execute("COMMIT")
        return 1

    try:
        return _timed_loop(insert_one, duration_s)
    finally:
        conn.close()


def measure_bundle_inserts(
    path: Path, bundles: list[bytes], duration_s: float
) -> SqliteFigures:
    """Each visit Bundle's entry resources as rows, one transaction per Bundle: the raw
    SQLite work of a push without any FHIR processing (the baseline of ``push``)."""
    import orjson

    documents = [[orjson.dumps(entry["resource"]) for entry in orjson.loads(bundle)["entry"]]
                 for bundle in bundles]
    conn = _connect(path)

    def insert_bundle(n: int) -> int:
        rows = [(str(uuid.uuid4()), document) for document in documents[n % len(documents)]]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
        return 1

    try:
        return _timed_loop(insert_bundle, duration_s)
    finally:
        conn.close()


def measure_batched_inserts(path: Path, duration_s: float, batch: int = 100) -> SqliteFigures:
    """``batch`` Patients per transaction; latency is per insert (the batch's time / batch)."""
    conn = _connect(path)

    def insert_batch(n: int) -> int:
        rows = [(str(uuid.uuid4()), patient_document(n + i)) for i in range(batch)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
        return batch

    try:
        return _timed_loop(insert_batch, duration_s)
    finally:
        conn.close()


def measure_reads(path: Path, duration_s: float) -> SqliteFigures:
    """Primary-key reads of random Patients already in ``path`` (autocommit, one per call)."""
    conn = _connect(path)
    ids = [row[0] for row in conn.execute("SELECT id FROM resources LIMIT 10000")]
    if not ids:
        conn.close()
        raise RuntimeError("no Patients to read; run an insert loop first")

    def read_one(n: int) -> int:
        conn.execute(_SELECT, (ids[(n * 7919) % len(ids)],)).fetchone()
        return 1

    try:
        return _timed_loop(read_one, duration_s)
    finally:
        conn.close()

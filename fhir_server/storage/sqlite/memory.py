"""What one worker's embedded store may hold in memory: one number split among its connections.

A worker opens a writer, a reader, a checkpointing connection and up to ``_SEARCH_THREADS``
search connections, each with a page cache of its own that grows as pages are read: with a
fixed cache per connection, a worker on a store of 1,000,000 resources grew past 900 MB after a
few thousand searches. ``budget(memory_mb)`` turns the worker's bound into per-connection
caches (half the SQLite share for the writer, whose random index inserts gain most from hot
pages; an eighth for each other connection) and SQLite's soft heap limit over all of them, so
the sum holds even if the split is wrong: past the limit, SQLite reuses cached pages instead
of allocating new ones. Memory maps are off: mapped pages count in the worker's resident size
once per connection, outside the heap limit (docs/performance.md measures the cost).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["PYTHON_RESERVE_MB", "MemoryBudget", "budget", "limit_heap"]

#: A worker's own memory outside SQLite (the interpreter, models, profiles, terminology,
#: caches of parsed queries and decisions), measured after a long mixed load.
PYTHON_RESERVE_MB = 192
#: SQLite never gets less than this, whatever the bound.
_LEAST_SQLITE_MB = 32


@dataclass(frozen=True)
class MemoryBudget:
    """The split of a worker's memory bound among SQLite's connections (MiB)."""

    sqlite_mb: int
    writer_cache_mb: int
    reader_cache_mb: int
    mmap_mb: int = 0


def budget(memory_mb: int) -> MemoryBudget:
    """Return the split of ``memory_mb`` (the whole worker's bound)."""
    sqlite_mb = max(_LEAST_SQLITE_MB, int(memory_mb) - PYTHON_RESERVE_MB)
    return MemoryBudget(sqlite_mb, max(1, sqlite_mb // 2), max(1, sqlite_mb // 8))


def limit_heap(conn: sqlite3.Connection, memory: MemoryBudget) -> None:
    """Set SQLite's soft heap limit (process-wide: every connection of the process)."""
    conn.execute(f"PRAGMA soft_heap_limit={memory.sqlite_mb * 1024 * 1024}")

"""What the SQLite file holds, read without writing to it (``fhir-server status``).

Opens the file read-only (a running server may be writing: the reading sees its last commit)
and reports sizes, counts per type, the schema version and the time of the last checkpoint
(the modification time of the ``-checkpoint`` claim file, which the checkpointing worker
touches after each checkpoint; SQLite itself keeps no such time).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SqliteStatus", "sqlite_status"]


@dataclass(frozen=True)
class SqliteStatus:
    """Figures of one SQLite store file."""

    path: str
    database_bytes: int
    wal_bytes: int
    schema_version: str | None
    last_checkpoint: float | None
    current: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    audit_events: int = 0


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def sqlite_status(path: Path) -> SqliteStatus:
    """The figures of the store file ``path``; raises ``FileNotFoundError`` without one."""
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    claim = Path(f"{path}-checkpoint")
    uri = f"file:{path.resolve().as_posix()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as conn:
        rows = conn.execute(
            "SELECT type, sum(deleted = 0), sum(deleted) FROM resources GROUP BY type "
            "ORDER BY count(*) DESC").fetchall()
        meta = conn.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
        audit = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    return SqliteStatus(
        path=str(path), database_bytes=_size(path), wal_bytes=_size(Path(f"{path}-wal")),
        schema_version=meta[0] if meta else None,
        last_checkpoint=claim.stat().st_mtime if claim.exists() else None,
        current={kind: int(live) for kind, live, _ in rows if live},
        deleted={kind: int(gone) for kind, _, gone in rows if gone},
        audit_events=int(audit))

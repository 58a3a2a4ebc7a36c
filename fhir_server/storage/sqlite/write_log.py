"""The write order of the embedded store (``port.WriteLog``): ``versions.seq`` numbers every
version in commit order (one writer at a time), and ``versions`` keeps them all, so what a
resource was at any position is one indexed look-up (``UNIQUE (rid, version)``)."""

from __future__ import annotations

import sqlite3

from fhir_server.storage.port import Change, StoredResource
from fhir_server.storage.sqlite.bodies import json_bytes

__all__ = ["changes_after", "version_at", "write_position"]

_VERSION_AT_SQL = (
    "SELECT v.version, v.last_updated, v.content, v.method FROM resources r "
    "JOIN versions v ON v.rid = r.rid WHERE r.type = ? AND r.id = ? AND v.seq <= ? "
    "ORDER BY v.version DESC LIMIT 1"
)


def write_position(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """The newest version's ``seq`` and ``last_updated`` ((0, None) when there is none)."""
    row = conn.execute(
        "SELECT seq, last_updated FROM versions ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, None) if row is None else (int(row[0]), str(row[1]))


def changes_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[Change]:
    """Up to ``limit`` versions written after ``seq``, oldest first (the primary key)."""
    rows = conn.execute(
        "SELECT seq, rid, type, id FROM versions WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit))
    return [Change(int(s), int(rid), str(kind), str(id)) for s, rid, kind, id in rows]


def version_at(conn: sqlite3.Connection, resource_type: str, id: str,
               seq: int) -> StoredResource | None:
    """The version current at ``seq`` (versions of one resource are numbered in write
    order), or None if the resource had none yet."""
    row = conn.execute(_VERSION_AT_SQL, (resource_type, id, seq)).fetchone()
    if row is None:
        return None
    version, last_updated, content, method = row
    return StoredResource(resource_type, id, int(version), str(last_updated),
                          json_bytes(content), str(method), content is None)

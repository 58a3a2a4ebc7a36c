"""SQLite schema of the embedded store: current resources, every version, and the pragmas.

``resources`` holds one row per (type, id) with its current version; ``versions`` holds every
version (the content of deletions is NULL) in write order (``seq``), which is also the order of
history. Search index tables (``search_tables.SCHEMA_SQL``) hang off the integer ``rid``.
"""

from __future__ import annotations

import sqlite3

__all__ = ["CORE_SCHEMA_SQL", "SCHEMA_VERSION", "NewerSchema", "configure_connection",
           "record_schema_version"]

#: The layout this code writes, kept in ``store_meta`` as ``schema_version``. A change that an
#: older server could not read bumps it (with the step that brings older files up to it); a
#: server refuses a file of a newer version instead of damaging it (docs/operations.md,
#: "Upgrades"). Version 2: resource bodies may be zstd frames (``bodies``); a file of
#: version 1 is marked 2 when opened (its JSON bodies stay readable, ``fhir-server compact``
#: compresses them), so that a server knowing only version 1 refuses it from then on.
SCHEMA_VERSION = 2

CORE_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS resources (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method TEXT NOT NULL,
    content BLOB,
    UNIQUE (rid, version)
);
CREATE INDEX IF NOT EXISTS resources_type_rid ON resources (type, rid);
CREATE INDEX IF NOT EXISTS versions_type_seq ON versions (type, seq);
CREATE INDEX IF NOT EXISTS versions_last_updated ON versions (last_updated);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class NewerSchema(RuntimeError):
    """The file was written by a newer server, with a layout this one does not know."""


def record_schema_version(conn: sqlite3.Connection) -> int:
    """Inside the schema transaction: note :data:`SCHEMA_VERSION` in a new file, or check the
    file's and bring an older one up to it; return the version the file had. Raises
    :class:`NewerSchema` for a file of a newer version."""
    conn.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))
    found = int(conn.execute(
        "SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise NewerSchema(f"the store has schema version {found}; this server knows up to "
                          f"{SCHEMA_VERSION} (upgrade the server, do not downgrade it)")
    if found < SCHEMA_VERSION:  # 1 -> 2: nothing to rewrite (the schema adds its table)
        conn.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION),))
    return found


def configure_connection(
    conn: sqlite3.Connection, synchronous: str, cache_mb: int = 64, mmap_mb: int = 256
) -> None:
    """Apply the pragmas every connection of the store uses.

    WAL lets readers run beside the one writer; ``synchronous=FULL`` makes each commit durable
    across power loss (NORMAL would only survive a process crash). The busy timeout is kept
    short because the store retries ``BEGIN IMMEDIATE`` itself without blocking the event loop.
    ``secure_delete=FAST``: the Debian build of SQLite defaults to ON, which zeroes every byte
    a B-tree frees, also when cells move between pages as an index grows; FAST zeroes freed
    content only where that costs no extra I/O (about 5 % of the index inserts of a visit
    Bundle under the write lock; docs/performance.md). The store never deletes resource
    content (a FHIR delete is a new version; history keeps the old ones), so what FAST may
    leave in free space is index rows and cells that moved.
    """
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=50")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA cache_size={-1024 * max(1, int(cache_mb))}")
    conn.execute(f"PRAGMA mmap_size={max(0, int(mmap_mb)) * 1024 * 1024}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA secure_delete=FAST")

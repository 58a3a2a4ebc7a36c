"""The WAL's file work outside SQLite's own: syncing it (and the database file) to disk, and
running one ``wal_checkpoint``. The store's checkpoint task and WAL syncer call these.
"""

from __future__ import annotations

import os
import sqlite3


def sync_file(path: str) -> None:
    """fsync a file (the WAL, or the database whose pages checkpoints copied) through a fd of
    its own."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_commits(database: str) -> None:
    """fsync the WAL, which holds the frames of the commits made so far.

    The last connection to close (another process's, between its transactions) checkpoints
    the whole WAL into the database file, syncs that file and deletes the WAL: the commits
    are then in the synced database file, which is synced again here for certainty.
    """
    try:
        sync_file(f"{database}-wal")
    except FileNotFoundError:
        sync_file(database)



def checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
    """Run ``PRAGMA wal_checkpoint(mode)``: (busy, frames in the WAL, frames copied)."""
    row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return (int(row[0]), int(row[1]), int(row[2]))

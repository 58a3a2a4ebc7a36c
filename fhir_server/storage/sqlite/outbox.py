"""The outbox of the embedded store: two tables in the same SQLite file as the resources.

``subscription_state`` holds one row per Subscription (its record, owner, event counter and
delivery state); ``subscription_events`` the events, keyed by (subscription, number). The
write path fills both inside the write's own transaction (``save``, ``append``); the
delivery worker claims, reads and settles them in small transactions of its own
(``SqliteOutbox``). Partial indexes keep the worker's polling cheap with many idle
subscriptions: only rows with something undelivered, or a heartbeat, are in them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fhir_server.storage.outbox import (
    Backlog,
    NotificationEvent,
    SubscriptionRecord,
    SubscriptionState,
)

if TYPE_CHECKING:
    from fhir_server.storage.sqlite.store import SqliteStore

__all__ = ["SqliteOutbox", "append", "changed_since", "create_schema", "save"]

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS subscription_state (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    content BLOB NOT NULL,
    owner BLOB NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    failing_since REAL,
    handshake INTEGER NOT NULL DEFAULT 0,
    heartbeat_s INTEGER,
    last_sent REAL NOT NULL DEFAULT 0,
    error TEXT,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS subscription_state_changed ON subscription_state (changed);
CREATE INDEX IF NOT EXISTS subscription_state_pending ON subscription_state (next_attempt)
    WHERE delivered < events OR handshake = 1;
CREATE INDEX IF NOT EXISTS subscription_state_heartbeat
    ON subscription_state (last_sent + heartbeat_s) WHERE heartbeat_s IS NOT NULL;
CREATE TABLE IF NOT EXISTS subscription_events (
    subscription TEXT NOT NULL,
    number INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    created REAL NOT NULL,
    focus_type TEXT NOT NULL,
    focus_id TEXT NOT NULL,
    focus_version INTEGER NOT NULL,
    change TEXT NOT NULL,
    topic TEXT,
    PRIMARY KEY (subscription, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscription_events_created ON subscription_events (created);
"""

_STATE_COLUMNS = ("id", "status", "channel", "content", "owner", "events", "delivered",
                  "attempts", "next_attempt", "failing_since", "handshake", "heartbeat_s",
                  "last_sent", "error", "changed", "deleted")
_SETTLED = frozenset({"delivered", "attempts", "next_attempt", "failing_since", "handshake",
                      "last_sent", "error"})
_ACTIVE = "status IN ('requested', 'active') AND deleted = 0"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the outbox tables (inside the caller's transaction)."""
    for statement in SCHEMA_SQL.split(";"):
        if statement.strip():
            conn.execute(statement)


def _next_changed(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(changed) FROM subscription_state").fetchone()
    return int(row[0] or 0) + 1


def save(conn: sqlite3.Connection, record: SubscriptionRecord) -> None:
    """Insert or update the subscription's state; counters stay, a handshake resets the
    retry state."""
    changed = _next_changed(conn)
    retry = ", attempts = 0, next_attempt = 0, failing_since = NULL, error = NULL" \
        if record.handshake else ""
    owner_sql = ", owner = excluded.owner" if record.owner is not None else ""
    conn.execute(
        "INSERT INTO subscription_state (id, status, channel, content, owner, handshake, "
        "heartbeat_s, changed, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, channel = excluded.channel, "
        "content = excluded.content, handshake = max(handshake, excluded.handshake), "
        f"heartbeat_s = excluded.heartbeat_s, changed = excluded.changed, "
        f"deleted = excluded.deleted{owner_sql}{retry}",
        (record.id, record.status, record.channel, record.content, record.owner or b"{}",
         int(record.handshake), record.heartbeat_s, changed, int(record.deleted)))


def append(conn: sqlite3.Connection, events: Sequence[NotificationEvent]) -> None:
    """Append events, each numbered after its subscription's last (no gaps)."""
    created = time.time()
    for event in events:
        row = conn.execute(
            "UPDATE subscription_state SET events = events + 1 WHERE id = ? AND deleted = 0 "
            "RETURNING events", (event.subscription,)).fetchone()
        if row is None:
            continue
        conn.execute(
            "INSERT INTO subscription_events (subscription, number, timestamp, created, "
            "focus_type, focus_id, focus_version, change, topic) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event.subscription, row[0], event.timestamp, created, event.focus_type,
             event.focus_id, event.focus_version, event.change, event.topic))


def changed_since(conn: sqlite3.Connection, seq: int) -> tuple[list[SubscriptionState], int]:
    """The subscriptions whose record changed after ``seq``, and the newest ``changed``."""
    rows = conn.execute(
        f"SELECT {', '.join(_STATE_COLUMNS)} FROM subscription_state WHERE changed > ? "
        "ORDER BY changed", (seq,)).fetchall()
    states = [_state(row) for row in rows]
    return states, (states[-1].changed if states else seq)


def _state(row: Sequence[Any]) -> SubscriptionState:
    values = dict(zip(_STATE_COLUMNS, row, strict=True))
    values["handshake"] = bool(values["handshake"])
    values["deleted"] = bool(values["deleted"])
    return SubscriptionState(**values)


def _event(row: Sequence[Any]) -> NotificationEvent:
    subscription, number, timestamp, focus_type, focus_id, version, change, topic = row
    return NotificationEvent(subscription, timestamp, focus_type, focus_id, version, change,
                             topic, number)


class SqliteOutbox:
    """``Outbox`` over a ``SqliteStore``: reads on its reader connection, writes in small
    relaxed transactions (``durable=False``: a delivery recorded twice after a crash is
    sent again, never lost)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def changed_since(self, seq: int) -> tuple[list[SubscriptionState], int]:
        return changed_since(self._store.reader, seq)

    async def state(self, id: str) -> SubscriptionState | None:
        row = self._store.reader.execute(
            f"SELECT {', '.join(_STATE_COLUMNS)} FROM subscription_state WHERE id = ?",
            (id,)).fetchone()
        return None if row is None else _state(row)

    async def due(self, now: float, limit: int) -> list[str]:
        reader = self._store.reader
        pending = reader.execute(
            f"SELECT id FROM subscription_state WHERE (delivered < events OR handshake = 1) "
            f"AND next_attempt <= ? AND lease_until <= ? AND {_ACTIVE} LIMIT ?",
            (now, now, limit)).fetchall()
        beating = reader.execute(
            "SELECT id FROM subscription_state WHERE heartbeat_s IS NOT NULL "
            "AND last_sent + heartbeat_s <= ? AND next_attempt <= ? AND lease_until <= ? "
            "AND status = 'active' AND deleted = 0 LIMIT ?",
            (now, now, now, limit)).fetchall()
        return list(dict.fromkeys(str(row[0]) for row in [*pending, *beating]))

    async def claim(self, id: str, worker: str, until: float, now: float) -> bool:
        async with self._store.transaction(durable=False) as tx:
            row = tx.conn.execute(
                "UPDATE subscription_state SET lease_owner = ?, lease_until = ? WHERE id = ? "
                "AND (lease_until <= ? OR lease_owner = ?) RETURNING id",
                (worker, until, id, now, worker)).fetchone()
        return row is not None

    async def claim_many(self, ids: Sequence[str], worker: str, until: float,
                         now: float) -> list[str]:
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        async with self._store.transaction(durable=False) as tx:
            rows = tx.conn.execute(
                f"UPDATE subscription_state SET lease_owner = ?, lease_until = ? WHERE id IN "
                f"({marks}) AND (lease_until <= ? OR lease_owner = ?) RETURNING id",
                (worker, until, *ids, now, worker)).fetchall()
        claimed = {str(row[0]) for row in rows}
        return [id for id in ids if id in claimed]

    async def settle(self, id: str, worker: str, changes: Mapping[str, Any]) -> bool:
        names = [name for name in changes if name in _SETTLED]
        sets = "".join(f"{name} = ?, " for name in names)
        async with self._store.transaction(durable=False) as tx:
            row = tx.conn.execute(
                f"UPDATE subscription_state SET {sets}lease_owner = NULL, lease_until = 0 "
                "WHERE id = ? AND lease_owner = ? RETURNING id",
                (*(changes[name] for name in names), id, worker)).fetchone()
        return row is not None

    async def events(self, id: str, first: int, last: int | None,
                     limit: int) -> list[NotificationEvent]:
        rows = self._store.reader.execute(
            "SELECT subscription, number, timestamp, focus_type, focus_id, focus_version, "
            "change, topic FROM subscription_events WHERE subscription = ? AND number >= ? "
            "AND number <= ? ORDER BY number LIMIT ?",
            (id, first, last if last is not None else 2**62, limit)).fetchall()
        return [_event(row) for row in rows]

    async def purge(self, before: float) -> int:
        async with self._store.transaction(durable=False) as tx:
            cursor = tx.conn.execute("DELETE FROM subscription_events WHERE created < ?",
                                     (before,))
            return int(cursor.rowcount)

    async def backlog(self) -> Backlog:
        row = self._store.reader.execute(
            f"SELECT COALESCE(SUM(events - delivered), 0), COALESCE(SUM(delivered < events), 0),"
            f" COALESCE(SUM(attempts > 0), 0) FROM subscription_state WHERE {_ACTIVE}").fetchone()
        return Backlog(int(row[0]), int(row[1]), int(row[2]))

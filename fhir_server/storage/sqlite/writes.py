"""Writes of the embedded store, inside one SQLite write transaction.

Each write stamps ``meta.versionId`` and ``meta.lastUpdated`` into the resource, stores its
JSON as a new row of ``versions``, moves the ``resources`` row to it, and replaces the
resource's search index rows, all in the caller's transaction.

The rows of a scope's creates and updates are kept back and written together
(``SqliteTransaction.flush``): one ``executemany`` per table for the whole scope (a visit
Bundle: three statements for its eleven resources and versions, instead of twenty-two), at
the scope's end or before anything reads what they would change. New resources get their
``rid`` here (the greatest one plus one, as SQLite would give it), so that their index rows
can be built before the resources row is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from fhir_server import decimals
from fhir_server.errors import Conflict, VersionConflict
from fhir_server.search.model import (
    Clause,
    ParamType,
    SearchQuery,
    TokenValue,
)
from fhir_server.storage.outbox import NotificationEvent, SubscriptionRecord, SubscriptionState
from fhir_server.storage.port import StoredResource, WriteResult
from fhir_server.storage.sqlite import audit_log, bodies, outbox
from fhir_server.storage.sqlite.offload import run_to_end
from fhir_server.storage.sqlite.search_sql import find_ids
from fhir_server.storage.sqlite.search_tables import param_key, system_key
from fhir_server.storage.versions import content_equal, now_instant

if TYPE_CHECKING:
    from fhir_server.storage.sqlite.store import SqliteStore


def _identifier_key(query: SearchQuery) -> tuple[str, int, str] | None:
    """``(type, system key, value)`` of a plain ``identifier=system|value`` query seen by
    everyone (a Bundle's conditional criteria), else None."""
    if query.visibility is not None or query.compartment is not None or len(query.clauses) != 1:
        return None
    clause = query.clauses[0]
    if (not isinstance(clause, Clause) or clause.code != "identifier" or clause.modifier
            or clause.type is not ParamType.TOKEN or len(clause.values) != 1
            or query.resource_type is None):
        return None
    value = clause.values[0]
    if not isinstance(value, TokenValue) or not value.system or not value.code:
        return None
    return query.resource_type, system_key(value.system), value.code

__all__ = ["SqliteTransaction", "identifiers_sql", "scan"]

_CURRENT_SQL = (
    "SELECT r.rid, r.version, r.last_updated, r.deleted, v.content, v.method FROM resources r "
    "JOIN versions v ON v.rid = r.rid AND v.version = r.version WHERE r.type = ? AND r.id = ?"
)


def _stamp(resource: dict[str, Any], version: int, last_updated: str) -> bytes:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    resource["meta"] = meta
    return decimals.dumps(resource)


def identifiers_sql(count: int) -> str:
    """The statement finding ``count`` (type, system key, value) identifiers at once.

    CROSS JOIN keeps this order: each wanted value, then its index rows by (param, code,
    system), then the resource; never a scan of all identifier rows.
    """
    values = ", ".join("(?, ?, ?)" for _ in range(count))
    return (
        "SELECT r.type, t.system, t.code, r.id FROM (SELECT column1 AS type, "
        f"column2 AS system, column3 AS code FROM (VALUES {values})) w "
        "CROSS JOIN search_token t ON t.param = ? AND t.code = w.code AND t.system = w.system "
        "CROSS JOIN resources r ON r.rid = t.rid WHERE r.type = w.type AND r.deleted = 0"
    )


class SqliteTransaction:
    """``StoreTransaction`` over the writer connection of a ``SqliteStore``."""

    def __init__(self, conn: sqlite3.Connection, store: SqliteStore) -> None:
        self.conn = conn
        self.store = store
        #: Index rows kept back: of new resources, and of updated ones (``_replaced``: the
        #: rids whose old rows go first).
        self._fresh: list[tuple[int, Any]] = []
        self._replaced: list[int] = []
        #: Rows kept back: ``resources`` rows of new resources, ``resources`` rows moved to a
        #: new version, and ``versions`` rows, in the order written (their ``seq`` order).
        self._created: list[tuple[int, str, str, int, str]] = []
        self._moved: list[tuple[int, str, int]] = []
        self._versions: list[tuple[int, str, str, int, str, str, bytes]] = []
        #: The (type, id) of every resource with rows kept back.
        self._pending: set[tuple[str, str]] = set()
        #: The rid the next new resource gets (read once per scope, on its first create).
        self._next_rid: int | None = None

    def flush(self) -> None:
        """Write the rows kept back for this scope's writes: resources, versions, index rows.

        A write's rows wait here so that a Bundle's go in with one ``executemany`` per table
        (the index rows: ``insert_fresh``, in statements of many rows); anything that reads
        what they change (the resource by its type and id, the index tables) flushes them
        first, and the store flushes at the end of the scope, before it is released.
        """
        conn = self.conn
        if self._pending:
            self._pending = set()
            if self._created:
                conn.executemany(
                    "INSERT INTO resources (rid, type, id, version, last_updated, deleted) "
                    "VALUES (?, ?, ?, ?, ?, 0)", self._created)
                self._created = []
            if self._moved:
                conn.executemany(
                    "UPDATE resources SET version = ?, last_updated = ?, deleted = 0 "
                    "WHERE rid = ?", self._moved)
                self._moved = []
            conn.executemany(
                "INSERT INTO versions (rid, type, id, version, last_updated, method, content) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", self._versions)
            self._versions = []
        if self._replaced:
            replaced, self._replaced = self._replaced, []
            for rid in replaced:
                self.store.index_tables.delete_index(conn, rid)
        if self._fresh:
            fresh, self._fresh = self._fresh, []
            self.store.index_tables.insert_fresh(conn, fresh, self.store.unions)

    def _flush_for(self, resource_type: str, id: str) -> None:
        """Flush if rows of ``resource_type/id`` are kept back (a read of it would miss them)."""
        if (resource_type, id) in self._pending:
            self.flush()

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version (``deleted=True`` for a deleted one) or None."""
        self._flush_for(resource_type, id)
        row = self.conn.execute(_CURRENT_SQL, (resource_type, id)).fetchone()
        if row is None:
            return None
        _rid, version, last_updated, deleted, content, method = row
        return StoredResource(resource_type, id, version, last_updated,
                              bodies.json_bytes(content), method, bool(deleted))

    async def find(self, query: SearchQuery) -> list[str]:
        """Return ids of current resources matching the query (full search semantics)."""
        self.flush()
        return sorted(find_ids(self.conn, query, self.store.unions))

    async def find_many(self, queries: Sequence[SearchQuery]) -> list[list[str]]:
        """``find`` for many queries at once: ``identifier=system|value`` criteria (what a
        hospital push uses for every entry) in one statement per 200, others one by one."""
        self.flush()
        results: list[list[str] | None] = [None] * len(queries)
        wanted: dict[tuple[str, int, str], list[int]] = {}
        for position, query in enumerate(queries):
            key = _identifier_key(query)
            if key is None:
                results[position] = sorted(find_ids(self.conn, query, self.store.unions))
            else:
                wanted.setdefault(key, []).append(position)
        keys = list(wanted)
        found: dict[tuple[str, int, str], list[str]] = {key: [] for key in keys}
        for start in range(0, len(keys), 200):
            chunk = keys[start:start + 200]
            rows = self.conn.execute(
                identifiers_sql(len(chunk)),
                [*(part for key in chunk for part in key), param_key("identifier")],
            )
            for rtype, system, code, id in rows:
                found[(rtype, system, code)].append(id)
        for key, positions in wanted.items():
            for position in positions:
                results[position] = sorted(set(found[key]))
        return [r if r is not None else [] for r in results]

    async def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (type, id) pairs are current resources, in one query per 400 keys
        (the keys drive: a probe of the ``(type, id)`` key each; SQLite answers a row value
        ``IN (VALUES ...)`` with a scan of every resource, 0.6 s on a 1M store)."""
        if self._pending:
            self.flush()
        found: set[tuple[str, str]] = set()
        audit = [id for kind, id in keys if kind == audit_log.AUDIT_TYPE]
        if audit:
            found.update((audit_log.AUDIT_TYPE, id) for id in audit_log.exists(self.conn, audit))
            keys = [key for key in keys if key[0] != audit_log.AUDIT_TYPE]
        for start in range(0, len(keys), 400):
            chunk = keys[start:start + 400]
            values = ",".join("(?, ?)" for _ in chunk)
            args = [part for key in chunk for part in key]
            rows = self.conn.execute(
                f"SELECT r.type, r.id FROM (VALUES {values}) AS v CROSS JOIN resources r "
                "ON r.type = v.column1 AND r.id = v.column2 WHERE r.deleted = 0", args
            ).fetchall()
            found.update((t, i) for t, i in rows)
        return found

    async def referrers(
        self, resource_type: str, id: str, limit: int = 1
    ) -> list[tuple[str, str]]:
        """Other current resources whose reference rows name ``resource_type/id``."""
        self.flush()
        rows = self.conn.execute(
            "SELECT DISTINCT s.type, s.id FROM search_reference ref JOIN resources s "
            "ON s.rid = ref.rid WHERE ref.id = ? AND ref.type = ? AND ref.url = '' "
            "AND s.deleted = 0 AND NOT (s.type = ? AND s.id = ?) LIMIT ?",
            (id, resource_type, resource_type, id, limit)).fetchall()
        return [(str(kind), str(rid)) for kind, rid in rows]

    async def create(self, resource: dict[str, Any], index: object | None) -> StoredResource:
        """Insert version 1 of a new resource; raise ``Conflict`` if the id is taken."""
        resource_type, id = resource["resourceType"], resource["id"]
        if (resource_type, id) in self._pending or self.conn.execute(
            "SELECT 1 FROM resources WHERE type = ? AND id = ?", (resource_type, id)
        ).fetchone():
            raise Conflict(f"{resource_type}/{id} already exists", message_id="MSG_ID_EXISTS")
        return self._insert_version(None, resource, index, 1, "POST")

    async def update(
        self,
        resource: dict[str, Any],
        index: object | None,
        expected_version: int | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Store a new version, create with a client id, or change nothing if equal."""
        resource_type, id = resource["resourceType"], resource["id"]
        self._flush_for(resource_type, id)
        row = self.conn.execute(_CURRENT_SQL, (resource_type, id)).fetchone()
        if row is None:
            if expected_version is not None:
                raise VersionConflict(
                    f"{resource_type}/{id} does not exist (expected version {expected_version})"
                )
            return WriteResult(self._insert_version(None, resource, index, 1, method), True)
        rid, version, last_updated, deleted, stored_body, old_method = row
        content = bodies.json_bytes(stored_body)
        if expected_version is not None and expected_version != version:
            raise VersionConflict(
                f"{resource_type}/{id} is at version {version}, not {expected_version}"
            )
        if not deleted and content_equal(content, resource):
            stored = StoredResource(resource_type, id, version, last_updated, content, old_method)
            return WriteResult(stored, created=False, changed=False)
        stored = self._insert_version(rid, resource, index, version + 1, method)
        return WriteResult(stored, created=bool(deleted))

    async def delete(self, resource_type: str, id: str) -> StoredResource | None:
        """Record a deletion version; None if the resource is unknown or already deleted."""
        self.flush()  # its rows, and the versions before this one (``seq`` order)
        row = self.conn.execute(_CURRENT_SQL, (resource_type, id)).fetchone()
        if row is None or row[3]:
            return None
        rid, version = row[0], row[1] + 1
        last_updated = now_instant()
        self.conn.execute(
            "INSERT INTO versions (rid, type, id, version, last_updated, method, content) "
            "VALUES (?, ?, ?, ?, ?, 'DELETE', NULL)",
            (rid, resource_type, id, version, last_updated),
        )
        self.conn.execute(
            "UPDATE resources SET version = ?, last_updated = ?, deleted = 1 WHERE rid = ?",
            (version, last_updated, rid),
        )
        self.store.index_tables.delete_index(self.conn, rid)
        return StoredResource(resource_type, id, version, last_updated, b"", "DELETE", True)

    async def append_audit(self, records: Sequence[Any]) -> None:
        """Append audit records (compact ``AuditRecord`` values or AuditEvents) to the log.

        Moving the waiting reference rows into their index (every ``MERGE_ROWS`` rows) takes
        tens of milliseconds: it runs in a thread, so the event loop serves reads meanwhile
        (this scope holds the write lock, so nothing else uses the connection).
        """
        if audit_log.append(self.conn, records):
            await run_to_end(audit_log.merge_recent_refs, self.conn)

    async def append_event(self, event: dict[str, Any]) -> WriteResult:
        """Append one AuditEvent a client sent, or nothing when it repeats a stored one."""
        current = audit_log.read(self.conn, event["id"])
        if current is None:
            return WriteResult(audit_log.create(self.conn, event), created=True)
        if content_equal(current.content, event):
            return WriteResult(current, created=False, changed=False)
        raise Conflict(f"AuditEvent/{event['id']} exists and AuditEvents are never changed",
                       message_id="MSG_AUDIT_IMMUTABLE")

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        """Create or update a subscription's state (``storage.outbox``)."""
        outbox.save(self.conn, record)

    async def append_notifications(self, events: Sequence[NotificationEvent]) -> None:
        """Append notification events, numbered per subscription (``storage.outbox``)."""
        outbox.append(self.conn, events)

    async def subscriptions_changed_since(
        self, seq: int
    ) -> tuple[list[SubscriptionState], int]:
        """The subscriptions changed after ``seq``, as this transaction sees them."""
        return outbox.changed_since(self.conn, seq)

    async def reindex(self, resource: dict[str, Any], index: object | None) -> None:
        """Replace the search index rows of the current version of ``resource``."""
        row = self.conn.execute(
            "SELECT rid FROM resources WHERE type = ? AND id = ? AND deleted = 0",
            (resource["resourceType"], resource["id"]),
        ).fetchone()  # AuditEvents (in the audit log) have no rows here: nothing to index
        if row is not None and index is not None:
            self.flush()
            self.store.index_tables.replace_index(
                self.conn, row[0], index, self.store.unions)

    def _insert_version(
        self,
        rid: int | None,
        resource: dict[str, Any],
        index: object | None,
        version: int,
        method: str,
    ) -> StoredResource:
        resource_type, id = resource["resourceType"], resource["id"]
        last_updated = now_instant()
        content = _stamp(resource, version, last_updated)
        if rid is None:
            if self._next_rid is None:
                self._next_rid = int(self.conn.execute(
                    "SELECT coalesce(max(rid), 0) + 1 FROM resources").fetchone()[0])
            rid, self._next_rid = self._next_rid, self._next_rid + 1
            self._created.append((rid, resource_type, id, version, last_updated))
            if index is not None:
                self._fresh.append((rid, index))
        else:
            self._moved.append((version, last_updated, rid))
            if index is not None:
                self._replaced.append(rid)
                self._fresh.append((rid, index))
        self._versions.append(
            (rid, resource_type, id, version, last_updated, method, bodies.pack(content)))
        self._pending.add((resource_type, id))
        return StoredResource(resource_type, id, version, last_updated, content, method)


async def scan(
    conn: sqlite3.Connection, resource_type: str | None, batch: int = 1000
) -> AsyncIterator[StoredResource]:
    """Yield current resources in ``rid`` order, one batch query at a time."""
    after = 0
    type_sql = "AND r.type = ? " if resource_type else ""
    sql = (
        "SELECT r.rid, r.type, r.id, r.version, r.last_updated, v.content, v.method "
        "FROM resources r JOIN versions v ON v.rid = r.rid AND v.version = r.version "
        f"WHERE r.deleted = 0 AND r.rid > ? {type_sql}ORDER BY r.rid LIMIT ?"
    )
    while True:
        args: tuple[Any, ...] = (after, resource_type, batch) if resource_type else (after, batch)
        rows = conn.execute(sql, args).fetchall()
        for rid, rtype, id, version, last_updated, content, method in rows:
            after = rid
            yield StoredResource(rtype, id, version, last_updated, bodies.json_bytes(content),
                                 method)
        if len(rows) < batch:
            return

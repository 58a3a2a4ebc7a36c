"""The store's audit log as a ``ResourceReader`` of AuditEvents (``SqliteAuditLog``): reads,
history and searches through ``audit_log`` on the store's connections, and the batches of read
AuditEvents written through ``audit_writer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhir_server.errors import NotFound
from fhir_server.search.model import SearchQuery, SearchResult
from fhir_server.storage.port import HistoryPage, HistoryQuery, StoredResource
from fhir_server.storage.sqlite import audit_log
from fhir_server.storage.sqlite.audit_writer import AuditWriter

if TYPE_CHECKING:
    from fhir_server.storage.sqlite.store import SqliteStore


class SqliteAuditLog:
    """The audit log of a ``SqliteStore`` as a reader of AuditEvents (``audit_log``'s
    functions on the store's connections; searches share the store's time limit)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._writer: AuditWriter | None = None

    async def append_batch(self, records: Sequence[Any]) -> None:
        """Store a batch of read audit records in a transaction of its own, not synced
        (``audit_writer``; a store in memory has one connection: its write scope)."""
        store = self._store
        if store.path == ":memory:":
            async with store.transaction(durable=False) as tx:
                await tx.append_audit(records)
            return
        if self._writer is None:
            self._writer = AuditWriter(store._connect, f"{store.path}-writer")
        await self._writer.write(audit_log.prepare(records))

    def close(self) -> None:
        """Close the batch writer's connection (after the trail has written its last)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """Return the AuditEvent ``id``; raise ``NotFound``."""
        found = audit_log.read(self._store.reader, id)
        if found is None:
            raise NotFound(f"AuditEvent/{id} is not known", message_id="MSG_NO_EXIST")
        return found

    async def vread(self, resource_type: str, id: str, version: int) -> StoredResource:
        """Return the only version of an AuditEvent; raise ``NotFound`` for another."""
        if version != 1:
            raise NotFound(f"AuditEvent/{id}/_history/{version} is not known",
                           message_id="MSG_NO_EXIST_VERSION")
        return await self.read(resource_type, id)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Type or instance history of AuditEvents (each event's single version)."""
        return audit_log.history(self._store.reader, query)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run an AuditEvent search."""
        return await self._store.run_timed(audit_log.search, query)

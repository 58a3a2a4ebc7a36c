"""The storage port: what the FHIR interactions need from a database, and nothing more.

Adapters (``storage.sqlite``, later ``storage.mongo``) implement ``ResourceStore``. They return
``StoredResource`` values and raise the domain errors of ``fhir_server.errors`` (``NotFound``,
``Gone``, ``VersionConflict``); they never build HTTP responses.

Writes happen inside a transaction scope (``async with store.transaction() as tx``): every
write of the scope commits together or not at all. Conditional create, update and delete are
written once, above the port (``interactions``), from ``tx.find`` plus the writes, and are
race-safe because a scope holds the store's write lock from its first statement on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fhir_server import decimals

if TYPE_CHECKING:
    from fhir_server.search.model import Grant, SearchQuery, SearchResult, Visibility
    from fhir_server.storage.outbox import Outbox

__all__ = [
    "AuditLogTransaction",
    "Change",
    "ConsentGrants",
    "DeferrableIndexes",
    "HistoryPage",
    "HistoryQuery",
    "ResourceReader",
    "ResourceStore",
    "StoreTransaction",
    "StoredResource",
    "WriteLog",
    "WriteResult",
]


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored.

    ``content`` is the resource's JSON (with ``meta.versionId`` and ``meta.lastUpdated``
    already set) exactly as it is served; it is empty for a deletion in history.
    ``patients``: the patients in whose compartment it is, as its search index records them
    (``indexing.compartment_patients``), when the store read them with it (a search page);
    None when it did not (then they are found in ``content``).
    """

    resource_type: str
    id: str
    version: int
    last_updated: str
    content: bytes
    method: str = "PUT"
    deleted: bool = False
    patients: frozenset[str] | None = None

    def resource(self) -> dict[str, Any]:
        """Return the resource as a JSON object (parsed on each call)."""
        parsed: dict[str, Any] = decimals.loads(self.content)
        return parsed


@dataclass(frozen=True)
class WriteResult:
    """What a write produced: the stored version, and whether anything changed."""

    stored: StoredResource
    created: bool = False
    changed: bool = True


@dataclass(frozen=True)
class HistoryQuery:
    """History at instance (type and id), type (type only) or system level (neither).

    ``since``/``at`` are FHIR instants in UTC; ``before_seq`` is the keyset cursor of the
    next page (the write sequence number of the last entry already returned). At type and
    system level, ``visibility`` keeps the versions of the resources the caller may see now
    (as a search would find them; deleted resources are then judged by their type alone).
    """

    resource_type: str | None = None
    id: str | None = None
    since: str | None = None
    at: str | None = None
    count: int = 20
    before_seq: int | None = None
    visibility: Visibility | None = None


@dataclass(frozen=True)
class HistoryPage:
    """A page of history entries, newest first, and the cursor of the next page (if any)."""

    entries: Sequence[StoredResource]
    next_seq: int | None = None
    total: int | None = None
    seqs: Sequence[int] = field(default=())


class StoreTransaction(Protocol):
    """Writes and reads inside one atomic scope. Reads see the scope's own writes."""

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version, a deleted marker (``deleted=True``) or None."""
        ...

    async def find(self, query: SearchQuery) -> list[str]:
        """Return the ids of the current resources matching the query (its clauses and
        visibility; no paging), sorted."""
        ...

    async def find_many(self, queries: Sequence[SearchQuery]) -> list[list[str]]:
        """``find`` of each query, in order; stores answer common shapes (a Bundle's
        ``identifier=system|value`` criteria) set-wise."""
        ...

    async def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which of the (type, id) pairs are current, not deleted, resources."""
        ...

    async def referrers(
        self, resource_type: str, id: str, limit: int = 1
    ) -> list[tuple[str, str]]:
        """Return up to ``limit`` other current resources (type, id) whose indexed reference
        parameters name ``resource_type/id``; AuditEvents (records of what happened) do not
        count."""
        ...

    async def create(self, resource: dict[str, Any], index: object | None) -> StoredResource:
        """Store a new resource (its ``id`` already assigned); raise Conflict if it exists."""
        ...

    async def update(
        self,
        resource: dict[str, Any],
        index: object | None,
        expected_version: int | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Store a new version (or create with a client id).

        An update whose content equals the current version's changes nothing and returns
        ``changed=False``. Raises ``VersionConflict`` when ``expected_version`` is given and
        is not the current version.
        """
        ...

    async def delete(self, resource_type: str, id: str) -> StoredResource | None:
        """Record a deletion; return the deletion marker, or None if there was nothing."""
        ...

    async def reindex(self, resource: dict[str, Any], index: object | None) -> None:
        """Replace the search index of the current version of ``resource``."""
        ...


class AuditLogTransaction(Protocol):
    """The transaction of a store that keeps AuditEvents in an audit log of its own
    (``ResourceStore.audit_log``): it appends compact audit records
    (``fhir_server.audit_record.AuditRecord``) or whole AuditEvents, and indexes them itself.
    Events are never changed."""

    async def append_audit(self, records: Sequence[Any]) -> None:
        """Append audit records (``AuditRecord`` values or AuditEvent dicts with an id)."""
        ...

    async def append_event(self, event: dict[str, Any]) -> WriteResult:
        """Append one AuditEvent a client sent (its id assigned); an event that repeats a
        stored one unchanged is not appended again (``changed=False``). Raises ``Conflict``
        for another event with the same id."""
        ...


class ResourceReader(Protocol):
    """What reads need: a store, or a store's audit log for AuditEvents."""

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """Return the current version; raise ``NotFound`` or ``Gone``."""
        ...

    async def vread(self, resource_type: str, id: str, version: int) -> StoredResource:
        """Return one version; raise ``NotFound`` (or ``Gone`` for a deletion version)."""
        ...

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Return a page of versions, newest first."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run a search: a page of matches (and included resources) for the query."""
        ...


@dataclass(frozen=True)
class Change:
    """One version in the store's write order: its sequence number (``seq``, the order of
    commits), the row id of its resource (``rid``: the order searches page in, the ``rid`` of
    their cursors) and the resource's type and id."""

    seq: int
    rid: int
    resource_type: str
    id: str


@runtime_checkable
class WriteLog(Protocol):
    """A store that numbers its writes in commit order and keeps every version: what a
    consistent snapshot (a bulk export, ``jobs.export``) reads beside its searches.

    A snapshot is a position of the write order: the resources as they were once every write
    up to it, and none after it, had been made. AuditEvents kept in an audit log of their own
    are not in the write order.
    """

    async def write_position(self) -> tuple[int, str | None]:
        """Return the newest write's sequence number and ``lastUpdated`` ((0, None) for an
        empty store)."""
        ...

    async def changes_after(self, seq: int, limit: int) -> list[Change]:
        """Return up to ``limit`` versions written after ``seq``, oldest first."""
        ...

    async def version_at(self, resource_type: str, id: str, seq: int) -> StoredResource | None:
        """Return the version of a resource that was current at position ``seq`` (a deletion
        has ``deleted=True``), or None if it did not exist yet."""
        ...


class ConsentGrants(Protocol):
    """What the access policy reads to judge one resource in memory: the grants of the
    patients' current Consents (``search.consent``), as the store's queries join them."""

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        """Return the grants of the current Consents about any of ``patients`` (only those
        naming one of ``actors`` or everyone, when given)."""
        ...


@runtime_checkable
class DeferrableIndexes(Protocol):
    """A store whose search value indexes a bulk load may drop and have built at its end (the
    SQLite store: ``fhir-server load --defer-indexes``); opening the store builds them."""

    async def holds_fewer_than(self, count: int) -> bool:
        """Whether the store holds fewer than ``count`` resources."""
        ...

    async def defer_value_indexes(self) -> None:
        """Drop the value indexes until the store is next opened."""
        ...


class ResourceStore(Protocol):
    """A FHIR resource store: current versions, history, search and atomic writes.

    ``audit_log`` is where the store keeps AuditEvents apart from other resources (read,
    listed and searched there; appended through ``AuditLogTransaction``), or None when they
    are resources like any other.
    """

    audit_log: ResourceReader | None
    #: Subscriptions' delivery state and notification events (``storage.outbox``); a
    #: transaction of the store is also an ``OutboxTransaction``.
    outbox: Outbox

    async def open(self) -> None:
        """Open connections and create the schema if missing."""
        ...

    async def close(self) -> None:
        """Close connections; pending writes have been committed or rolled back."""
        ...

    async def ping(self) -> None:
        """Raise if the storage cannot be reached (for ``/readyz``)."""
        ...

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """Return the current version; raise ``NotFound`` or ``Gone``."""
        ...

    async def vread(self, resource_type: str, id: str, version: int) -> StoredResource:
        """Return one version; raise ``NotFound`` (or ``Gone`` for a deletion version)."""
        ...

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Return a page of versions, newest first."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run a search: a page of matches (and included resources) for the query."""
        ...

    def transaction(self, *, durable: bool = True) -> AbstractAsyncContextManager[StoreTransaction]:
        """Open an atomic write scope holding the store's write lock.

        ``durable=False`` allows the store to acknowledge the scope before it is on stable
        storage (it must still survive a crash of the process); read audit batches use it.
        """
        ...

    def scan(self, resource_type: str | None = None) -> AsyncIterator[StoredResource]:
        """Iterate over all current (not deleted) resources, for reindexing and export."""
        ...

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        """Return the grants of the current Consents about any of ``patients``
        (``ConsentGrants``)."""
        ...

"""The MongoDB store: FHIR resources in a replica set or sharded cluster (PyMongo async API).

Collections: ``resources`` (current versions with their search index ``idx``), ``versions``
(every version, ordered by ``seq`` from the ``counters`` collection) and ``guards`` (see
``writes.GuardWrite``); ``documents`` describes their shape and ``indexes`` their indexes.

Writes are planned inside ``transaction()`` and applied together when it ends (``writes``):
in a multi-document transaction on a replica set or sharded cluster. A standalone server has
no transactions: the store says so at ``open()`` and still accepts a scope that writes one
resource (one create, update or delete), but refuses a scope that writes several, before
writing any of them, with ``TransactionsUnavailable``: half a visit Bundle is never stored.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from fhir_server.errors import Gone, NotFound, NotSupported, SearchTooCostly, VersionConflict
from fhir_server.metrics.catalogue import SEARCH_TIMEOUTS
from fhir_server.search.model import Grant, SearchQuery, SearchResult, Visibility
from fhir_server.storage.mongo import documents as docs
from fhir_server.storage.mongo import write_log
from fhir_server.storage.mongo.grant_memo import GrantMemo, keys_of
from fhir_server.storage.mongo.indexes import INDEXES
from fhir_server.storage.mongo.outbox import MongoOutbox
from fhir_server.storage.mongo.search_filters import NOTHING, all_of, visibility_filter
from fhir_server.storage.mongo.writes import (
    MongoTransaction,
    PlannedWrite,
    apply_writes,
    written_keys,
)
from fhir_server.storage.outbox import Outbox
from fhir_server.storage.port import (
    Change,
    HistoryPage,
    HistoryQuery,
    ResourceReader,
    StoredResource,
)

__all__ = ["MongoStore", "TransactionsUnavailable"]

log = logging.getLogger(__name__)

_TRANSIENT = "TransientTransactionError"
_COMMIT_ATTEMPTS = 3


class TransactionsUnavailable(NotSupported):
    """501: several resources must be written atomically, and the server cannot.

    501 rather than 503: retrying does not help; this deployment (a standalone MongoDB
    server) does not implement multi-document transactions until it runs as a replica set.
    """

    status = 501
    default_message_id = "MSG_TRANSACTIONS_UNAVAILABLE"


class MongoStore:
    """``ResourceStore`` over a MongoDB database; see the module docstring."""

    #: AuditEvents are resources like any other here.
    audit_log: ResourceReader | None = None

    def __init__(self, url: str, *, database: str = "fhir", client: Any = None,
                 search_timeout_s: float = 30.0) -> None:
        self.url = url
        self.search_timeout_s = search_timeout_s
        self.database = database
        self.registry: Any = None
        self.transactions_supported = False
        self._client = client
        self._db: Any = None
        #: The grants read, remembered while they do not change (``grant_memo``); None on a
        #: standalone server, whose writes cannot count grant changes atomically.
        self._grants: GrantMemo | None = None
        #: Subscriptions' delivery state and notification events (``storage.outbox``).
        self.outbox: Outbox = MongoOutbox(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MongoStore:
        """Build a store from ``mongodb://host/dbname``; the database defaults to ``fhir``."""
        database = urlsplit(url).path.strip("/") or "fhir"
        return cls(url, database=database, **options)

    @property
    def db(self) -> Any:
        """The database handle (``AsyncDatabase``) of an open store."""
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        """Connect, detect whether transactions are available, and create the indexes."""
        if self._client is None:
            from pymongo import AsyncMongoClient

            self._client = AsyncMongoClient(self.url)
        self._db = self._client[self.database]
        hello = await self._db.command("hello")
        self.transactions_supported = _supports_transactions(hello)
        self._grants = GrantMemo() if self.transactions_supported else None
        if not self.transactions_supported:
            log.warning(
                "MongoDB at %s is a standalone server: multi-document transactions are "
                "unavailable, so transaction Bundles (and any write of several resources "
                "at once) will be refused with 501. Run it as a replica set (even of one "
                "member) to accept them.",
                urlsplit(self.url).hostname,
            )
        for spec in INDEXES:
            keys, options = spec.create_args()
            await self._db[spec.collection].create_index(keys, **options)

    async def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            await self._client.close()
        self._client = self._db = None

    async def ping(self) -> None:
        """Run the ``ping`` command; raises if the server cannot be reached."""
        await self.db.command("ping")

    async def read(self, resource_type: str, id: str) -> StoredResource:
        """Return the current version; raise ``NotFound`` or ``Gone``."""
        doc = await self.db["resources"].find_one({"_id": docs.resource_key(resource_type, id)})
        if doc is None:
            raise NotFound(f"{resource_type}/{id} is not known", message_id="MSG_NO_EXIST")
        if doc["deleted"]:
            raise Gone(
                f"{resource_type}/{id} was deleted",
                headers={"ETag": f'W/"{doc["version"]}"', "Last-Modified": doc["lastUpdated"]},
            )
        return docs.stored_from_resource(doc)

    async def vread(self, resource_type: str, id: str, version: int) -> StoredResource:
        """Return one version; a deletion version raises ``Gone``."""
        key = docs.version_key(resource_type, id, version)
        doc = await self.db["versions"].find_one({"_id": key})
        if doc is None:
            raise NotFound(
                f"{resource_type}/{id}/_history/{version} is not known",
                message_id="MSG_NO_EXIST_VERSION",
            )
        if doc["content"] is None:
            raise Gone(f"{resource_type}/{id} version {version} is a deletion")
        return docs.stored_from_version(doc)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Run a compiled search (``search``): filter documents, keyset pages, includes."""
        import pymongo
        from pymongo.errors import PyMongoError

        from fhir_server.storage.mongo.finding import default_registry
        from fhir_server.storage.mongo.search import run_search

        # The driver's operation timeout covers every round trip of the search.
        with pymongo.timeout(self.search_timeout_s):
            try:
                query = replace(query, visibility=await self.resolve(query.visibility))
                return await run_search(self.db, query, self.registry or default_registry())
            except PyMongoError as exc:
                if not exc.timeout:
                    raise
                SEARCH_TIMEOUTS.labels(query.resource_type or "").inc()
                raise SearchTooCostly.after(self.search_timeout_s) from None

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """Return a page of versions newest first; the cursor is the last ``seq`` returned.

        With a ``visibility``, the resources the caller may see now are found first (one
        query; a patient's compartment is small) and their versions are read.
        """
        filter_ = docs.history_filter(query)
        if query.visibility is not None:
            query = replace(query, visibility=await self.resolve(query.visibility))
            filter_ = {"$and": [filter_, await self._visible_keys(query)]}
        cursor = self.db["versions"].find(filter_, sort=[("seq", -1)], limit=query.count + 1)
        rows = [doc async for doc in cursor]
        more = len(rows) > query.count
        rows = rows[: query.count]
        next_seq = int(rows[-1]["seq"]) if more and rows else None
        entries = [docs.stored_from_version(doc) for doc in rows]
        return HistoryPage(entries, next_seq=next_seq, seqs=[int(doc["seq"]) for doc in rows])

    async def _visible_keys(self, query: HistoryQuery) -> dict[str, Any]:
        kind = query.resource_type
        filter_ = all_of([{"type": kind} if kind else {},
                          visibility_filter(query.visibility, kind)])
        found: dict[str, list[str]] = {}
        fields = {"_id": 1, "type": 1, "id": 1}
        async for doc in self.db["resources"].find(filter_, projection=fields):
            found.setdefault(doc["type"], []).append(doc["id"])
        alternatives = [{"type": t, "id": {"$in": ids}} for t, ids in found.items()]
        return {"$or": alternatives} if alternatives else NOTHING

    async def write_position(self) -> tuple[int, str | None]:
        """The newest write's ``seq`` and ``lastUpdated`` (``port.WriteLog``)."""
        return await write_log.write_position(self.db)

    async def changes_after(self, seq: int, limit: int) -> list[Change]:
        """Versions written after ``seq``, oldest first (``port.WriteLog``)."""
        return await write_log.changes_after(self.db, seq, limit)

    async def version_at(self, resource_type: str, id: str, seq: int) -> StoredResource | None:
        """The version current at ``seq`` (``port.WriteLog``)."""
        return await write_log.version_at(self.db, resource_type, id, seq)

    async def resolve(self, visibility: Visibility | None) -> Visibility | None:
        """The visibility with the caller's Consent grants read into its ``consent`` rule
        (a filter cannot join them): every grant naming the caller, or everyone, in a
        Consent of the rule's scope (remembered while none of them changes)."""
        rule = visibility.consent if visibility is not None else None
        if visibility is None or rule is None or rule.grants is not None:
            return visibility
        actors = sorted(rule.actors | {"*"})
        scope = rule.scope

        async def load() -> list[Grant]:
            wanted = {"$elemMatch": {"a": {"$in": actors}, "sc": scope}}
            return [grant for doc in await self._consents({"idx.grants": wanted})
                    for grant in _grants(doc) if grant.actor in actors
                    and grant.scope == scope]

        grants = await self._remembered(("actors", tuple(actors), scope),
                                        keys_of(actors=actors), load)
        return replace(visibility, consent=replace(rule, grants=tuple(grants)))

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        """The grants of the current Consents about ``patients`` (naming one of ``actors``
        or everyone, when given), remembered while the patients' grants do not change."""
        wanted = sorted(set(patients))
        named = None if actors is None else frozenset({*actors, "*"})

        async def load() -> list[Grant]:
            found = await self._consents({"idx.grants.pt": {"$in": wanted}})
            return [grant for doc in found for grant in _grants(doc)
                    if grant.patient in wanted and (named is None or grant.actor in named)]

        if not wanted:
            return []
        return await self._remembered(("patients", tuple(wanted), named),
                                      keys_of(patients=wanted), load)

    async def _remembered(self, question: tuple[Any, ...], keys: Sequence[str],
                          load: Callable[[], Awaitable[list[Grant]]]) -> list[Grant]:
        if self._grants is None:
            return await load()
        return await self._grants.read(self.db, question, keys, load)

    async def _consents(self, grants: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self.db["resources"].find({"type": "Consent", "deleted": False, **grants},
                                           projection={"idx.grants": 1})
        return [doc async for doc in cursor]

    async def scan(
        self, resource_type: str | None = None, batch: int = 1000
    ) -> AsyncIterator[StoredResource]:
        """Yield every current resource (of one type, or all) in ``_id`` order, by batches."""
        after = ""
        while True:
            filter_: dict[str, Any] = {"_id": {"$gt": after}, "deleted": False}
            if resource_type is not None:
                filter_["type"] = resource_type
            cursor = self.db["resources"].find(filter_, sort=[("_id", 1)], limit=batch)
            rows = [doc async for doc in cursor]
            for doc in rows:
                after = doc["_id"]
                yield docs.stored_from_resource(doc)
            if len(rows) < batch:
                return

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[MongoTransaction]:
        """Plan writes in the scope; apply them together on normal exit, drop them otherwise.

        Every scope is written with the store's write concern (``durable`` changes nothing).
        """
        scope = MongoTransaction(self)
        yield scope
        if scope.plan:
            await self._commit(scope.plan)

    async def _commit(self, plan: Sequence[PlannedWrite]) -> None:
        if not self.transactions_supported:
            if len(written_keys(plan)) > 1:
                raise TransactionsUnavailable(
                    "This server's MongoDB is a standalone server without multi-document "
                    "transactions, so it cannot store several resources atomically; nothing "
                    "was written. Deploy MongoDB as a replica set.",
                )
            await apply_writes(self.db, plan)
            return
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                await self._commit_in_session(plan)
                return
            except VersionConflict:
                raise
            except Exception as exc:
                if not _is_transient(exc) or attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                log.info("retrying a MongoDB transaction after a transient error: %s", exc)

    async def _commit_in_session(self, plan: Sequence[PlannedWrite]) -> None:
        async with self._client.start_session() as session:
            await session.start_transaction()
            try:
                await apply_writes(self.db, plan, session)
            except BaseException:
                await session.abort_transaction()
                raise
            await session.commit_transaction()

def _grants(doc: dict[str, Any]) -> list[Grant]:
    names = docs.ROW_FIELDS["grants"]
    return [Grant(*(row[name] for name in names)) for row in (doc.get("idx") or {}).get(
        "grants") or ()]


def _supports_transactions(hello: dict[str, Any]) -> bool:
    """Replica set members report ``setName``; a mongos router says ``msg: isdbgrid``."""
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


def _is_transient(exc: BaseException) -> bool:
    has_label = getattr(exc, "has_error_label", None)
    return bool(has_label and has_label(_TRANSIENT))

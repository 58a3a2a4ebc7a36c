"""Writes of the MongoDB store: planned inside a scope, applied together at its end.

A scope (``MongoTransaction``) reads the database plus its own earlier writes, and turns each
write into a planned ``VersionWrite`` (or ``IndexWrite``, ``GuardWrite``) without touching the
database. When the scope ends normally, ``apply_writes`` performs the plan, in one
multi-document transaction where the server has them. Every planned write names the version
it was planned against (``previous``), so a concurrent writer that got there first makes the
apply fail with ``VersionConflict`` instead of being overwritten: optimistic concurrency,
with the database transaction kept as short as the writes themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fhir_server import decimals
from fhir_server.errors import Conflict, VersionConflict
from fhir_server.search.model import SearchQuery
from fhir_server.storage.mongo import documents as docs
from fhir_server.storage.mongo.finding import find_ids
from fhir_server.storage.mongo.grant_memo import CHANGES, changed_keys
from fhir_server.storage.mongo.outbox import apply_outbox
from fhir_server.storage.mongo.plans import (
    GrantChange,
    GuardWrite,
    IndexWrite,
    OutboxWrite,
    PlannedWrite,
    VersionWrite,
    written_keys,
)
from fhir_server.storage.outbox import NotificationEvent, SubscriptionRecord, SubscriptionState
from fhir_server.storage.port import StoredResource, WriteResult
from fhir_server.storage.versions import content_equal, now_instant

if TYPE_CHECKING:
    from fhir_server.storage.mongo.store import MongoStore

__all__ = [
    "GrantChange",
    "GuardWrite",
    "IndexWrite",
    "MongoTransaction",
    "OutboxWrite",
    "PlannedWrite",
    "VersionWrite",
    "apply_writes",
    "written_keys",
]


def _stamp(resource: dict[str, Any], version: int, last_updated: str) -> bytes:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    resource["meta"] = meta
    return decimals.dumps(resource)


class MongoTransaction:
    """``StoreTransaction`` of a ``MongoStore``: reads see the scope's own planned writes."""

    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.plan: list[PlannedWrite] = []
        self._overlay: dict[str, dict[str, Any]] = {}

    async def _current(self, resource_type: str, id: str) -> dict[str, Any] | None:
        key = docs.resource_key(resource_type, id)
        if key in self._overlay:
            return self._overlay[key]
        found: dict[str, Any] | None = await self.store.db["resources"].find_one({"_id": key})
        return found

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version (``deleted=True`` for a deleted one) or None."""
        doc = await self._current(resource_type, id)
        return None if doc is None else docs.stored_from_resource(doc)

    async def find(self, query: SearchQuery) -> list[str]:
        """Return ids of current resources matching the query, and guard the search."""
        query = replace(query, visibility=await self.store.resolve(query.visibility))
        ids, guard = await find_ids(self.store, query, self._overlay)
        self.plan.append(guard)
        return ids

    async def find_many(self, queries: Sequence[SearchQuery]) -> list[list[str]]:
        """``find`` of each query, in order (each distinct query is run, and guarded, once)."""
        answers: dict[SearchQuery, list[str]] = {}
        for query in queries:
            if query not in answers:
                answers[query] = await self.find(query)
        return [list(answers[query]) for query in queries]

    async def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (type, id) pairs are current resources, in one query."""
        wanted = {docs.resource_key(t, i): (t, i) for t, i in keys}
        found = {k for k in wanted if k in self._overlay and not self._overlay[k]["deleted"]}
        lookup = [k for k in wanted if k not in self._overlay]
        if lookup:
            cursor = self.store.db["resources"].find(
                {"_id": {"$in": lookup}, "deleted": False}, projection={"_id": 1}
            )
            found.update([doc["_id"] async for doc in cursor])
        return {wanted[k] for k in found}

    async def referrers(
        self, resource_type: str, id: str, limit: int = 1
    ) -> list[tuple[str, str]]:
        """Other current resources whose reference rows name ``resource_type/id`` (the
        scope's own planned writes included)."""
        row = {"$elemMatch": {"t": resource_type, "i": id, "u": ""}}
        found: dict[str, tuple[str, str]] = {}
        async for doc in self.store.db["resources"].find(
                {"idx.references": row, "deleted": False, "type": {"$ne": "AuditEvent"}},
                projection={"_id": 1, "type": 1, "id": 1}):
            found[doc["_id"]] = (doc["type"], doc["id"])
        for key, doc in self._overlay.items():
            found.pop(key, None)
            refs = (doc.get("idx") or {}).get("references") or ()
            if not doc["deleted"] and doc["type"] != "AuditEvent" and any(
                    r["t"] == resource_type and r["i"] == id and not r.get("u") for r in refs):
                found[key] = (doc["type"], doc["id"])
        found.pop(docs.resource_key(resource_type, id), None)
        return sorted(found.values())[:limit]

    async def create(self, resource: dict[str, Any], index: object | None) -> StoredResource:
        """Plan version 1 of a new resource; raise ``Conflict`` if the id is taken."""
        resource_type, id = resource["resourceType"], resource["id"]
        if await self._current(resource_type, id) is not None:
            raise Conflict(f"{resource_type}/{id} already exists", message_id="MSG_ID_EXISTS")
        return self._plan_version(None, resource, index, "POST")

    async def update(
        self,
        resource: dict[str, Any],
        index: object | None,
        expected_version: int | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Plan a new version, a create with a client id, or nothing if the content is equal."""
        resource_type, id = resource["resourceType"], resource["id"]
        current = await self._current(resource_type, id)
        if current is None:
            if expected_version is not None:
                raise VersionConflict(
                    f"{resource_type}/{id} does not exist (expected version {expected_version})"
                )
            return WriteResult(self._plan_version(None, resource, index, method), created=True)
        version = int(current["version"])
        if expected_version is not None and expected_version != version:
            raise VersionConflict(
                f"{resource_type}/{id} is at version {version}, not {expected_version}"
            )
        if not current["deleted"] and content_equal(current["content"], resource):
            stored = docs.stored_from_resource(current)
            return WriteResult(stored, created=False, changed=False)
        stored = self._plan_version(version, resource, index, method, current["pk"],
                                    current.get("idx"))
        return WriteResult(stored, created=bool(current["deleted"]))

    async def delete(self, resource_type: str, id: str) -> StoredResource | None:
        """Plan a deletion version; None if the resource is unknown or already deleted."""
        current = await self._current(resource_type, id)
        if current is None or current["deleted"]:
            return None
        version = int(current["version"])
        stored = StoredResource(resource_type, id, version + 1, now_instant(), b"", "DELETE", True)
        self._add(docs.resource_document(stored, None, current["pk"]), version, current["pk"],
                  current.get("idx"))
        return stored

    async def save_subscription(self, record: SubscriptionRecord) -> None:
        """Plan the save of a subscription's state (``storage.outbox``)."""
        self.plan.append(OutboxWrite(record=record))

    async def append_notifications(self, events: Sequence[NotificationEvent]) -> None:
        """Plan notification events, numbered when the plan is applied."""
        if events:
            self.plan.append(OutboxWrite(events=tuple(events)))

    async def subscriptions_changed_since(
        self, seq: int
    ) -> tuple[list[SubscriptionState], int]:
        """The subscriptions changed after ``seq`` (committed ones: MongoDB reads outside the
        scope's plan)."""
        return await self.store.outbox.changed_since(seq)

    async def reindex(self, resource: dict[str, Any], index: object | None) -> None:
        """Plan a new search index for the current version of ``resource``."""
        current = await self._current(resource["resourceType"], resource["id"])
        if current is None or current["deleted"] or index is None:
            return
        idx = docs.index_document(index)
        pk = docs.partition_key(current["type"], current["id"], idx)
        self._overlay[current["_id"]] = {**current, "idx": idx, "pk": pk}
        write = IndexWrite(current["_id"], int(current["version"]), idx, pk, current["pk"])
        self.plan.append(write)
        self._grants_changed(current.get("idx"), idx)

    def _plan_version(
        self,
        previous: int | None,
        resource: dict[str, Any],
        index: object | None,
        method: str,
        previous_pk: str | None = None,
        previous_idx: dict[str, Any] | None = None,
    ) -> StoredResource:
        resource_type, id = resource["resourceType"], resource["id"]
        version = 1 if previous is None else previous + 1
        last_updated = now_instant()
        content = _stamp(resource, version, last_updated)
        stored = StoredResource(resource_type, id, version, last_updated, content, method)
        idx = docs.index_document(index)
        self._add(
            docs.resource_document(stored, idx, docs.partition_key(resource_type, id, idx)),
            previous,
            previous_pk,
            previous_idx,
        )
        return stored

    def _add(
        self, resource_doc: dict[str, Any], previous: int | None, previous_pk: str | None = None,
        previous_idx: dict[str, Any] | None = None,
    ) -> None:
        self._overlay[resource_doc["_id"]] = resource_doc
        self.plan.append(VersionWrite(resource_doc, previous, previous_pk))
        self._grants_changed(previous_idx, resource_doc["idx"])

    def _grants_changed(self, before: dict[str, Any] | None,
                        after: dict[str, Any] | None) -> None:
        """Plan the increments of the counters of the grants a write changes (if any): the
        version checks of the plan make sure ``before`` is what the write replaces."""
        keys = changed_keys(before, after)
        if keys:
            self.plan.append(GrantChange(keys))


async def apply_writes(db: Any, plan: Sequence[PlannedWrite], session: Any = None) -> None:
    """Perform ``plan`` in order; raise ``VersionConflict`` where another writer won."""
    for write in plan:
        if isinstance(write, VersionWrite):
            await _apply_version(db, write, session)
        elif isinstance(write, IndexWrite):
            await _apply_index(db, write, session)
        elif isinstance(write, OutboxWrite):
            await apply_outbox(db, write, session)
        elif isinstance(write, GrantChange):
            await _apply_grant_change(db, write, session)
        else:
            await _apply_guard(db, write, session)


async def _apply_version(db: Any, write: VersionWrite, session: Any) -> None:
    from pymongo.errors import DuplicateKeyError

    doc = write.resource
    key = doc["_id"]
    previous = write.previous
    seq = await _next_seq(db, session)
    if previous is None:
        try:
            await db["resources"].insert_one({**doc, "rid": seq}, session=session)
        except DuplicateKeyError:
            raise VersionConflict(f"{key} was created by another writer") from None
    else:
        # $set of every field but _id and rid: the resource keeps its first version's rid.
        fields = {name: value for name, value in doc.items() if name not in ("_id", "rid")}
        result = await db["resources"].update_one(
            {"_id": key, "pk": write.previous_pk, "version": previous}, {"$set": fields},
            session=session,
        )  # fmt: skip
        if result.matched_count != 1:
            raise VersionConflict(f"{key} was changed by another writer")
        await db["versions"].update_one(
            {"_id": docs.version_key(doc["type"], doc["id"], previous), "pk": write.previous_pk},
            {"$set": {"until": doc["lastUpdated"]}}, session=session,
        )  # fmt: skip
    await db["versions"].insert_one(
        docs.version_document(docs.stored_from_resource(doc), seq, doc["pk"]), session=session
    )


async def _next_seq(db: Any, session: Any) -> int:
    from pymongo import ReturnDocument

    counter = await db["counters"].find_one_and_update(
        {"_id": "versions"}, {"$inc": {"seq": 1}}, upsert=True,
        return_document=ReturnDocument.AFTER, session=session,
    )  # fmt: skip
    return int(counter["seq"])


async def _apply_index(db: Any, write: IndexWrite, session: Any) -> None:
    result = await db["resources"].update_one(
        {"_id": write.key, "pk": write.previous_pk, "version": write.version, "deleted": False},
        {"$set": {"idx": write.idx, "pk": write.pk}}, session=session,
    )  # fmt: skip
    if result.matched_count != 1:
        raise VersionConflict(f"{write.key} was changed by another writer")


async def _apply_grant_change(db: Any, write: GrantChange, session: Any) -> None:
    for key in write.keys:
        await db[CHANGES].update_one({"_id": key}, {"$inc": {"n": 1}}, upsert=True,
                                     session=session)


async def _apply_guard(db: Any, write: GuardWrite, session: Any) -> None:
    from pymongo.errors import DuplicateKeyError

    try:
        await db["guards"].update_one(
            {"_id": write.key, "n": write.seen}, {"$inc": {"n": 1}}, upsert=True,
            session=session,
        )  # fmt: skip
    except DuplicateKeyError:
        raise VersionConflict(
            "A concurrent request ran the same conditional search; retry",
            message_id="MSG_CONDITIONAL_RACE",
        ) from None

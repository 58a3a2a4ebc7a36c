"""The outbox of the MongoDB store: collections ``subscription_state`` (one document per
Subscription: its record, owner, event counter and delivery state) and
``subscription_events`` (``_id``: subscription and number), written by the scope's plan in
the same multi-document transaction as the change (``apply_outbox``), and read and settled by
the delivery worker (``MongoOutbox``). A standalone server has no transactions: there a write
that also records events is refused like any other write of several documents."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fhir_server.storage.mongo.plans import OutboxWrite
from fhir_server.storage.outbox import (
    Backlog,
    NotificationEvent,
    SubscriptionRecord,
    SubscriptionState,
)

if TYPE_CHECKING:
    from fhir_server.storage.mongo.store import MongoStore

__all__ = ["MongoOutbox", "apply_outbox"]

_STATE = "subscription_state"
_EVENTS = "subscription_events"
_SETTLED = frozenset({"delivered", "attempts", "next_attempt", "failing_since", "handshake",
                      "last_sent", "error"})


async def _next_changed(db: Any, session: Any) -> int:
    from pymongo import ReturnDocument

    counter = await db["counters"].find_one_and_update(
        {"_id": "subscriptions"}, {"$inc": {"seq": 1}}, upsert=True,
        return_document=ReturnDocument.AFTER, session=session)
    return int(counter["seq"])


async def _save(db: Any, record: SubscriptionRecord, session: Any) -> None:
    fields: dict[str, Any] = {
        "status": record.status, "channel": record.channel, "content": record.content,
        "heartbeat_s": record.heartbeat_s, "deleted": record.deleted,
        "changed": await _next_changed(db, session)}
    if record.owner is not None:
        fields["owner"] = record.owner
    if record.handshake:
        fields.update(handshake=True, attempts=0, next_attempt=0.0, failing_since=None,
                      error=None)
    await db[_STATE].update_one({"_id": record.id}, {"$set": fields}, upsert=True,
                                session=session)


async def _append(db: Any, event: NotificationEvent, session: Any) -> None:
    from pymongo import ReturnDocument

    state = await db[_STATE].find_one_and_update(
        {"_id": event.subscription, "deleted": False}, {"$inc": {"events": 1}},
        return_document=ReturnDocument.AFTER, session=session)
    if state is None:
        return
    number = int(state["events"])
    await db[_EVENTS].insert_one({
        "_id": f"{event.subscription}/{number:012d}", "subscription": event.subscription,
        "number": number, "timestamp": event.timestamp, "created": time.time(),
        "focus_type": event.focus_type, "focus_id": event.focus_id,
        "focus_version": event.focus_version, "change": event.change, "topic": event.topic,
    }, session=session)


async def apply_outbox(db: Any, write: OutboxWrite, session: Any) -> None:
    """Perform one planned outbox write (inside the plan's transaction)."""
    if write.record is not None:
        await _save(db, write.record, session)
    for event in write.events:
        await _append(db, event, session)


def _at_most(field: str, bound: float) -> dict[str, Any]:
    """``field`` is at most ``bound``, or not set yet (0)."""
    return {"$or": [{field: {"$lte": bound}}, {field: {"$exists": False}}]}


def _state(doc: dict[str, Any]) -> SubscriptionState:
    return SubscriptionState(
        id=doc["_id"], status=doc["status"], channel=doc["channel"],
        content=bytes(doc["content"]), owner=bytes(doc.get("owner") or b"{}"),
        events=int(doc.get("events", 0)), delivered=int(doc.get("delivered", 0)),
        attempts=int(doc.get("attempts", 0)), next_attempt=float(doc.get("next_attempt", 0)),
        failing_since=doc.get("failing_since"), handshake=bool(doc.get("handshake")),
        heartbeat_s=doc.get("heartbeat_s"), last_sent=float(doc.get("last_sent", 0)),
        error=doc.get("error"), changed=int(doc.get("changed", 0)),
        deleted=bool(doc.get("deleted")))


def _event(doc: dict[str, Any]) -> NotificationEvent:
    return NotificationEvent(doc["subscription"], doc["timestamp"], doc["focus_type"],
                             doc["focus_id"], int(doc["focus_version"]), doc["change"],
                             doc.get("topic"), int(doc["number"]))


class MongoOutbox:
    """``Outbox`` over a ``MongoStore`` (single-document updates: each is atomic)."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store

    async def changed_since(self, seq: int) -> tuple[list[SubscriptionState], int]:
        cursor = self._store.db[_STATE].find({"changed": {"$gt": seq}}, sort=[("changed", 1)])
        states = [_state(doc) async for doc in cursor]
        return states, (states[-1].changed if states else seq)

    async def state(self, id: str) -> SubscriptionState | None:
        doc = await self._store.db[_STATE].find_one({"_id": id})
        return None if doc is None else _state(doc)

    async def due(self, now: float, limit: int) -> list[str]:
        found: list[str] = []
        cursor = self._store.db[_STATE].find(
            {"status": {"$in": ["requested", "active"]}, "deleted": False,
             "$and": [_at_most("next_attempt", now), _at_most("lease_until", now)]},
            sort=[("next_attempt", 1)], limit=limit * 4)
        async for doc in cursor:
            pending = int(doc.get("delivered", 0)) < int(doc.get("events", 0)) \
                or bool(doc.get("handshake"))
            beat = doc.get("heartbeat_s")
            beating = beat is not None and doc["status"] == "active" \
                and float(doc.get("last_sent", 0)) + beat <= now
            if pending or beating:
                found.append(str(doc["_id"]))
        return found[:limit]

    async def claim(self, id: str, worker: str, until: float, now: float) -> bool:
        result = await self._store.db[_STATE].update_one(
            {"_id": id, "$or": [*_at_most("lease_until", now)["$or"],
                                {"lease_owner": worker}]},
            {"$set": {"lease_owner": worker, "lease_until": until}})
        return bool(result.matched_count)

    async def claim_many(self, ids: Sequence[str], worker: str, until: float,
                         now: float) -> list[str]:
        return [id for id in ids if await self.claim(id, worker, until, now)]

    async def settle(self, id: str, worker: str, changes: Mapping[str, Any]) -> bool:
        fields = {name: value for name, value in changes.items() if name in _SETTLED}
        result = await self._store.db[_STATE].update_one(
            {"_id": id, "lease_owner": worker},
            {"$set": {**fields, "lease_owner": None, "lease_until": 0.0}})
        return bool(result.matched_count)

    async def events(self, id: str, first: int, last: int | None,
                     limit: int) -> list[NotificationEvent]:
        bounds: dict[str, Any] = {"$gte": first}
        if last is not None:
            bounds["$lte"] = last
        cursor = self._store.db[_EVENTS].find({"subscription": id, "number": bounds},
                                              sort=[("number", 1)], limit=limit)
        return [_event(doc) async for doc in cursor]

    async def purge(self, before: float) -> int:
        result = await self._store.db[_EVENTS].delete_many({"created": {"$lt": before}})
        return int(result.deleted_count)

    async def backlog(self) -> Backlog:
        events = subscriptions = retrying = 0
        cursor = self._store.db[_STATE].find(
            {"status": {"$in": ["requested", "active"]}, "deleted": False},
            projection={"events": 1, "delivered": 1, "attempts": 1})
        async for doc in cursor:
            waiting = int(doc.get("events", 0)) - int(doc.get("delivered", 0))
            events += max(waiting, 0)
            subscriptions += waiting > 0
            retrying += int(doc.get("attempts", 0)) > 0
        return Backlog(events, subscriptions, retrying)

"""The write order of the MongoDB store (``port.WriteLog``): ``versions.seq`` comes from the
``counters`` document every write increments inside its transaction, so two transactions
never hold the same number and commit in its order (the second one to touch the counter
conflicts and retries). A resource's ``rid`` is the ``seq`` of its first version, kept on its
``resources`` document; versions do not carry it, so it is read there (indexed ``_id``)."""

from __future__ import annotations

from typing import Any

from fhir_server.storage.mongo import documents as docs
from fhir_server.storage.port import Change, StoredResource

__all__ = ["changes_after", "version_at", "write_position"]


async def write_position(db: Any) -> tuple[int, str | None]:
    """The newest version's ``seq`` and ``lastUpdated`` ((0, None) when there is none)."""
    found = [doc async for doc in db["versions"].find(
        {}, projection={"seq": 1, "lastUpdated": 1}, sort=[("seq", -1)], limit=1)]
    return (0, None) if not found else (int(found[0]["seq"]), str(found[0]["lastUpdated"]))


async def changes_after(db: Any, seq: int, limit: int) -> list[Change]:
    """Up to ``limit`` versions written after ``seq``, oldest first, with their ``rid``."""
    fields = {"seq": 1, "type": 1, "id": 1}
    rows = [doc async for doc in db["versions"].find(
        {"seq": {"$gt": seq}}, projection=fields, sort=[("seq", 1)], limit=limit)]
    keys = sorted({docs.resource_key(doc["type"], doc["id"]) for doc in rows})
    rids = {docs.resource_key(doc["type"], doc["id"]): int(doc["rid"])
            async for doc in db["resources"].find(
                {"_id": {"$in": keys}}, projection={"rid": 1, "type": 1, "id": 1})
            } if keys else {}
    return [Change(int(doc["seq"]), rids[docs.resource_key(doc["type"], doc["id"])],
                   str(doc["type"]), str(doc["id"])) for doc in rows]


async def version_at(db: Any, resource_type: str, id: str, seq: int) -> StoredResource | None:
    """The version current at ``seq`` (the newest written at or before it), or None."""
    found = [doc async for doc in db["versions"].find(
        {"type": resource_type, "id": id, "seq": {"$lte": seq}},
        sort=[("version", -1)], limit=1)]
    return docs.stored_from_version(found[0]) if found else None

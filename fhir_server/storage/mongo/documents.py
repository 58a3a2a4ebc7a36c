"""The MongoDB documents of the store: current resources, versions, and the search index.

``resources`` holds one document per resource, ``_id`` ``"Type/id"``, with its current
version and content; ``versions`` holds every version (the content of a deletion is None)
with the write sequence number ``seq`` that orders history. Content is stored as the JSON
bytes exactly as served: BSON would not keep FHIR decimals (``1.50``) or key order, and reads
then cost no re-serialisation.

``pk`` is the partition key, the shard key of a sharded cluster: the patient whose health book
holds the resource (its first compartment), or ``"Type/id"`` for resources in no compartment.
``rid`` is the ``seq`` of the resource's first version, kept by every later version: the
default search order and the keyset tie-breaker (the embedded store's row id plays that role).
Every function here is pure: it builds a document and touches no database.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fhir_server.storage.port import HistoryQuery, StoredResource

__all__ = [
    "ROW_FIELDS",
    "SORT_FIELDS",
    "history_filter",
    "index_document",
    "partition_key",
    "resource_document",
    "resource_key",
    "stored_from_page",
    "stored_from_resource",
    "stored_from_version",
    "version_document",
    "version_key",
]

ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "strings": ("p", "f", "e"),
    "tokens": ("p", "s", "c"),
    "texts": ("p", "t"),
    "dates": ("p", "lo", "hi"),
    "numbers": ("p", "lo", "hi"),
    "quantities": ("p", "s", "c", "lo", "hi"),
    "references": ("p", "t", "i", "u"),
    "uris": ("p", "u"),
    "grants": ("k", "pt", "a", "pm", "sc", "st", "en", "pu", "ty", "tg", "cd", "lb"),
}
"""Short field names of each ``SearchIndex`` row table (``p`` is always the parameter code).

Short names matter: they are repeated in every row of every resource, hundreds of millions
of times, and MongoDB stores field names in each document.
"""

SORT_FIELDS: dict[str, tuple[str, str]] = {
    "strings": ("f", "f"),
    "tokens": ("c", "c"),
    "dates": ("lo", "lo"),
    "numbers": ("lo", "lo"),
    "quantities": ("lo", "lo"),
    "references": ("i", "i"),
    "uris": ("u", "u"),
}
"""The row field ``_sort`` orders by, ascending and descending, per row table.

``idx.sa.<code>`` holds the least ascending value of a parameter and ``idx.sd.<code>`` the
greatest descending one: scalars, because a MongoDB sort on an array field takes the min or
max over every element, whatever its parameter, and a keyset comparison on an array matches
any element. Resources sort by their lowest value ascending, their highest descending; a
range (a date's precision, a period) by its low end both ways, as the embedded store does.
"""

_NOT_ROWS = frozenset({"resource_type", "id", "last_updated"})


def resource_key(resource_type: str, id: str) -> str:
    """Return the ``_id`` of a resource's current document."""
    return f"{resource_type}/{id}"


def version_key(resource_type: str, id: str, version: int) -> str:
    """Return the ``_id`` of one version document (unique, so a lost race fails to insert)."""
    return f"{resource_type}/{id}/{version}"


def index_document(index: object | None) -> dict[str, Any] | None:
    """Return a ``SearchIndex`` (or any dataclass of row tables) as a sub-document.

    Known row tables get named fields (``ROW_FIELDS``); composites nest one sub-document per
    element; any other tuple field is kept as a list of lists, so new index fields are
    stored without a change here. The sort keys ``sa``/``sd`` (``SORT_FIELDS``) are added at
    the top level. Non-dataclass values (or None) give None.
    """
    out = _rows_of(index)
    if out is not None:
        out.update(_sort_keys(out))
    return out


def _sort_keys(rows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    least: dict[str, Any] = {}
    greatest: dict[str, Any] = {}
    for table, (ascending, descending) in SORT_FIELDS.items():
        own = [row for row in rows.get(table, ()) if row["p"] not in least]
        for code in dict.fromkeys(
            row["p"] for row in own
        ):  # one table per code: values stay comparable
            least[code] = min(row[ascending] for row in own if row["p"] == code)
            greatest[code] = max(row[descending] for row in own if row["p"] == code)
    return {"sa": least, "sd": greatest} if least else {}


def _rows_of(index: object | None) -> dict[str, Any] | None:
    if index is None or not dataclasses.is_dataclass(index) or isinstance(index, type):
        return None
    out: dict[str, Any] = {}
    for field in dataclasses.fields(index):
        if field.name in _NOT_ROWS:
            continue
        value = getattr(index, field.name)
        if value:
            out[field.name] = _rows_document(field.name, value)
    return out


def _rows_document(name: str, rows: Any) -> list[Any]:
    if name == "composites":
        return [{"p": code, "e": _rows_of(element)} for code, element in rows]
    names = ROW_FIELDS.get(name)
    if names is None:
        return [list(row) if isinstance(row, tuple) else row for row in rows]
    return [dict(zip(names, row, strict=True)) for row in rows]


def partition_key(resource_type: str, id: str, idx: dict[str, Any] | None) -> str:
    """Return the shard key value: the owning patient, else the resource's own key."""
    compartments = (idx or {}).get("compartments") or ()
    if resource_type == "Patient":
        return id
    return str(compartments[0]) if compartments else resource_key(resource_type, id)


def resource_document(
    stored: StoredResource, idx: dict[str, Any] | None, pk: str
) -> dict[str, Any]:
    """Return the current-resource document of ``stored``."""
    return {
        "_id": resource_key(stored.resource_type, stored.id),
        "type": stored.resource_type,
        "id": stored.id,
        "version": stored.version,
        "lastUpdated": stored.last_updated,
        "deleted": stored.deleted,
        "method": stored.method,
        "content": None if stored.deleted else stored.content,
        "pk": pk,
        "idx": None if stored.deleted else idx,
    }


def version_document(stored: StoredResource, seq: int, pk: str) -> dict[str, Any]:
    """Return the history document of ``stored``; ``until`` is set when it is replaced."""
    return {
        "_id": version_key(stored.resource_type, stored.id, stored.version),
        "type": stored.resource_type,
        "id": stored.id,
        "version": stored.version,
        "seq": seq,
        "lastUpdated": stored.last_updated,
        "until": None,
        "method": stored.method,
        "content": None if stored.deleted else stored.content,
        "pk": pk,
    }


def history_filter(query: HistoryQuery) -> dict[str, Any]:
    """Return the ``versions`` filter of a history query (sort by ``seq`` descending)."""
    clauses: list[dict[str, Any]] = []
    if query.resource_type is not None:
        clauses.append({"type": query.resource_type})
    if query.id is not None:
        clauses.append({"id": query.id})
    if query.since is not None:
        clauses.append({"lastUpdated": {"$gte": query.since}})
    if query.at is not None:
        # Current at the instant: written at or before it, not replaced at or before it.
        clauses.append({"lastUpdated": {"$lte": query.at}})
        clauses.append({"$or": [{"until": None}, {"until": {"$gt": query.at}}]})
    if query.before_seq is not None:
        clauses.append({"seq": {"$lt": query.before_seq}})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def stored_from_resource(doc: dict[str, Any]) -> StoredResource:
    """Return the ``StoredResource`` of a current-resource document."""
    return StoredResource(
        doc["type"], doc["id"], doc["version"], doc["lastUpdated"],
        bytes(doc["content"] or b""), doc["method"], bool(doc["deleted"]),
    )  # fmt: skip


def stored_from_page(doc: dict[str, Any]) -> StoredResource:
    """Return the ``StoredResource`` of a search page's document (a match or an included
    resource) with the patients of its compartments as indexed (``idx.compartments``, the
    rows the embedded store keeps in ``search_compartment``): what the page's AuditEvents
    name, without parsing its content."""
    compartments = (doc.get("idx") or {}).get("compartments") or ()
    return StoredResource(
        doc["type"], doc["id"], doc["version"], doc["lastUpdated"],
        bytes(doc["content"] or b""), doc["method"], bool(doc["deleted"]),
        frozenset(compartments),
    )  # fmt: skip


def stored_from_version(doc: dict[str, Any]) -> StoredResource:
    """Return the ``StoredResource`` of a version document (a deletion has no content)."""
    content = doc["content"]
    return StoredResource(
        doc["type"], doc["id"], doc["version"], doc["lastUpdated"],
        bytes(content or b""), doc["method"], content is None,
    )  # fmt: skip

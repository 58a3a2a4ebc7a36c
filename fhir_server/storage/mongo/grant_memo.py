"""Consent grants remembered by a MongoDB store while they do not change (docs/mongodb.md).

Every write that changes a Consent's grants (``idx.grants``: created, changed, revoked,
deleted, reindexed) also increments, in the same multi-document transaction, a counter per
patient and per actor those grants name (collection ``consent_changes``, ``_id``
``patient|<id>`` and ``actor|<name>``; ``GrantChange``). A store remembers the grants it read
with the counters it read just before them (``GrantMemo``): a later read costs one ``find``
of those counters by ``_id``, and answers from memory only while they are the same, so a
Consent change by any server process applies to the next request of every other one, and
writes of anything else (AuditEvents, visits, another patient's or another caller's
Consents) keep what was read. The periods of the grants are judged at each use, so an
expiring Consent stops applying on time without a write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any

from fhir_server.search.model import Grant

__all__ = ["CHANGES", "GrantMemo", "actor_key", "changed_keys", "counters", "keys_of",
           "patient_key"]

#: The collection of the counters of grant changes.
CHANGES = "consent_changes"


def patient_key(patient: str) -> str:
    """The counter of the changes of the grants about ``patient``."""
    return f"patient|{patient}"


def actor_key(actor: str) -> str:
    """The counter of the changes of the grants naming ``actor`` (``*``: everyone)."""
    return f"actor|{actor}"


def changed_keys(before: dict[str, Any] | None, after: dict[str, Any] | None
                 ) -> tuple[str, ...]:
    """The counters a write from search index ``before`` to ``after`` must increment: those
    of every patient and actor of the grants of either, when the grants differ (none when
    they are the same, as for any resource that is not a Consent)."""
    old, new = _grant_rows(before), _grant_rows(after)
    if old == new:
        return ()
    rows = [*old, *new]
    return tuple(sorted({patient_key(str(row["pt"])) for row in rows}
                        | {actor_key(str(row["a"])) for row in rows}))


def _grant_rows(idx: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((idx or {}).get("grants") or ())


class GrantMemo:
    """The grants last read per question (a caller's names, or some patients), each with the
    counters of the changes of the grants it depends on when it was read. The counters are
    read before the grants: a change committed in between is read again next time. The same
    list is handed out while nothing changed (the policy's caches key on it)."""

    _LIMIT = 4096

    def __init__(self) -> None:
        self._read: dict[Hashable, tuple[tuple[int, ...], list[Grant]]] = {}

    async def read(self, db: Any, question: Hashable, keys: Sequence[str],
                   load: Callable[[], Awaitable[list[Grant]]]) -> list[Grant]:
        """``load()``'s grants, from memory while the counters ``keys`` did not change."""
        counts = await counters(db, keys)
        known = self._read.get(question)
        if known is not None and known[0] == counts:
            return known[1]
        grants = await load()
        if len(self._read) >= self._LIMIT:
            self._read.clear()
        self._read[question] = (counts, grants)
        return grants


async def counters(db: Any, keys: Sequence[str]) -> tuple[int, ...]:
    """The counters ``keys`` in order (0: never changed since counted), in one ``find``."""
    found: dict[str, int] = {}
    async for doc in db[CHANGES].find({"_id": {"$in": list(keys)}}, projection={"n": 1}):
        found[str(doc["_id"])] = int(doc["n"])
    return tuple(found.get(key, 0) for key in keys)


def keys_of(patients: Iterable[str] = (), actors: Iterable[str] = ()) -> tuple[str, ...]:
    """The counters a read of the grants about ``patients`` or naming ``actors`` depends on."""
    return (*(patient_key(p) for p in patients), *(actor_key(a) for a in actors))

"""What was written after an export's snapshot: the resources an export must not take from
its searches (they show the resources as they are now) but from history, as they were.

The set grows as the export reads the store's write order (``port.WriteLog``) after each
page; it holds one small entry per resource written since the snapshot, so its size follows
the writes made while the export runs, not the size of the store. For each resource it keeps
its row id (searches page in row id order), whether it existed at the snapshot, and the
patients in whose compartments it was then.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from fhir_server.search.indexing import compartment_patients
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.port import StoredResource, WriteLog

__all__ = ["ChangeSet", "Changed"]

_BATCH = 1000


@dataclass(frozen=True)
class Changed:
    """A resource written after the snapshot: what it was at the snapshot."""

    resource_type: str
    id: str
    rid: int
    existed: bool
    patients: frozenset[str] = frozenset()


class ChangeSet:
    """The resources written after ``position`` in ``log``'s write order, as far as read."""

    def __init__(self, log: WriteLog, position: int, registry: SearchParameterRegistry) -> None:
        self.log = log
        self.position = position
        self.registry = registry
        self.read_up_to = position
        self._found: dict[tuple[str, str], Changed] = {}
        self._rids: dict[str, list[int]] = {}
        self._by_rid: dict[str, dict[int, Changed]] = {}
        self._by_patient: dict[str, list[Changed]] = {}

    def __len__(self) -> int:
        return len(self._found)

    async def refresh(self) -> None:
        """Read the writes made since the last refresh."""
        while True:
            batch = await self.log.changes_after(self.read_up_to, _BATCH)
            for change in batch:
                key = (change.resource_type, change.id)
                if key not in self._found:
                    self._add(await self._as_it_was(change.resource_type, change.id,
                                                    change.rid))
            if batch:
                self.read_up_to = batch[-1].seq
            if len(batch) < _BATCH:
                return

    async def _as_it_was(self, kind: str, id: str, rid: int) -> Changed:
        before = await self.log.version_at(kind, id, self.position)
        if before is None or before.deleted:
            return Changed(kind, id, rid, existed=False)
        return Changed(kind, id, rid, True, compartment_patients(before.resource(),
                                                                  self.registry))

    def _add(self, changed: Changed) -> None:
        self._found[changed.resource_type, changed.id] = changed
        bisect.insort(self._rids.setdefault(changed.resource_type, []), changed.rid)
        self._by_rid.setdefault(changed.resource_type, {})[changed.rid] = changed
        for patient in changed.patients:
            self._by_patient.setdefault(patient, []).append(changed)

    def changed(self, resource_type: str, id: str) -> bool:
        """Whether the resource was written after the snapshot."""
        return (resource_type, id) in self._found

    def within(self, types: Iterable[str], after: int, upto: int | None) -> list[Changed]:
        """The resources of ``types`` that existed at the snapshot and were written since,
        whose row ids are in (after, upto] (``upto`` None: no bound)."""
        found: list[Changed] = []
        for kind in types:
            rids = self._rids.get(kind, [])
            start = bisect.bisect_right(rids, after)
            stop = len(rids) if upto is None else bisect.bisect_right(rids, upto)
            found += [self._by_rid[kind][rid] for rid in rids[start:stop]]
        return [changed for changed in found if changed.existed]

    def of_patient(self, patient: str, types: Iterable[str], after: int,
                   upto: int | None) -> list[Changed]:
        """Like :meth:`within`, for the resources then in ``patient``'s compartment."""
        wanted = set(types)
        return [changed for changed in self._by_patient.get(patient, ())
                if changed.resource_type in wanted and changed.rid > after
                and (upto is None or changed.rid <= upto)]

    async def as_it_was(self, changed: Changed) -> StoredResource | None:
        """The version of a changed resource current at the snapshot (None: none)."""
        found = await self.log.version_at(changed.resource_type, changed.id, self.position)
        return None if found is None or found.deleted else found

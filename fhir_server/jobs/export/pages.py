"""Pages of a segment as they were at the export's snapshot: a consistent read of a store
that others keep writing, without holding a read transaction open for the whole export.

A page is a keyset page of the segment's search: the matches with row ids in (after, upto],
where ``upto`` is the row id of the page's last match (the cursor's), or unbounded for the
last page. After the search has run, the export reads the writes made since its snapshot
(``ChangeSet.refresh``). Then every resource whose row id is in the page's range is one of:

- not written since the snapshot: the search saw it as it was at the snapshot, and judged
  it by its index of then; it is kept if the search returned it;
- written since (it is in the change set, which was read after the search ran, so the
  search may have seen either version): the page drops it, and takes instead the version
  that was current at the snapshot, from history, judged in memory by the same query
  (``Segment.judge``: ``search.matching``, the statement the stores' compilers agree with).

Pages of one segment cover disjoint row ranges, each read once, so nothing is repeated or
missed; a resource created after the snapshot has no version then and is left out. A
query that needs other resources to be judged (a chain, ``_has``) judges a changed resource
against the data of now instead (docs/bulk-export.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fhir_server.jobs.export.changes import Changed, ChangeSet
from fhir_server.jobs.export.plan import Segment
from fhir_server.search.cursor import Cursor, decode_cursor, encode_cursor
from fhir_server.search.indexing import compartment_patients, index_resource
from fhir_server.search.model import Grant
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.port import ResourceStore, StoredResource

__all__ = ["Page", "read_page"]


@dataclass(frozen=True)
class Page:
    """What one page adds to the export (as at the snapshot) and the row id it reached
    (``upto``; None when the segment is done)."""

    resources: list[StoredResource]
    upto: int | None


async def read_page(store: ResourceStore, segment: Segment, changes: ChangeSet, after: int,
                    registry: SearchParameterRegistry, patient: str | None = None) -> Page:
    """The page of ``segment`` after row id ``after`` (0: the first); ``patient``: the
    patient whose compartment the segment searches (its changed resources are those then
    in that compartment)."""
    query = segment.query
    if after:
        query = replace(query, cursor=encode_cursor(query, Cursor((), after)))
    result = await store.search(query)
    await changes.refresh()
    upto = decode_cursor(query, result.next_cursor).rid if result.next_cursor else None
    kept = [found for found in result.matches
            if not changes.changed(found.resource_type, found.id)]
    if segment.earlier:
        kept = [found for found in kept if not _earlier(segment, found, registry)]
    changed = (changes.of_patient(patient, segment.types, after, upto) if patient is not None
               else changes.within(segment.types, after, upto))
    for resource in changed:
        version = await _as_it_was(store, segment, changes, resource, registry)
        if version is not None:
            kept.append(version)
    return Page(kept, upto)


def _earlier(segment: Segment, found: StoredResource, registry: SearchParameterRegistry) -> bool:
    """Whether an earlier alternative of the segment's type holds ``found`` already (the
    search found it: the caller may see it)."""
    return segment.held_earlier(index_resource(found.resource(), registry))


async def _grants(store: ResourceStore, segment: Segment, resource: dict[str, object],
                  registry: SearchParameterRegistry) -> list[Grant]:
    """The Consent grants of the resource's patients, if the segment's caller needs them."""
    if not segment.needs_grants():
        return []
    patients = sorted(compartment_patients(resource, registry))
    return await store.consent_grants(patients) if patients else []


async def _as_it_was(store: ResourceStore, segment: Segment, changes: ChangeSet,
                     resource: Changed, registry: SearchParameterRegistry
                     ) -> StoredResource | None:
    """The snapshot's version of a changed resource, if the segment holds it."""
    version = await changes.as_it_was(resource)
    if version is None:
        return None
    content = version.resource()
    held = segment.judge(content, registry, await _grants(store, segment, content, registry))
    if held is None:  # a chain or _has: judged on the data of now
        by_id = parse_search(resource.resource_type, [("_id", resource.id)], registry)
        query = replace(segment.query, clauses=segment.query.clauses + by_id.query.clauses,
                        cursor=None)
        held = bool((await store.search(query)).matches)
    return version if held else None

"""The steps of a transaction's writes: find every criterion of the Bundle at once, fix each
entry's target in processing order, point references at their targets, check referential
integrity, then apply each prepared ``Write``.

The resolution also runs once outside the write lock, on committed data
(:func:`optimistic_indexes`), so that the search indexes of the resources it resolves are
computed there; under the lock an entry reuses its index when the real resolution left the
resource as the optimistic one did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

from fhir_server.errors import BadRequest, FhirError
from fhir_server.interactions.bundle_entries import (
    ORDER,
    Entry,
    Optimistic,
    Signature,
    at_entry,
    conditional_reference,
    query_pairs,
    rewrite_references,
    status_text,
)
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.prepare import parse_criteria
from fhir_server.interactions.references import local_target
from fhir_server.interactions.write import apply, match_single, resolve_target
from fhir_server.outcomes import operation_outcome
from fhir_server.resources import is_resource_type
from fhir_server.search.indexing import renamed_index
from fhir_server.search.model import SearchQuery
from fhir_server.security.audit import AuditNote
from fhir_server.security.scopes import Interaction
from fhir_server.storage.port import StoreTransaction

__all__ = [
    "NotPrefetched",
    "PrefetchedFinds",
    "check_integrity",
    "execute",
    "located",
    "note_renames",
    "optimistic_indexes",
    "ordered",
    "resolve_entries",
]

T = TypeVar("T")
FindMany = Callable[[list[SearchQuery]], Awaitable[list[list[str]]]]


class NotPrefetched(Exception):
    """A criterion that was not found beforehand, where no transaction can find it."""


def _conditional_query(services: Services, entry: Entry, reference: str) -> SearchQuery | None:
    """The search of a conditional reference of the entry (limited to what its caller may
    see), parsed once per entry; None for another kind of reference."""
    found = conditional_reference(reference)
    if found is None or not is_resource_type(found[0]):
        return None
    cached = entry.conditions.get(reference)
    if cached is None:
        assert entry.access is not None
        cached = parse_criteria(services, entry.access, found[0], query_pairs(found[1]))
        entry.conditions[reference] = cached
    return cached


class PrefetchedFinds:
    """A transaction whose ``find`` answers from the Bundle's criteria found set-wise.

    Before anything of a transaction is written, every criterion it holds (``ifNoneExist``,
    conditional update, patch and delete, conditional references) is found with one
    ``find_many`` call; resolving targets and references then asks this object, which
    answers from those results and passes anything else on to ``tx`` (or raises
    ``NotPrefetched`` without one). Only valid until the first write.
    """

    def __init__(self, tx: StoreTransaction | None, found: dict[int, list[str]]) -> None:
        self._tx = tx
        self._found = found

    @classmethod
    async def of(
        cls, tx: StoreTransaction | None, services: Services, entries: list[Entry],
        find_many: FindMany,
    ) -> PrefetchedFinds:
        """Find every criterion of ``entries`` at once with ``find_many``.

        Criteria are told apart by identity: parsing remembers each distinct criterion, so
        the same search is the same object (hashing a query costs more than its dict look-up
        saves); one not found here is found again by the transaction.
        """
        queries: dict[int, SearchQuery] = {}
        for entry in entries:
            write = entry.write
            if write is None:
                continue
            for query in (write.if_none_exist, write.criteria):
                if query is not None:
                    queries[id(query)] = query
            for holder in entry.holders:
                try:
                    query = _conditional_query(services, entry, holder["reference"])
                except FhirError:
                    continue  # an invalid criterion fails later, at its own entry
                if query is not None:
                    queries[id(query)] = query
        keys = list(queries)
        try:
            answers = await find_many(list(queries.values())) if keys else []
        except FhirError:
            answers = None
        found = dict(zip(keys, answers, strict=True)) if answers is not None else {}
        return cls(tx, found)

    async def find(self, query: SearchQuery) -> list[str]:
        """The prefetched answer, or the transaction's own ``find``."""
        answer = self._found.get(id(query))
        if answer is not None:
            return list(answer)
        if self._tx is None:
            raise NotPrefetched(query.resource_type)
        return await self._tx.find(query)


async def located(entry: Entry, step: Awaitable[T]) -> T:
    """Await ``step``; a ``FhirError`` it raises is re-raised located at the entry."""
    try:
        return await step
    except FhirError as exc:
        raise at_entry(exc, entry.index, entry.resource_type) from None


def ordered(entries: list[Entry]) -> list[Entry]:
    """The entries in processing order (DELETE, POST, PUT/PATCH, GET), else as given."""
    return sorted(entries, key=lambda e: (ORDER[e.method], e.index))


async def resolve_entries(
    tx: StoreTransaction | None, services: Services, entries: list[Entry], find_many: FindMany
) -> None:
    """Fix every write's target and rewrite its references, in processing order, from the
    Bundle's criteria found at once with ``find_many`` (``tx`` finds anything else; without
    one, ``NotPrefetched``). A failure raises located at its ``Bundle.entry[n]``."""
    writes = [entry for entry in ordered(entries) if entry.write is not None]
    finds = cast(StoreTransaction, await PrefetchedFinds.of(tx, services, writes, find_many))
    for entry in writes:
        await located(entry, _resolve_target(finds, entry))
    targets = _fullurl_targets(writes)
    for entry in writes:
        await located(entry, _resolve_references(finds, services, entry, targets))


async def _resolve_target(finds: StoreTransaction, entry: Entry) -> None:
    """Fix the entry's target id: conditional matches come from ``finds``."""
    write = entry.write
    assert write is not None
    if write.if_none_exist is not None:
        found = await match_single(finds, write.if_none_exist)
        write.if_none_exist = None
        if found is not None:
            entry.existing = write.id = found
        return
    if write.criteria is None:
        return
    if write.interaction is Interaction.DELETE:
        write.id = await match_single(finds, write.criteria)
    else:
        await resolve_target(finds, write)
    write.criteria = None


def _fullurl_targets(entries: list[Entry]) -> dict[str, str]:
    """Map each entry's ``fullUrl`` to ``Type/id``; two writes of one resource are an error."""
    targets: dict[str, str] = {}
    written: dict[str, int] = {}
    for entry in entries:
        key = entry.target
        if key is None:
            continue
        if entry.existing is None:
            if key in written:
                raise BadRequest(f"Bundle.entry[{written[key]}] and Bundle.entry[{entry.index}] "
                                 f"both change {key}", message_id="MSG_BUNDLE_DUPLICATE")
            written[key] = entry.index
        if entry.full_url:
            targets[entry.full_url] = key
    return targets


async def _resolve_references(
    finds: StoreTransaction, services: Services, entry: Entry, targets: dict[str, str]
) -> None:
    """Rewrite the entry resource's references (fullUrls and conditional references)."""
    if not entry.holders or entry.existing is not None:
        return

    async def resolve(kind: str, query: str) -> str:
        search = _conditional_query(services, entry, f"{kind}?{query}")
        assert search is not None
        ids = await finds.find(search)
        if len(ids) != 1:
            raise BadRequest(f"A conditional reference to {kind} matched {len(ids)} "
                             "resources; exactly one is required",
                             message_id="MSG_BUNDLE_CONDITIONAL_REFERENCE")
        return ids[0]

    await rewrite_references(entry.holders, targets, resolve)


# -- the resolution outside the lock -----------------------------------------------------------


class Sharing(Protocol):
    """Something to call between steps of computation (``bundle.Turn``)."""

    async def share(self) -> None: ...


async def optimistic_indexes(
    services: Services, entries: list[Entry], turn: Sharing | None = None
) -> None:
    """Resolve the Bundle outside the write lock, index its resources there, and undo the
    resolution.

    Uses the store's ``find_many`` on committed data (stores without one skip this). Each
    entry that would be written keeps, in ``optimistic``, its target and the signature of
    its resolved resource (its id and the values of its references, the only things the
    resolution changes) with that resource's index. Under the lock the real resolution runs
    again, and an index is reused only when it left the same signature
    (:func:`precomputed_index`): a concurrent change costs a recomputation, never a wrong
    index. Resolving in place and restoring costs less than resolving a copy.
    """
    find_many = getattr(services.store, "find_many", None)
    if find_many is None or services.registry is None:
        return
    snapshots = [_Snapshot(entry) for entry in entries if entry.write is not None]
    found: list[tuple[Entry, Optimistic]] = []
    try:
        await resolve_entries(None, services, entries, find_many)
        for snapshot in snapshots:
            entry = snapshot.entry
            optimistic = Optimistic(entry.target)
            if _resolvable(entry) and entry.existing is None:
                assert entry.resource is not None
                optimistic.signature = _signature(entry)
                optimistic.index = services.index(entry.resource)
            found.append((entry, optimistic))
            if turn is not None:
                await turn.share()
    except (FhirError, NotPrefetched):
        found = []  # the transaction finds the error (or the answer) under the lock
    finally:
        for snapshot in snapshots:
            snapshot.restore()
    for entry, optimistic in found:
        entry.optimistic = optimistic


class _Snapshot:
    """What resolving an entry changes, as it was before: its write's target, criteria and
    index, the resource's id and the values of its references."""

    def __init__(self, entry: Entry) -> None:
        write = entry.write
        assert write is not None
        self.entry = entry
        self.fields = (write.id, write.criteria, write.if_none_exist, write.index)
        self.references = [(holder, holder["reference"]) for holder in entry.holders]
        self.resource_id = (entry.resource or {}).get("id", _ABSENT)

    def restore(self) -> None:
        entry, write = self.entry, self.entry.write
        assert write is not None
        write.id, write.criteria, write.if_none_exist, write.index = self.fields
        entry.existing = None
        if entry.resource is not None:
            if self.resource_id is _ABSENT:
                entry.resource.pop("id", None)
            else:
                entry.resource["id"] = self.resource_id
        for holder, reference in self.references:
            holder["reference"] = reference


_ABSENT = object()


def _resolvable(entry: Entry) -> bool:
    return entry.resource is not None and entry.method in ("POST", "PUT")


def _signature(entry: Entry) -> Signature:
    resource = entry.resource or {}
    return resource.get("id"), tuple(holder["reference"] for holder in entry.holders)


def note_renames(entries: list[Entry]) -> None:
    """After the resolution under the lock: which targets differ from the optimistic ones.

    The usual cause: another Bundle created the Patient (or Organization) meanwhile, so the
    conditional create planned here became a match, and every resource of this Bundle
    refers to the existing one instead of the planned id.
    """
    renames = {entry.optimistic.target: entry.target for entry in entries
               if entry.optimistic is not None and entry.optimistic.target is not None
               and entry.target is not None and entry.optimistic.target != entry.target}
    if renames:
        for entry in entries:
            entry.renames = renames


def precomputed_index(entry: Entry) -> object | None:
    """The index computed outside the lock, if the resolution under it changed the resource
    in the same way; when it differs only by renamed targets, that index patched."""
    optimistic = entry.optimistic
    if optimistic is None or optimistic.signature is None:
        return None
    found = _signature(entry)
    if found == optimistic.signature:
        return optimistic.index
    resource_id, references = optimistic.signature
    renames = entry.renames
    if renames and (resource_id, tuple(renames.get(r, r) for r in references)) == found:
        return renamed_index(optimistic.index, renames)  # type: ignore[arg-type]
    return None


# -- under the lock ----------------------------------------------------------------------------


async def check_integrity(services: Services, tx: StoreTransaction, entries: list[Entry]) -> None:
    """Refuse local references to resources that exist neither here nor in the Bundle (one
    query per 400 references)."""
    if not services.settings.referential_integrity:
        return
    written = {e.target for e in entries if e.target and e.method != "DELETE"}
    wanted: dict[tuple[str, str], int] = {}
    for entry in entries:
        if (not _resolvable(entry) or entry.existing is not None
                or entry.resource_type == "AuditEvent"):  # see write.check_references
            continue
        for holder in entry.holders:
            target = local_target(holder["reference"], services.base_url)
            if target and f"{target[0]}/{target[1]}" not in written:
                wanted.setdefault(target, entry.index)
    missing = set(wanted) - await tx.existing(list(wanted)) if wanted else set()
    if missing:
        first = min(missing, key=lambda t: wanted[t])
        raise BadRequest(
            f"Bundle.entry[{wanted[first]}]: reference {first[0]}/{first[1]} points to a "
            "resource that does not exist", message_id="MSG_REFERENCE_NOT_FOUND",
            expression=(f"Bundle.entry[{wanted[first]}].resource",))


async def execute(
    services: Services, tx: StoreTransaction, entry: Entry, note: AuditNote
) -> dict[str, Any]:
    """Apply the entry's write inside ``tx``; return its ``Bundle.entry`` of the response."""
    write = entry.write
    assert write is not None
    if entry.existing is not None:
        return _response(Outcome(200, await tx.read(entry.resource_type, entry.existing)))
    if entry.optimistic is not None or entry.holders:
        # References were resolved since prepare: the index of the content as it is now.
        write.index = precomputed_index(entry)
    outcome = await apply(tx, services, write, note, integrity=False)
    return _response(outcome, write.issues)


def _response(outcome: Outcome, issues: Sequence[Any] = ()) -> dict[str, Any]:
    stored = outcome.stored
    response: dict[str, Any] = {"status": status_text(outcome.status)}
    if stored is not None and not stored.deleted and outcome.status != 204:
        response["location"] = f"{stored.resource_type}/{stored.id}/_history/{stored.version}"
        response["etag"] = f'W/"{stored.version}"'
        response["lastModified"] = stored.last_updated
    if issues:
        response["outcome"] = operation_outcome(list(issues))
    return {"response": response}

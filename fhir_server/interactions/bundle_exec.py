"""The steps of processing one Bundle entry inside a store transaction: resolve its target,
rewrite its references, check referential integrity, execute it, describe the response."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson

from fhir_server.errors import BadRequest, FhirError, Gone, NotFound, PreconditionFailed
from fhir_server.interactions import read
from fhir_server.interactions.bundle_entries import (
    ORDER,
    PlannedEntry,
    at_entry,
    query_pairs,
    references_in,
    rewrite_references,
    status_text,
)
from fhir_server.interactions.context import Outcome, Services, new_id
from fhir_server.interactions.create import create_in
from fhir_server.interactions.patch import apply_patch
from fhir_server.interactions.preconditions import parse_version_tag
from fhir_server.interactions.prepare import match_single, prepare_resource
from fhir_server.interactions.update import check_body_id, resolve_conditional_id, update_in
from fhir_server.outcomes import operation_outcome
from fhir_server.resources import is_resource_type
from fhir_server.search.indexing import renamed_index
from fhir_server.security import guard
from fhir_server.storage.port import StoredResource, StoreTransaction

__all__ = [
    "NotPrefetched",
    "PrefetchedFinds",
    "check_integrity",
    "check_put_id",
    "execute",
    "fullurl_targets",
    "located",
    "note_renames",
    "optimistic_indexes",
    "patch_operations",
    "precomputed_index",
    "reference_holders",
    "resolve_entries",
    "resolve_references",
    "resolve_target",
]


def check_put_id(entry: PlannedEntry) -> None:
    """A PUT ``Type/id`` entry's resource must carry that id."""
    assert entry.resource is not None and entry.id is not None
    check_body_id(entry.resource, entry.id)


def patch_operations(entry: PlannedEntry) -> None:
    """Decode a PATCH entry's Binary (``application/json-patch+json``) into operations."""
    resource = entry.resource or {}
    if resource.get("resourceType") != "Binary" or not str(
        resource.get("contentType", "")
    ).startswith("application/json-patch+json"):
        raise BadRequest("A PATCH entry carries a Binary with a JSON Patch document "
                         "(FHIRPath Patch is not supported)", message_id="MSG_PATCH_INVALID")
    try:
        entry.extra["operations"] = orjson.loads(base64.b64decode(resource.get("data", "")))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest("The PATCH entry's Binary.data is not base64 JSON",
                         message_id="MSG_PATCH_INVALID") from None


def reference_holders(entry: PlannedEntry) -> list[dict[str, Any]]:
    """The objects of the entry's resource that carry a ``reference`` (found once; the
    rewriting of references changes their values, not which objects hold them)."""
    holders = entry.extra.get("reference_holders")
    if holders is None:
        holders = entry.extra["reference_holders"] = references_in(entry.resource)
    return list(holders)


T = TypeVar("T")
FindMany = Callable[[list[tuple[str, Sequence[tuple[str, str]]]]], Awaitable[list[list[str]]]]


class NotPrefetched(Exception):
    """A criterion that was not found beforehand, where no transaction can find it."""


class PrefetchedFinds:
    """A transaction whose ``find`` answers from the Bundle's criteria found set-wise.

    Before anything of a transaction is written, every criterion it holds (``ifNoneExist``,
    conditional update, patch and delete, conditional references) is found with one
    ``find_many`` call; resolving targets and references then asks this object, which answers
    from those results and passes anything else on to ``tx`` (or raises ``NotPrefetched``
    without one). Only valid until the first write.
    """

    def __init__(
        self, tx: StoreTransaction | None, found: dict[tuple[str, tuple[Any, ...]], list[str]]
    ) -> None:
        self._tx = tx
        self._found = found

    @classmethod
    async def of(
        cls, tx: StoreTransaction | None, entries: list[PlannedEntry], find_many: FindMany
    ) -> PrefetchedFinds:
        """Find every criterion of ``entries`` at once with ``find_many``."""
        queries: dict[tuple[str, tuple[Any, ...]], None] = {}
        for entry in entries:
            if entry.method == "POST" and entry.if_none_exist:
                queries[(entry.resource_type, tuple(_criteria(entry.if_none_exist)))] = None
            elif entry.query is not None and entry.method in ("PUT", "DELETE", "PATCH"):
                queries[(entry.resource_type, tuple(entry.criteria))] = None
            if entry.resource is not None and entry.method in ("POST", "PUT"):
                for holder in reference_holders(entry):
                    kind, mark, query = holder["reference"].partition("?")
                    if mark and "/" not in kind and is_resource_type(kind):
                        queries[(kind, tuple(query_pairs(query)))] = None
        keys = list(queries)
        try:
            answers = await find_many([(kind, list(params)) for kind, params in keys])
        except FhirError:
            answers = None  # an invalid criterion fails later, at its own entry
        found = dict(zip(keys, answers, strict=True)) if answers is not None else {}
        return cls(tx, found)

    async def find(self, resource_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
        """The prefetched answer, or the transaction's own ``find``."""
        answer = self._found.get((resource_type, tuple(params)))
        if answer is not None:
            return list(answer)
        if self._tx is None:
            raise NotPrefetched(resource_type)
        return await self._tx.find(resource_type, params)

    def __getattr__(self, name: str) -> Any:
        if self._tx is None:
            raise NotPrefetched(name)
        return getattr(self._tx, name)


async def resolve_entries(
    tx: StoreTransaction | None, entries: list[PlannedEntry], find_many: FindMany
) -> None:
    """Fix every entry's target and rewrite its references, in processing order, from the
    Bundle's criteria found at once with ``find_many`` (``tx`` finds anything else; without
    one, ``NotPrefetched``). A failure raises located at its ``Bundle.entry[n]``."""
    ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
    finds = cast(StoreTransaction, await PrefetchedFinds.of(tx, entries, find_many))
    for entry in ordered:
        await located(entry, resolve_target(finds, entry))
    targets = fullurl_targets(entries)
    for entry in ordered:
        await located(entry, resolve_references(finds, entry, targets))


async def located(entry: PlannedEntry, step: Awaitable[T]) -> T:
    """Await ``step``; a ``FhirError`` it raises is re-raised located at the entry."""
    try:
        return await step
    except FhirError as exc:
        raise at_entry(exc, entry.index, entry.resource_type) from None


async def optimistic_indexes(services: Services, entries: list[PlannedEntry]) -> None:
    """Resolve the Bundle outside the write lock, index its resources there, and undo the
    resolution.

    Uses the store's ``find_many`` on committed data (stores without one skip this). Each
    entry that would be written keeps ``(signature, index)`` in ``extra["optimistic"]``: the
    signature is what the resolution changed in the resource (its id and the values of its
    references, ``resolution_signature``), and nothing else changes it. Inside the transaction
    the real resolution runs again, and the index is reused only when it left the same
    signature (``precomputed_index``), so a concurrent change costs a recomputation, never a
    wrong index. Resolving in place and undoing it costs less than resolving a copy (no copy
    of the resources, no second walk for their references, no deep comparison under the lock).
    """
    find_many = getattr(services.store, "find_many", None)
    if find_many is None or services.registry is None:
        return
    for entry in entries:
        if entry.query is not None and entry.method == "PUT" and "fresh_id" not in entry.extra:
            entry.extra["fresh_id"] = new_id()  # the same id outside the lock and inside it
    unresolved = [_Unresolved(entry) for entry in entries]
    planned: list[tuple[str | None, tuple[Signature, object] | None]] = []
    try:
        await resolve_entries(None, entries, find_many)
        for entry in entries:
            target = f"{entry.resource_type}/{entry.id}" if entry.id is not None else None
            optimistic = None
            if _resolvable(entry) and "existing" not in entry.extra:
                assert entry.resource is not None
                optimistic = (resolution_signature(entry), services.index(entry.resource))
            planned.append((target, optimistic))
    except (FhirError, NotPrefetched):
        planned = []  # the transaction finds the error (or the answer) under the lock
    finally:
        for saved in unresolved:
            saved.restore()
    for entry, (target, optimistic) in zip(entries, planned, strict=False):
        if target is not None:
            entry.extra["copy_target"] = target
        if optimistic is not None:
            entry.extra["optimistic"] = optimistic


class _Unresolved:
    """What resolving an entry changes, as it was before: its id and extras, its resource's
    id, and the values of its references."""

    def __init__(self, entry: PlannedEntry) -> None:
        self.entry = entry
        self.references = [(holder, holder["reference"]) for holder in
                           (reference_holders(entry) if _resolvable(entry) else ())]
        self.id = entry.id
        self.extra = dict(entry.extra)
        resource = entry.resource
        self.resource_id = resource.get("id", _ABSENT) if resource is not None else _ABSENT

    def restore(self) -> None:
        entry = self.entry
        entry.id = self.id
        entry.extra.clear()
        entry.extra.update(self.extra)
        if entry.resource is not None:
            if self.resource_id is _ABSENT:
                entry.resource.pop("id", None)
            else:
                entry.resource["id"] = self.resource_id
        for holder, reference in self.references:
            holder["reference"] = reference


_ABSENT = object()
#: A resource's id and the values of its references, after resolution.
Signature = tuple[object, tuple[str, ...]]


def _resolvable(entry: PlannedEntry) -> bool:
    return entry.resource is not None and entry.method in ("POST", "PUT")


def resolution_signature(entry: Any) -> Signature:
    """What resolving the entry set in its resource: its id and its references' values
    (``reference_holders``, the objects resolution rewrites)."""
    resource = entry.resource or {}
    return resource.get("id"), tuple(holder["reference"] for holder in reference_holders(entry))


def note_renames(entries: list[PlannedEntry]) -> None:
    """After the resolution under the lock: which targets differ from the copy's.

    The usual cause: another Bundle created the Patient (or Organization) meanwhile, so the
    conditional create the copy planned became a match, and every resource of this Bundle
    refers to the existing one instead of the planned id.
    """
    renames = {entry.extra["copy_target"]: f"{entry.resource_type}/{entry.id}"
               for entry in entries
               if "copy_target" in entry.extra and entry.id is not None
               and entry.extra["copy_target"] != f"{entry.resource_type}/{entry.id}"}
    if renames:
        for entry in entries:
            entry.extra["renames"] = renames


def precomputed_index(entry: PlannedEntry) -> object | None:
    """The index computed outside the lock, if the resolution under it changed the resource
    in the same way (the same ``resolution_signature``).

    When the only differences are references to targets resolved differently under the lock
    (``note_renames``), the index is patched instead of recomputed under the lock.
    """
    optimistic = entry.extra.get("optimistic")
    if optimistic is None:
        return None
    signature, index = optimistic
    found = resolution_signature(entry)
    if found == signature:
        return cast(object, index)
    renames = entry.extra.get("renames")
    resource_id, references = signature
    if renames and (resource_id, tuple(renames.get(r, r) for r in references)) == found:
        return renamed_index(index, renames)
    return None


async def resolve_target(tx: StoreTransaction, entry: PlannedEntry) -> None:
    """Fix the entry's target id: conditional matches are searched inside the transaction."""
    if entry.method == "POST":
        assert entry.resource is not None
        if entry.if_none_exist:
            params = _criteria(entry.if_none_exist)
            existing = await match_single(tx, entry.resource_type, params)
            if existing is not None:
                entry.extra["existing"] = existing
                entry.id = existing
                return
        entry.id = entry.resource["id"]
    elif entry.query is not None and entry.method == "PUT":
        assert entry.resource is not None
        # The id a non-matching conditional PUT creates is drawn once per entry, so that
        # resolving a copy outside the lock and the entry inside it agree.
        if "fresh_id" not in entry.extra:
            entry.extra["fresh_id"] = new_id()
        await resolve_conditional_id(tx, entry.resource, entry.criteria, entry.extra["fresh_id"])
        entry.id = entry.resource["id"]
    elif entry.query is not None and entry.method in ("DELETE", "PATCH"):
        entry.id = await match_single(tx, entry.resource_type, entry.criteria)
        if entry.id is None and entry.method == "PATCH":
            raise NotFound("The conditional PATCH matched no resource",
                           message_id="MSG_NO_MATCH")


def _criteria(query: str) -> list[tuple[str, str]]:
    return query_pairs(query.lstrip("?"))


def fullurl_targets(entries: list[PlannedEntry]) -> dict[str, str]:
    """Map each entry's ``fullUrl`` to ``Type/id``; two writes of one resource are an error."""
    targets: dict[str, str] = {}
    written: dict[str, int] = {}
    for entry in entries:
        if entry.id is None or entry.method == "GET":
            continue
        key = f"{entry.resource_type}/{entry.id}"
        if entry.method != "POST" or "existing" not in entry.extra:
            if key in written:
                raise BadRequest(f"Bundle.entry[{written[key]}] and Bundle.entry[{entry.index}] "
                                 f"both change {key}", message_id="MSG_BUNDLE_DUPLICATE")
            written[key] = entry.index
        if entry.full_url:
            targets[entry.full_url] = key
    return targets


async def resolve_references(
    tx: StoreTransaction, entry: PlannedEntry, targets: dict[str, str]
) -> None:
    """Rewrite the entry resource's references (fullUrls and conditional references)."""
    if entry.resource is None or entry.method not in ("POST", "PUT"):
        return

    async def resolve(resource_type: str, params: list[tuple[str, str]]) -> str:
        ids = await tx.find(resource_type, params)
        if len(ids) != 1:
            raise BadRequest(f"A conditional reference to {resource_type} matched {len(ids)} "
                             "resources; exactly one is required",
                             message_id="MSG_BUNDLE_CONDITIONAL_REFERENCE")
        return ids[0]

    await rewrite_references(entry.resource, targets, resolve, reference_holders(entry))


def _local_target(reference: str, base_url: str) -> tuple[str, str] | None:
    if reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1:]
    if "?" in reference or "://" in reference or reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/")
    if len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history"):
        return parts[0], parts[1]
    return None


async def check_integrity(
    services: Services, tx: StoreTransaction, entries: list[PlannedEntry]
) -> None:
    """Refuse local references to resources that exist neither here nor in the Bundle."""
    if not services.settings.referential_integrity:
        return
    in_bundle = {(e.resource_type, e.id) for e in entries if e.id and e.method != "DELETE"}
    wanted: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.resource is None or entry.method not in ("POST", "PUT"):
            continue
        if entry.method == "POST" and "existing" in entry.extra:
            continue
        for holder in reference_holders(entry):
            target = _local_target(holder["reference"], services.base_url)
            if target and target not in in_bundle:
                wanted.setdefault(target, entry.index)
    missing = set(wanted) - await tx.existing(list(wanted))
    if missing:
        first = min(missing, key=lambda t: wanted[t])
        raise BadRequest(
            f"Bundle.entry[{wanted[first]}]: reference {first[0]}/{first[1]} points to a "
            "resource that does not exist", message_id="MSG_REFERENCE_NOT_FOUND",
            expression=(f"Bundle.entry[{wanted[first]}].resource",))


def _response(
    outcome: Outcome, with_resource: bool = False, entry: PlannedEntry | None = None
) -> dict[str, Any]:
    stored = outcome.stored
    response: dict[str, Any] = {"status": status_text(outcome.status)}
    result: dict[str, Any] = {"response": response}
    if stored is not None and not stored.deleted:
        response["location"] = f"{stored.resource_type}/{stored.id}/_history/{stored.version}"
        response["etag"] = f'W/"{stored.version}"'
        response["lastModified"] = stored.last_updated
        if with_resource:
            result["resource"] = stored.resource()
    issues = entry.extra.get("issues") if entry is not None else None
    if issues:
        response["outcome"] = operation_outcome(issues)
    return result


def _check_if_match(entry: PlannedEntry, current: StoredResource | None) -> int | None:
    wanted = parse_version_tag(entry.if_match) if entry.if_match else None
    if wanted is not None and (current is None or current.version != wanted):
        raise PreconditionFailed(f"ifMatch {entry.if_match} does not hold",
                                 message_id="MSG_VERSION_MISMATCH")
    return wanted


async def execute(services: Services, tx: StoreTransaction, entry: PlannedEntry) -> dict[str, Any]:
    """Execute the entry inside ``tx``; return its ``Bundle.entry`` of the response."""
    if entry.method == "GET" or entry.method == "HEAD":
        return await _get(services, tx, entry)
    if entry.method == "DELETE":
        return await _delete(services, tx, entry)
    if entry.method == "POST":
        assert entry.resource is not None
        if "existing" in entry.extra:
            return _response(Outcome(200, await tx.read(entry.resource_type, entry.id or "")))
        return _response(await create_in(tx, services, entry.resource, None,
                                         precomputed_index(entry)), entry=entry)
    if entry.method == "PATCH":
        return await _patch(services, tx, entry)
    assert entry.resource is not None and entry.id is not None
    if_match = _check_if_match(entry, await tx.read(entry.resource_type, entry.id)) \
        if entry.if_match else None
    return _response(await update_in(tx, services, entry.resource, if_match,
                                     precomputed_index(entry)), entry=entry)


async def _delete(
    services: Services, tx: StoreTransaction, entry: PlannedEntry
) -> dict[str, Any]:
    if entry.id is None:
        return {"response": {"status": "204 No Content"}}
    current = await tx.read(entry.resource_type, entry.id)
    if current is None:
        raise NotFound(f"{entry.resource_type}/{entry.id} is not known",
                       message_id="MSG_NO_EXIST")
    _check_if_match(entry, current)
    marker = await tx.delete(entry.resource_type, entry.id)
    if marker is not None:
        await services.record_write(tx, marker, "delete")
    return {"response": {"status": "204 No Content"}}


async def _patch(services: Services, tx: StoreTransaction, entry: PlannedEntry) -> dict[str, Any]:
    current = await tx.read(entry.resource_type, entry.id or "")
    if current is None or current.deleted:
        raise NotFound(f"{entry.resource_type}/{entry.id} is not known",
                       message_id="MSG_NO_EXIST")
    if_match = _check_if_match(entry, current)
    patched = apply_patch(current.resource(), entry.extra["operations"], entry.resource_type,
                          entry.id or "")
    entry.extra["issues"] = prepare_resource(services, patched, entry.resource_type, "patch")
    return _response(await update_in(tx, services, patched, if_match or current.version),
                     entry=entry)


async def _get(services: Services, tx: StoreTransaction, entry: PlannedEntry) -> dict[str, Any]:
    if entry.id is None:
        raise BadRequest("Search entries in Bundles are not supported yet",
                         message_id="MSG_BUNDLE_SEARCH_NOT_SUPPORTED")
    if entry.version is not None:
        outcome = await read.vread(services, entry.resource_type, entry.id, entry.version)
    else:
        current = await tx.read(entry.resource_type, entry.id)
        if current is None:
            raise NotFound(f"{entry.resource_type}/{entry.id} is not known",
                           message_id="MSG_NO_EXIST")
        if current.deleted:
            raise Gone(f"{entry.resource_type}/{entry.id} was deleted")
        outcome = Outcome(200, current)
    stored = outcome.stored
    if stored is not None:
        guard.check_visible(stored.resource())
    tag = parse_version_tag(entry.if_none_match, "ifNoneMatch") if entry.if_none_match else None
    if stored is not None and tag == stored.version:
        return {"response": {"status": "304 Not Modified", "etag": f'W/"{stored.version}"'}}
    return _response(outcome, with_resource=True)

"""The two phases of every write (create, update, patch, delete, and their conditional forms).

``prepare`` (in ``create``, ``update``, ``patch`` and ``delete``) runs outside the write lock:
it parses and validates the content, records who writes it (``meta.source``), parses the
criteria of a conditional interaction into a ``SearchQuery`` limited to what the caller may
see, and computes the search index. :func:`apply` runs inside a store transaction, under the
lock: it fixes the target (a conditional match is searched there, so two concurrent
conditional writes cannot both act on an empty result), checks what the caller may change
before and after (the access policy), checks that what ``prepare`` read still holds (the
version a patch was made from), checks referential integrity, and writes. A single write, a
transaction and a batch differ only in how many ``Write`` values one transaction applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from fhir_server.errors import (
    BadRequest,
    Conflict,
    Issue,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
    VersionConflict,
)
from fhir_server.interactions.changes import Change
from fhir_server.interactions.context import AUDIT_EVENT, Outcome, Services, new_id
from fhir_server.interactions.prepare import apply_patch, prepare_resource
from fhir_server.interactions.read import check_deleted_visible
from fhir_server.interactions.references import local_targets
from fhir_server.interactions.security_context import with_context_patients
from fhir_server.search.model import SearchIndex, SearchQuery
from fhir_server.security.audit import AuditNote
from fhir_server.security.policy import Access
from fhir_server.security.scopes import Interaction
from fhir_server.signatures.proof import Proof, keep
from fhir_server.storage.port import AuditLogTransaction, StoredResource, StoreTransaction
from fhir_server.storage.versions import content_equal

__all__ = ["Write", "apply", "match_single", "resolve_target", "run_write"]


@dataclass
class Write:
    """One prepared write.

    ``id`` is the target (None until ``criteria`` picks it under the lock); ``resource`` the
    content to store (None for a deletion) and ``index`` its search index when it could be
    computed outside the lock; ``expected_version`` the version the write must replace
    (``If-Match``, or the version a patch was made from) and ``if_match`` whether the client
    asked for it (412 instead of 409). A conditional create carries ``if_none_exist``; a
    conditional update that matches nothing creates ``fresh_id``. ``proofs``: the signatures
    the content carries, checked in prepare, whose proof is written with it.
    """

    interaction: Interaction
    resource_type: str
    access: Access
    id: str | None = None
    resource: dict[str, Any] | None = None
    index: object | None = None
    criteria: SearchQuery | None = None
    if_none_exist: SearchQuery | None = None
    expected_version: int | None = None
    if_match: bool = False
    fresh_id: str | None = None
    operations: object | None = None
    issues: tuple[Issue, ...] = ()
    proofs: tuple[Proof, ...] = ()


async def match_single(tx: StoreTransaction, query: SearchQuery) -> str | None:
    """Return the id of the one match, None for no match; raise ``MultipleMatches``."""
    ids = await tx.find(query)
    if len(ids) > 1:
        raise MultipleMatches(
            f"The criteria matched {len(ids)} {query.resource_type} resources; expected at "
            "most one"
        )
    return ids[0] if ids else None


async def run_write(services: Services, write: Write, note: AuditNote) -> Outcome:
    """Apply one write in a transaction of its own, with its AuditEvent."""
    try:
        async with services.store.transaction() as tx:
            outcome = await apply(tx, services, write, note)
            await services.audit_write(tx, note, write.access.caller)
    except BaseException:
        note.discard_writes()
        raise
    return replace(outcome, issues=write.issues)


async def apply(
    tx: StoreTransaction, services: Services, write: Write, note: AuditNote,
    integrity: bool = True,
) -> Outcome:
    """Perform ``write`` inside ``tx``; return its outcome (201, 200 or 204).

    ``integrity`` False: the caller checked the references of the written content already
    (a transaction checks all of its entries' at once).
    """
    if write.interaction is Interaction.DELETE:
        return await _delete(tx, services, write, note)
    if write.interaction is Interaction.CREATE:
        existing = await _if_none_exist(tx, write)
        if existing is not None:
            return existing
    else:
        await resolve_target(tx, write)
    if write.resource is None:
        await _patch_match(tx, services, write)
    assert write.resource is not None
    if services.changes is not None:
        services.changes.admit(write)
    if write.access.limits(write.interaction) or write.resource_type == "Consent":
        before = None if write.interaction is Interaction.CREATE else await _current(tx, write)
        if before is not None and before.deleted:  # another patient's deleted id: unknown
            await check_deleted_visible(services, write.access, write.resource_type,
                                        str(write.id))
        await _judge(services, write, _content(before), write.resource)
    if integrity:
        await check_references(tx, services, [write.resource])
    outcome = await _store(tx, services, write, note)
    for proof in write.proofs:  # the proof of its signatures, beside it
        await keep(tx, services, proof, [write.resource], note)
    return outcome


async def _if_none_exist(tx: StoreTransaction, write: Write) -> Outcome | None:
    if write.if_none_exist is None:
        return None
    found = await match_single(tx, write.if_none_exist)
    if found is None:
        return None
    write.id = found
    return Outcome(200, await tx.read(write.resource_type, found))


async def resolve_target(tx: StoreTransaction, write: Write) -> None:
    """Fix the target of a conditional update or patch (404 for a patch without match)."""
    if write.criteria is None:
        return
    found = await match_single(tx, write.criteria)
    if write.resource is None:  # a conditional patch: its match is patched next
        if found is None:
            raise NotFound("The conditional PATCH matched no resource", message_id="MSG_NO_MATCH")
        write.id = found
        return
    resource = write.resource
    if found is None:
        resource.setdefault("id", write.fresh_id or new_id())
    elif resource.get("id") not in (None, found):
        raise BadRequest(f"The id in the body ({resource['id']}) is not the matched resource "
                         f"({found})", message_id="MSG_RES_ID_MISMATCH", expression=("id",))
    else:
        resource["id"] = found
    if write.id != resource["id"]:
        write.id, write.index = resource["id"], None  # indexed under its final id


async def _patch_match(tx: StoreTransaction, services: Services, write: Write) -> None:
    """Apply a conditional patch's operations to its match's current version."""
    current = await _current(tx, write)
    content = _content(current)
    assert current is not None and content is not None and write.id is not None
    await _judge(services, write, content, None)
    patched = apply_patch(content, write.operations, write.resource_type, write.id)
    write.issues, write.proofs = prepare_resource(services, write.access, patched,
                                                  write.resource_type)
    write.resource, write.expected_version = patched, current.version


async def _judge(services: Services, write: Write, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> None:
    """The access policy's judgement of a write (with the Consents of the target's
    patients: what the caller may read but not change is 403, not 404)."""
    if before is not None:
        await write.access.load_grants(services.store, [before])
    write.access.check_write(write.interaction, before, after)


async def _current(tx: StoreTransaction, write: Write) -> StoredResource | None:
    assert write.id is not None
    return await tx.read(write.resource_type, write.id)


def _content(stored: StoredResource | None) -> dict[str, Any] | None:
    return None if stored is None or stored.deleted else stored.resource()


async def _store(
    tx: StoreTransaction, services: Services, write: Write, note: AuditNote
) -> Outcome:
    resource = write.resource
    assert resource is not None
    index = write.index if write.index is not None else services.index(resource)
    index = await with_context_patients(tx, services, resource, index)
    if write.resource_type == AUDIT_EVENT:
        return await _append_event(tx, services, write, note)
    if write.interaction is Interaction.CREATE:
        stored = await tx.create(resource, index)
        _note(note, write, stored, resource, index)
        await _observe(tx, services, write, Change("create", stored, resource, None, index,
                                                   write.access.caller))
        return Outcome(201, stored)
    method = "PATCH" if write.interaction is Interaction.PATCH else "PUT"
    previous = await _previous(tx, services, write)
    try:
        result = await tx.update(resource, index, write.expected_version, method=method)
    except VersionConflict as exc:
        if not write.if_match:
            raise
        raise PreconditionFailed(exc.diagnostics, message_id="MSG_VERSION_MISMATCH") from None
    _note(note, write, result.stored, resource if result.changed else None, index)
    if result.changed:
        kind = "create" if result.created else "update"
        await _observe(tx, services, write, Change(kind, result.stored, resource, previous,
                                                   index, write.access.caller))
    return Outcome(201 if result.created else 200, result.stored)


async def _previous(tx: StoreTransaction, services: Services,
                    write: Write) -> dict[str, Any] | None:
    """The content an update replaces, where the change feed needs it."""
    feed = services.changes
    if feed is None or write.id is None or not feed.needs_previous(write.resource_type):
        return None
    return _content(await tx.read(write.resource_type, write.id))


async def _observe(tx: StoreTransaction, services: Services, write: Write,
                   change: Change) -> None:
    """Tell the change feed (the subscriptions' outbox), inside the write's transaction."""
    if services.changes is not None and write.resource_type != AUDIT_EVENT:
        await services.changes.observe(tx, change)


async def _append_event(
    tx: StoreTransaction, services: Services, write: Write, note: AuditNote
) -> Outcome:
    """An AuditEvent is written once: created, or repeated unchanged (never changed)."""
    resource = write.resource
    assert resource is not None
    if services.store.audit_log is not None:
        result = await cast(AuditLogTransaction, tx).append_event(resource)
    else:
        current = await tx.read(write.resource_type, str(resource["id"]))
        if current is not None and not content_equal(current.content, resource):
            raise Conflict(f"AuditEvent/{resource['id']} exists and AuditEvents are never "
                           "changed", message_id="MSG_AUDIT_IMMUTABLE")
        result = await tx.update(resource, write.index or services.index(resource))
    _note(note, write, result.stored, resource)
    return Outcome(201 if result.created else 200, result.stored)


def _note(note: AuditNote, write: Write, stored: StoredResource,
          resource: dict[str, Any] | None, index: object | None = None) -> None:
    """Note a written version for the AuditEvent, with its patients: those of its search
    index when it was indexed (the same compartments), else found in its content."""
    if not note.enabled:
        return
    reference = f"{stored.resource_type}/{stored.id}/_history/{stored.version}"
    if isinstance(index, SearchIndex) and resource is not None:
        note.wrote(reference, index.compartments)
        return
    written = resource if resource is not None else _content(stored)
    note.wrote(reference, write.access.patients_of(written) if written else ())


async def _delete(
    tx: StoreTransaction, services: Services, write: Write, note: AuditNote
) -> Outcome:
    if write.criteria is not None:
        write.id = await match_single(tx, write.criteria)
    if write.id is None:  # a conditional delete that matched nothing
        return Outcome(204)
    current = await _current(tx, write)
    if current is None:
        raise NotFound(f"{write.resource_type}/{write.id} is not known", message_id="MSG_NO_EXIST")
    if write.expected_version is not None and current.version != write.expected_version:
        raise PreconditionFailed(f"{write.resource_type}/{write.id} is at version "
                                 f"{current.version}, not {write.expected_version}",
                                 message_id="MSG_VERSION_MISMATCH")
    if current.deleted:  # deleting again changes nothing; another patient's answers 404
        await check_deleted_visible(services, write.access, write.resource_type, str(write.id))
        return Outcome(204, current)
    before = _content(current)
    await _judge(services, write, before, None)
    await check_not_referenced(tx, services, write.resource_type, str(write.id))
    marker = await tx.delete(write.resource_type, str(write.id))
    if marker is not None:
        _note(note, write, marker, before)
        await _observe(tx, services, write, Change("delete", marker, None, before, None,
                                                   write.access.caller))
    return Outcome(204, marker or current)


async def check_references(
    tx: StoreTransaction, services: Services, resources: list[dict[str, Any]]
) -> None:
    """Refuse local references to resources that do not exist (``referential_integrity``).

    AuditEvents are exempt: they record what happened, which may name what no longer (or
    never) existed.
    """
    if not services.settings.referential_integrity:
        return
    wanted = {target for resource in resources if resource.get("resourceType") != "AuditEvent"
              for target in local_targets(resource, services.base_url)}
    missing = wanted - await tx.existing(sorted(wanted)) if wanted else set()
    if missing:
        kind, id = min(missing)
        raise BadRequest(f"Reference {kind}/{id} points to a resource that does not exist",
                         message_id="MSG_REFERENCE_NOT_FOUND")


async def check_not_referenced(
    tx: StoreTransaction, services: Services, resource_type: str, id: str
) -> None:
    """Refuse (409) to delete a resource that current resources refer to
    (``referential_integrity``): the references would be left dangling."""
    if not services.settings.referential_integrity:
        return
    referrers = await tx.referrers(resource_type, id, limit=3)
    if referrers:
        names = ", ".join(f"{kind}/{rid}" for kind, rid in referrers)
        raise Conflict(f"{resource_type}/{id} is referred to by {names}; delete or change "
                       "those first", message_id="MSG_DELETE_REFERENCED")

"""batch and transaction (R4 http.html#transaction): ``POST [base]`` with a Bundle.

A transaction is all or nothing: every entry is validated before the write lock is taken;
then, in one store transaction, conditional targets (``ifNoneExist``, conditional update and
delete) and conditional references are resolved, references are rewritten to the final ids,
referential integrity is checked, and the entries are executed in the specification's order
(DELETE, POST, PUT/PATCH, GET). Any failure rolls everything back and answers one
OperationOutcome naming ``Bundle.entry[n]``. A batch runs each entry in its own transaction
and reports each entry's own status or OperationOutcome.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import BadRequest, FhirError, PayloadTooLarge
from fhir_server.geography.addresses import address_context, visit_date
from fhir_server.interactions import bundle_exec
from fhir_server.interactions.bundle_entries import (
    ORDER,
    PlannedEntry,
    at_entry,
    parse_entry,
    references_in,
    status_text,
)
from fhir_server.interactions.context import Outcome, Services, new_id
from fhir_server.interactions.prepare import prepare_resource
from fhir_server.outcomes import operation_outcome
from fhir_server.security import guard
from fhir_server.security.audit import refuse_protected
from fhir_server.security.policy import AccessRequest
from fhir_server.storage.port import StoreTransaction

__all__ = ["process_bundle"]


def _entries(services: Services, bundle: dict[str, Any]) -> list[Any]:
    """``Bundle.entry`` as a list within the configured limit (413 beyond it)."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", message_id="MSG_BUNDLE_INVALID")
    limit = services.settings.max_bundle_entries
    if len(entries) > limit:
        raise PayloadTooLarge(f"The Bundle has {len(entries)} entries; the limit is {limit}",
                              message_id="MSG_BUNDLE_TOO_MANY_ENTRIES")
    return entries


def _plan(services: Services, bundle: dict[str, Any]) -> list[PlannedEntry]:
    return [parse_entry(i, e, services.base_url)
            for i, e in enumerate(_entries(services, bundle))]


_ENTRY_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _authorize(entry: PlannedEntry) -> None:
    """Ask the policy about the entry, as if it were a request of its own."""
    if entry.method in ("GET", "HEAD"):
        interaction = ("vread" if entry.version else "read") if entry.id else "search-type"
    else:
        interaction = _ENTRY_INTERACTIONS[entry.method]
    refuse_protected(entry.resource_type, interaction)
    target_id = None if entry.method == "POST" else entry.id
    guard.authorize(AccessRequest(interaction, entry.resource_type, target_id))


def _prepare(services: Services, entry: PlannedEntry) -> None:
    """Authorize and validate the entry; give POST entries their new id (outside the lock)."""
    try:
        _authorize(entry)
        if entry.method == "PATCH":
            bundle_exec.patch_operations(entry)
        elif entry.resource is not None and entry.method in ("POST", "PUT"):
            entry.extra["issues"] = prepare_resource(
                services, entry.resource, entry.resource_type, _ENTRY_INTERACTIONS[entry.method]
            )
            if entry.method == "POST":
                entry.resource["id"] = new_id()
            elif entry.id is not None:
                bundle_exec.check_put_id(entry)
            # Found here, not under the write lock (the resolution there rewrites their values).
            bundle_exec.reference_holders(entry)
    except FhirError as exc:
        raise at_entry(exc, entry.index, entry.resource_type) from None


async def _run_transaction(
    services: Services, tx: StoreTransaction, entries: list[PlannedEntry]
) -> list[dict[str, Any]]:
    # Every criterion of the Bundle is found in one go; nothing is written before execute.
    await bundle_exec.resolve_entries(tx, entries, tx.find_many)
    bundle_exec.note_renames(entries)
    await bundle_exec.check_integrity(services, tx, entries)
    responses: dict[int, dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
        responses[entry.index] = await bundle_exec.located(
            entry, bundle_exec.execute(services, tx, entry))
    return [responses[e.index] for e in entries]


async def transaction(services: Services, bundle: dict[str, Any]) -> Outcome:
    """Process a transaction Bundle atomically; return the transaction-response Bundle."""
    entries = _plan(services, bundle)
    for entry in entries:
        _prepare(services, entry)
    _collect_audit()
    # Resolve and index a copy outside the write lock; the transaction reuses what still holds.
    await bundle_exec.optimistic_indexes(services, entries)
    async with services.store.transaction() as tx:
        responses = await _run_transaction(services, tx, entries)
        await services.record_bundle(tx, "transaction")
    return Outcome(200, body=_response_bundle("transaction-response", responses))


def _collect_audit() -> None:
    """Make the Bundle's writes share one AuditEvent, stored with them."""
    security = guard.current.get()
    if security is not None:
        security.bundle = True


async def _batch_entry(services: Services, index: int, raw: object) -> dict[str, Any]:
    entry: PlannedEntry | None = None
    try:
        entry = parse_entry(index, raw, services.base_url)
        _prepare(services, entry)
        if any(r.get("reference", "").startswith("urn:") for r in _refs(entry)):
            raise BadRequest("Entries of a batch cannot refer to each other",
                             message_id="MSG_BATCH_INTERDEPENDENT")
        _collect_audit()
        async with services.store.transaction() as tx:
            response = (await _run_transaction(services, tx, [entry]))[0]
            await services.record_bundle(tx, "batch")
            return response
    except FhirError as exc:
        located = at_entry(exc, index, entry.resource_type if entry else None)
        return {"response": {"status": status_text(located.status),
                             "outcome": operation_outcome(located.issues)}}


def _refs(entry: PlannedEntry) -> list[dict[str, Any]]:
    return references_in(entry.resource) if entry.resource else []


async def batch(services: Services, bundle: dict[str, Any]) -> Outcome:
    """Process each entry of a batch Bundle on its own; return the batch-response Bundle."""
    raw_entries = _entries(services, bundle)
    responses = [await _batch_entry(services, i, e) for i, e in enumerate(raw_entries)]
    return Outcome(200, body=_response_bundle("batch-response", responses))


def _response_bundle(kind: str, responses: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if responses:
        bundle["entry"] = responses
    return bundle


async def process_bundle(services: Services, bundle: dict[str, Any]) -> Outcome:
    """Dispatch a Bundle posted to the base: transaction or batch; anything else is 400."""
    if bundle.get("resourceType") != "Bundle":
        raise BadRequest("Only a Bundle can be posted to the base URL",
                         message_id="MSG_BUNDLE_EXPECTED", expression=("resourceType",))
    kind = bundle.get("type")
    security = guard.current.get()
    if security is not None and kind in ("transaction", "batch"):
        security.interaction = str(kind)  # its AuditEvent's subtype, refused or not
    with address_context(visit=visit_date(bundle)):  # addresses are read at the visit's date
        if kind == "transaction":
            return await transaction(services, bundle)
        if kind == "batch":
            return await batch(services, bundle)
    raise BadRequest(f"Bundle.type must be transaction or batch, not '{kind}'",
                     message_id="MSG_BUNDLE_TYPE", expression=("Bundle.type",))


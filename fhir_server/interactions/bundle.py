"""batch and transaction (R4 http.html#transaction): ``POST [base]`` with a Bundle.

Every entry is a request of its own: matched against the route table, authorized by the
access policy and prepared exactly as the same request over HTTP (``Door``). A transaction
is all or nothing: every write is prepared before the write lock is taken; then, in one store
transaction, conditional targets (``ifNoneExist``, conditional update, patch and delete) and
conditional references are resolved, references are rewritten to the final ids, referential
integrity is checked, and the writes are applied in the specification's order (DELETE, POST,
PUT/PATCH). Any failure rolls everything back and answers one OperationOutcome naming
``Bundle.entry[n]``. The reads (GET and HEAD entries: reads, searches, operations) run last,
after the writes are committed, each through the router as a request of its own. A batch
runs each entry on its own and reports each entry's status or OperationOutcome.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, Protocol

import orjson

from fhir_server import decimals
from fhir_server.errors import BadRequest, FhirError, PayloadTooLarge
from fhir_server.geography.addresses import address_context, visit_date
from fhir_server.interactions import bundle_exec
from fhir_server.interactions.bundle_entries import (
    Entry,
    at_entry,
    parse_entry,
    status_text,
)
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.create import prepare_create
from fhir_server.interactions.delete import prepare_conditional_delete, prepare_delete
from fhir_server.interactions.patch import prepare_conditional_patch, prepare_patch
from fhir_server.interactions.preconditions import parse_version_tag
from fhir_server.interactions.references import references_in
from fhir_server.interactions.update import prepare_conditional_update, prepare_update
from fhir_server.interactions.write import Write
from fhir_server.outcomes import operation_outcome
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller
from fhir_server.security.policy import Access
from fhir_server.signatures.on_write import checked_transaction
from fhir_server.signatures.proof import Proof, keep

__all__ = ["Door", "process_bundle"]


#: How long a Bundle computes before it lets the event loop run other work (``Turn``).
_SLICE_S = 0.001


class Turn:
    """Lets the event loop run other work once this request has computed for ``_SLICE_S``.

    A Bundle's preparation is several milliseconds of computation with no real wait in it;
    meanwhile the event loop cannot resume the write that holds (or has just been given) the
    store's write turn, which every process waits for. Sharing the loop between the entries
    keeps that wait to about one entry's work.
    """

    def __init__(self) -> None:
        self.since = time.perf_counter()

    async def share(self) -> None:
        """Yield to the event loop if this request has run ``_SLICE_S`` since it last did."""
        if time.perf_counter() - self.since > _SLICE_S:
            await asyncio.sleep(0)
            self.since = time.perf_counter()


class Door(Protocol):
    """How a Bundle's entries reach the server: the same policy and router as any request."""

    caller: Caller

    def authorize(self, request: FhirRequest) -> Access:
        """The access policy's decision on one entry's request (raises when refused)."""
        ...

    async def handle(self, request: FhirRequest, note: AuditNote) -> FhirResponse:
        """Answer a read entry as the router answers any request (its reads noted in
        ``note``, the Bundle's AuditEvent)."""
        ...


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


def _check_full_urls(entries: list[Entry]) -> None:
    """bdl-7: ``fullUrl`` is unique in a Bundle (unless the versions differ)."""
    seen: dict[tuple[str, object], int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        version = ((entry.resource or {}).get("meta") or {}).get("versionId")
        key = (entry.full_url, version)
        if key in seen:
            raise BadRequest(
                f"Bundle.entry[{seen[key]}] and Bundle.entry[{entry.index}] have the same "
                f"fullUrl {entry.full_url} (bdl-7)", message_id="MSG_BUNDLE_DUPLICATE_FULLURL",
                expression=(f"Bundle.entry[{entry.index}].fullUrl",))
        seen[key] = entry.index


async def _prepare(services: Services, door: Door, entry: Entry, transaction: bool) -> None:
    """Authorize the entry's request and prepare its write (outside the lock)."""
    try:
        entry.access = door.authorize(entry.request)
        if entry.method not in ("GET", "HEAD"):
            entry.write = await _write(services, entry, transaction)
            if entry.resource is not None and entry.method in ("POST", "PUT"):
                entry.holders = references_in(entry.resource)
    except FhirError as exc:
        raise at_entry(exc, entry.index, entry.resource_type) from None


async def _write(services: Services, entry: Entry, transaction: bool) -> Write:
    request, access, resource = entry.request, entry.access, entry.resource
    assert access is not None
    kind, route = entry.resource_type, request.route
    if_match = parse_version_tag(request.if_match, "ifMatch") if request.if_match else None
    if route in ("delete", "conditional-delete"):
        if request.id is not None:
            return prepare_delete(access, kind, request.id, if_match)
        return prepare_conditional_delete(services, access, kind, request.params)
    if route in ("patch", "conditional-patch"):
        operations = _patch_operations(resource)
        if request.id is not None:
            return await prepare_patch(services, access, kind, request.id, operations, if_match)
        return prepare_conditional_patch(services, access, kind, request.params, operations)
    if resource is None:
        raise BadRequest(f"a {entry.method} entry needs a resource",
                         message_id="MSG_BUNDLE_RESOURCE_MISSING")
    if route == "create":
        return prepare_create(services, access, kind, resource, request.if_none_exist,
                              indexed=not transaction)
    if request.id is not None:
        return prepare_update(services, access, kind, request.id, resource, if_match,
                              indexed=not transaction)
    return prepare_conditional_update(services, access, kind, request.params, resource,
                                      if_match)


def _patch_operations(resource: dict[str, Any] | None) -> object:
    """Decode a PATCH entry's Binary (``application/json-patch+json``) into operations."""
    resource = resource or {}
    if resource.get("resourceType") != "Binary" or not str(
        resource.get("contentType", "")
    ).startswith("application/json-patch+json"):
        raise BadRequest("A PATCH entry carries a Binary with a JSON Patch document "
                         "(FHIRPath Patch is not supported)", message_id="MSG_PATCH_INVALID")
    try:
        return decimals.loads(base64.b64decode(resource.get("data", "")))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest("The PATCH entry's Binary.data is not base64 JSON",
                         message_id="MSG_PATCH_INVALID") from None


async def transaction(
    services: Services, bundle: dict[str, Any], door: Door, note: AuditNote
) -> Outcome:
    """Process a transaction Bundle atomically; return the transaction-response Bundle."""
    entries = [parse_entry(i, e, services.base_url)
               for i, e in enumerate(_entries(services, bundle))]
    _check_full_urls(entries)
    with checked_transaction(services, bundle) as signed:  # Bundle.signature, as received
        turn = Turn()
        for entry in entries:
            await _prepare(services, door, entry, transaction=True)
            await turn.share()
    writes = [entry for entry in entries if entry.write is not None]
    # Resolve and index outside the write lock; the transaction reuses what still holds.
    await bundle_exec.optimistic_indexes(services, writes, turn)
    responses: dict[int, dict[str, Any]] = {}
    if writes:
        try:
            await _commit(services, writes, door, note, responses, signed)
        except BaseException:
            note.discard_writes()
            raise
    for entry in entries:
        if entry.write is None:
            responses[entry.index] = await _read(door, entry, note)
    return Outcome(200, body=_response_bundle("transaction-response",
                                              [responses[e.index] for e in entries]))


async def _commit(services: Services, writes: list[Entry], door: Door, note: AuditNote,
                  responses: dict[int, dict[str, Any]], signed: Proof | None) -> None:
    """The writes of a transaction, in one store transaction with its AuditEvent (and the
    proof of the Bundle's signature)."""
    async with services.store.transaction() as tx:
        await bundle_exec.resolve_entries(tx, services, writes, tx.find_many)
        bundle_exec.note_renames(writes)
        for entry in bundle_exec.ordered(writes):
            responses[entry.index] = await bundle_exec.located(
                entry, bundle_exec.execute(services, tx, entry, note))
        if signed is not None:
            await keep(tx, services, signed, [{**e.write.resource, "id": e.write.id}
                                              for e in writes if e.write and e.write.resource],
                       note)
        # After the writes (and their access checks): what they refer to must exist.
        await bundle_exec.check_integrity(services, tx, writes)
        await services.audit_write(tx, note, door.caller)


async def _read(door: Door, entry: Entry, note: AuditNote) -> dict[str, Any]:
    """Answer a read entry through the router; a failure is that entry's response."""
    try:
        answer = await door.handle(entry.request, note)
    except FhirError as exc:
        return _failed(at_entry(exc, entry.index, entry.resource_type))
    response: dict[str, Any] = {"status": status_text(answer.status)}
    for header, field in (("ETag", "etag"), ("Location", "location"),
                          ("Last-Modified", "lastModified")):
        if header in answer.headers:
            response[field] = answer.headers[header]
    if answer.stored is not None:
        response["lastModified"] = answer.stored.last_updated
    result: dict[str, Any] = {"response": response}
    body = answer.body
    if isinstance(body, bytes):
        body = decimals.loads(body)
    if body is not None:
        result["resource"] = body
    return result


def _failed(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": status_text(error.status),
                         "outcome": operation_outcome(error.issues)}}


async def _batch_entry(
    services: Services, index: int, raw: object, door: Door, note: AuditNote
) -> dict[str, Any]:
    entry: Entry | None = None
    try:
        entry = parse_entry(index, raw, services.base_url)
        await _prepare(services, door, entry, transaction=False)
        if entry.write is None:
            return await _read(door, entry, note)
        if any(h["reference"].startswith("urn:") for h in entry.holders):
            raise BadRequest("Entries of a batch cannot refer to each other",
                             message_id="MSG_BATCH_INTERDEPENDENT")
        entry_note = AuditNote("batch", enabled=note.enabled)
        async with services.store.transaction() as tx:
            await bundle_exec.resolve_entries(tx, services, [entry], tx.find_many)
            response = await bundle_exec.located(
                entry, bundle_exec.execute(services, tx, entry, entry_note))
            await bundle_exec.check_integrity(services, tx, [entry])
            await services.audit_write(tx, entry_note, door.caller)
            return response
    except FhirError as exc:
        return _failed(at_entry(exc, index, entry.resource_type if entry else None))


async def batch(
    services: Services, bundle: dict[str, Any], door: Door, note: AuditNote
) -> Outcome:
    """Process each entry of a batch Bundle on its own; return the batch-response Bundle."""
    raw_entries = _entries(services, bundle)
    responses = [await _batch_entry(services, i, e, door, note)
                 for i, e in enumerate(raw_entries)]
    return Outcome(200, body=_response_bundle("batch-response", responses))


def _response_bundle(kind: str, responses: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if responses:
        bundle["entry"] = responses
    return bundle


async def process_bundle(
    services: Services, bundle: object, door: Door, note: AuditNote
) -> Outcome:
    """Dispatch a Bundle posted to the base: transaction or batch; anything else is 400."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("Only a Bundle can be posted to the base URL",
                         message_id="MSG_BUNDLE_EXPECTED", expression=("resourceType",))
    kind = bundle.get("type")
    if kind in ("transaction", "batch"):
        note.interaction = str(kind)  # its AuditEvent's subtype, refused or not
    with address_context(visit=visit_date(bundle)):  # addresses are read at the visit's date
        if kind == "transaction":
            return await transaction(services, bundle, door, note)
        if kind == "batch":
            return await batch(services, bundle, door, note)
    raise BadRequest(f"Bundle.type must be transaction or batch, not '{kind}'",
                     message_id="MSG_BUNDLE_TYPE", expression=("Bundle.type",))

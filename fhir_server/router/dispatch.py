"""One function per route of the table: the ``FhirRequest`` turned into one interaction call,
and its outcome into a ``FhirResponse``. Each receives the ``Access`` the policy decided for
the request; none can be reached without one (``router.door`` is the only caller)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_server.errors import BadRequest, MethodNotAllowed, NotFound, UnsupportedMediaType
from fhir_server.interactions import read, search
from fhir_server.interactions.capabilities import capability_statement
from fhir_server.interactions.context import Services
from fhir_server.interactions.create import prepare_create
from fhir_server.interactions.delete import prepare_conditional_delete, prepare_delete
from fhir_server.interactions.history import HistoryRequest, history
from fhir_server.interactions.patch import prepare_conditional_patch, prepare_patch
from fhir_server.interactions.preconditions import parse_version_tag
from fhir_server.interactions.update import prepare_conditional_update, prepare_update
from fhir_server.interactions.write import Write, run_write
from fhir_server.jobs.export.files import read_chunks
from fhir_server.jobs.export.job import export_folder
from fhir_server.jobs.export.status import manifest, output_file, retry_after, visible_job
from fhir_server.jobs.model import JobState
from fhir_server.jobs.runner import JobRunner
from fhir_server.operations import AFFECTS_STATE, RAW_BODY_OPERATIONS, find_operation
from fhir_server.operations.parameters import OperationInput
from fhir_server.outcomes import information
from fhir_server.resources import parse_json
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.router.responses import (
    http_date,
    not_modified,
    version_headers,
    write_response,
)
from fhir_server.security.audit import AuditNote
from fhir_server.security.policy import Access

__all__ = ["JSON_TYPES", "ROUTE_HANDLERS", "RouteHandler", "json_body", "operation_level"]

RouteHandler = Callable[[Services, FhirRequest, Access, AuditNote], Awaitable[FhirResponse]]
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
PATCH_TYPES = frozenset({"application/json-patch+json"})
NDJSON = "application/fhir+ndjson"


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def json_body(request: FhirRequest, max_string_chars: int,
              types: frozenset[str] = JSON_TYPES) -> Any:
    """The request's JSON body: as parsed by whoever built the request, or parsed here from
    ``raw`` (415 for another content type, 400 for no body or invalid JSON, a string longer
    than ``max_string_chars``: 400 naming the limit)."""
    if request.body is not None:
        return request.body
    if request.raw is None:
        raise BadRequest("The request has no body", message_id="MSG_BODY_MISSING")
    if _media(request.content_type) not in types:
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type or '(none)'}' is not supported here. "
            f"Send one of: {', '.join(sorted(types))}.", message_id="MSG_UNSUPPORTED_MEDIA_TYPE")
    if types is PATCH_TYPES:
        return parse_json(b'{"value":' + request.raw + b"}", max_string_chars)["value"]
    return parse_json(request.raw, max_string_chars)


def _resource(services: Services, request: FhirRequest) -> dict[str, Any]:
    body = json_body(request, services.settings.max_string_chars)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object", message_id="MSG_JSON_OBJECT")
    return body


def _if_match(request: FhirRequest) -> int | None:
    return parse_version_tag(request.if_match) if request.if_match is not None else None


def _type(request: FhirRequest) -> str:
    assert request.resource_type is not None
    return request.resource_type


def _id(request: FhirRequest) -> str:
    assert request.id is not None
    return request.id


async def _capabilities(services: Services, request: FhirRequest, access: Access,
                        note: AuditNote) -> FhirResponse:
    """GET [base]/metadata: the CapabilityStatement (built once; ~8 ms each time otherwise)."""
    if services.capabilities is None:
        services.capabilities = orjson.dumps(capability_statement(services))
    return FhirResponse(200, services.capabilities)


async def _read(services: Services, request: FhirRequest, access: Access,
                note: AuditNote) -> FhirResponse:
    """GET [type]/[id]: read (304 when If-None-Match / If-Modified-Since hold)."""
    stored = (await read.read(services, access, _type(request), _id(request))).stored
    assert stored is not None
    _note_stored(note, access, stored.content)
    headers = version_headers(stored, services.base_url, location=False)
    if not_modified(request, stored):
        return FhirResponse(304, None, headers, stored)
    return FhirResponse(200, stored.content, headers, stored)


async def _vread(services: Services, request: FhirRequest, access: Access,
                 note: AuditNote) -> FhirResponse:
    """GET [type]/[id]/_history/[vid]: vread."""
    outcome = await read.vread(services, access, _type(request), _id(request),
                               str(request.version))
    stored = outcome.stored
    assert stored is not None
    _note_stored(note, access, stored.content)
    return FhirResponse(200, stored.content,
                        version_headers(stored, services.base_url, location=False), stored)


def _note_stored(note: AuditNote, access: Access, content: bytes) -> None:
    if note.enabled:
        note.read([orjson.loads(content)], access.patients_of)


def _note_bundle(note: AuditNote, access: Access, bundle: dict[str, Any]) -> None:
    """Note the resources of a Bundle answered (or the one resource answered)."""
    if note.enabled and bundle.get("resourceType") != "Bundle":
        note.read([bundle], access.patients_of)
    elif note.enabled:
        resources = (e["resource"] for e in bundle.get("entry") or ()
                     if isinstance(e.get("resource"), dict))
        note.read(resources, access.patients_of)


async def _search(services: Services, request: FhirRequest, access: Access,
                  note: AuditNote) -> FhirResponse:
    """GET [type]?, POST [type]/_search, GET [base]?_type=, GET Patient/[id]/[type]?."""
    compartment = None
    if request.route == "search-compartment":
        if request.compartment != "Patient":
            raise NotFound(f"Compartment {request.compartment} is not supported",
                           message_id="MSG_COMPARTMENT_UNKNOWN")
        compartment = ("Patient", _id(request))
    settings = services.settings
    params = list(request.params)
    found = await search.searchset(
        services, services.registry, services.base_url, request.resource_type,
        params, strict=request.prefer.strict, compartment=compartment,
        default_count=settings.default_count, max_count=settings.max_count,
        visibility=access.visibility, limits=settings.search_limits(),
        raw=not any(name == "_pretty" for name, _ in params))
    note.read_stored(found.resources, access.patients_of)
    return FhirResponse(200, found.bundle)


async def _history(services: Services, request: FhirRequest, access: Access,
                   note: AuditNote) -> FhirResponse:
    """GET [base]/_history, [type]/_history, [type]/[id]/_history."""
    target = HistoryRequest(request.resource_type, request.id)
    outcome = await history(services, access, target, dict(request.params))
    body = outcome.body or {}
    _note_bundle(note, access, body)
    return FhirResponse(200, body)


async def _written(services: Services, request: FhirRequest, write: Write,
                   note: AuditNote) -> FhirResponse:
    outcome = await run_write(services, write, note)
    if outcome.status == 204:
        return FhirResponse(204)
    return write_response(request, outcome, services.base_url)


async def _create(services: Services, request: FhirRequest, access: Access,
                  note: AuditNote) -> FhirResponse:
    """POST [type]: create, or conditional create with If-None-Exist."""
    write = prepare_create(services, access, _type(request), _resource(services, request),
                           request.if_none_exist)
    return await _written(services, request, write, note)


async def _update(services: Services, request: FhirRequest, access: Access,
                  note: AuditNote) -> FhirResponse:
    """PUT [type]/[id]: update or update-as-create."""
    write = prepare_update(services, access, _type(request), _id(request),
                           _resource(services, request), _if_match(request))
    return await _written(services, request, write, note)


async def _conditional_update(services: Services, request: FhirRequest, access: Access,
                              note: AuditNote) -> FhirResponse:
    """PUT [type]?[search]: conditional update."""
    resource = _resource(services, request)
    write = prepare_conditional_update(services, access, _type(request), request.params,
                                       resource, _if_match(request))
    return await _written(services, request, write, note)


async def _patch(services: Services, request: FhirRequest, access: Access,
                 note: AuditNote) -> FhirResponse:
    """PATCH [type]/[id] with a JSON Patch document."""
    operations = json_body(request, services.settings.max_string_chars, PATCH_TYPES)
    write = await prepare_patch(services, access, _type(request), _id(request), operations,
                                _if_match(request))
    return await _written(services, request, write, note)


async def _conditional_patch(services: Services, request: FhirRequest, access: Access,
                             note: AuditNote) -> FhirResponse:
    """PATCH [type]?[search] with a JSON Patch document."""
    operations = json_body(request, services.settings.max_string_chars, PATCH_TYPES)
    write = prepare_conditional_patch(services, access, _type(request), request.params,
                                      operations)
    return await _written(services, request, write, note)


async def _delete(services: Services, request: FhirRequest, access: Access,
                  note: AuditNote) -> FhirResponse:
    """DELETE [type]/[id]."""
    write = prepare_delete(access, _type(request), _id(request), _if_match(request))
    return await _written(services, request, write, note)


async def _conditional_delete(services: Services, request: FhirRequest, access: Access,
                              note: AuditNote) -> FhirResponse:
    """DELETE [type]?[search]: conditional delete of a single match."""
    write = prepare_conditional_delete(services, access, _type(request), request.params)
    return await _written(services, request, write, note)


def _document(request: FhirRequest) -> bytes | None:
    """The body of an operation that reads a document other than FHIR JSON
    (``RAW_BODY_OPERATIONS``), sent with one of its media types; None otherwise."""
    accepted = RAW_BODY_OPERATIONS.get(str(request.operation), frozenset())
    if request.method != "POST" or request.raw is None or _media(request.content_type) not in \
            accepted:
        return None
    return request.raw


def operation_level(request: FhirRequest) -> str:
    """``instance``, ``type`` or ``system``: where an operation is invoked."""
    return "instance" if request.id else "type" if request.resource_type else "system"


async def _operation(services: Services, request: FhirRequest, access: Access,
                     note: AuditNote) -> FhirResponse:
    """[base]/$op, [type]/$op, [type]/[id]/$op: dispatch to ``operations.OPERATIONS``."""
    operation = find_operation(operation_level(request), request.resource_type or "*",
                               str(request.operation))
    assert operation is not None  # the door answered 404 for an unknown operation
    if request.method == "GET" and request.operation in AFFECTS_STATE:
        raise MethodNotAllowed(f"${request.operation} changes the record: invoke it with POST",
                               message_id="MSG_OPERATION_POST_ONLY")
    raw = _document(request)
    body = (json_body(request, services.settings.max_string_chars)
            if request.method == "POST" and raw is None else None)
    call = OperationInput.from_request(
        request.resource_type, request.id, list(request.params), body, raw=raw,
        method=request.method, query_string=request.query_string,
        respond_async=request.prefer.respond_async, lenient=request.prefer.lenient)
    outcome = await operation(services, access, call)
    note.stored = note.stored or outcome.audited  # its requests' AuditEvents tell it all
    if outcome.body is not None:
        _note_bundle(note, access, outcome.body)
    return FhirResponse(outcome.status, outcome.body, outcome.headers)


def _runner(services: Services) -> JobRunner:
    if services.jobs is None:  # the door found no job then
        raise NotFound("No such job", message_id="MSG_JOB_UNKNOWN")
    return services.jobs


async def _export_status(services: Services, request: FhirRequest, access: Access,
                         note: AuditNote) -> FhirResponse:
    """GET [base]/$export-status/[job]: 202 with X-Progress while the export runs, the
    output manifest (200) when it is done, its OperationOutcome when it failed."""
    job = visible_job(_runner(services).store, _id(request))
    if not job.state.finished:
        return FhirResponse(202, None, {"X-Progress": job.progress or "queued",
                                        "Retry-After": str(retry_after(job))})
    if job.state is JobState.FAILED:
        return FhirResponse(500, job.error)
    expires = datetime.fromtimestamp(job.expires or 0, UTC).isoformat()
    return FhirResponse(200, manifest(services.base_url, job, expires),
                        {"Expires": http_date(expires)}, media_type="application/json")


async def _export_cancel(services: Services, request: FhirRequest, access: Access,
                         note: AuditNote) -> FhirResponse:
    """DELETE [base]/$export-status/[job]: the export stops and its files are removed."""
    runner = _runner(services)
    await runner.cancel(visible_job(runner.store, _id(request)).id)
    return FhirResponse(202, information("MSG_EXPORT_CANCELLED",
                                         "The export was cancelled; its files are removed"))


async def _export_file(services: Services, request: FhirRequest, access: Access,
                       note: AuditNote) -> FhirResponse:
    """GET [base]/$export-file/[job]/[file]: one NDJSON file of a completed export."""
    job = visible_job(_runner(services).store, _id(request))
    path = output_file(export_folder(services, job.id), job, str(request.file))
    return FhirResponse(200, media_type=NDJSON, chunks=read_chunks(path))


ROUTE_HANDLERS: dict[str, RouteHandler] = {
    "capabilities": _capabilities,
    "read": _read,
    "vread": _vread,
    "search-type": _search,
    "search-system": _search,
    "search-compartment": _search,
    "history-instance": _history,
    "history-type": _history,
    "history-system": _history,
    "create": _create,
    "update": _update,
    "conditional-update": _conditional_update,
    "patch": _patch,
    "conditional-patch": _conditional_patch,
    "delete": _delete,
    "conditional-delete": _conditional_delete,
    "operation": _operation,
    "export-status": _export_status,
    "export-cancel": _export_cancel,
    "export-file": _export_file,
}

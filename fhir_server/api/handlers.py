"""HTTP endpoints of the FHIR RESTful API: each turns a request into one interaction call and
the interaction's ``Outcome`` into a response. No FHIR semantics live here."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import errors, metrics_endpoint, smart
from fhir_server.api.headers import (
    parse_http_date,
    parse_prefer,
    parse_version_tag,
    version_headers,
)
from fhir_server.api.responses import (
    check_accept,
    fhir_response,
    read_body,
    require_content_type,
    wants_html,
)
from fhir_server.errors import FhirError, Issue, NotAcceptable, NotFound
from fhir_server.interactions import (
    bundle,
    create,
    delete,
    history,
    patch,
    read,
    search,
    update,
)
from fhir_server.interactions.capabilities import capability_statement
from fhir_server.interactions.context import Outcome, Services
from fhir_server.metrics.catalogue import counted_push
from fhir_server.operations import find_operation, render_html
from fhir_server.operations.parameters import OperationInput
from fhir_server.outcomes import operation_outcome
from fhir_server.resources import ID_PATTERN, parse_json, require_resource_type
from fhir_server.security import guard

__all__ = ["ENDPOINTS"]

Endpoint = Callable[[Request], Awaitable[Response]]
PATCH_TYPES = {"application/json-patch+json"}


def fhir_endpoint(func: Endpoint) -> Endpoint:
    """Negotiate the format, then render any failure as an OperationOutcome."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        try:
            if not (func.__name__ == "operation_endpoint" and wants_html(request)):
                check_accept(request)
            return await func(request)
        except FhirError as exc:
            return errors.fhir_error_response(exc)
        except Exception as exc:
            return await errors.unexpected_error_handler(request, exc)

    return wrapper


def services_of(request: Request) -> Services:
    """Return the application's ``Services``."""
    services: Services = request.app.state.services
    return services


def _type(request: Request) -> str:
    resource_type: str = request.path_params["type"]
    require_resource_type(resource_type)
    return resource_type


def _id(request: Request) -> str:
    id: str = request.path_params["id"]
    if not ID_PATTERN.match(id):
        raise NotFound(f"'{id}' is not a valid resource id", message_id="MSG_ID_INVALID")
    return id


async def _json_body(request: Request) -> Any:
    require_content_type(request)
    return parse_json(await read_body(request, services_of(request).settings.max_body_bytes))


def _write_response(request: Request, outcome: Outcome) -> Response:
    """Honour ``Prefer: return=`` for create, update and patch answers.

    Without a preference the stored resource is returned, except when validation in ``warn``
    mode let errors through: then the answer is the OperationOutcome holding the issues.
    """
    stored = outcome.stored
    if stored is None:
        return fhir_response(request, outcome.status, None)
    headers = version_headers(stored, services_of(request).base_url)
    prefer = parse_prefer(request.headers.get("prefer")).return_
    if prefer is None and any(i.severity in ("error", "fatal") for i in outcome.issues):
        prefer = "OperationOutcome"
    if prefer == "minimal":
        return fhir_response(request, outcome.status, None, headers)
    if prefer == "OperationOutcome":
        text = f"{stored.resource_type}/{stored.id} version {stored.version} stored"
        issues = [Issue("information", "informational", "MSG_WRITE_OK", text),
                  *outcome.issues]
        return fhir_response(request, outcome.status, operation_outcome(issues), headers)
    return fhir_response(request, outcome.status, stored.content, headers)


@fhir_endpoint
async def metadata(request: Request) -> Response:
    """GET [base]/metadata: the CapabilityStatement (built once; ~8 ms each time otherwise)."""
    services = services_of(request)
    if services.capabilities is None:
        services.capabilities = orjson.dumps(capability_statement(services))
    return fhir_response(request, 200, services.capabilities)


def _not_modified(request: Request, version: int, last_updated: str) -> bool:
    tag = request.headers.get("if-none-match")
    if tag is not None:
        return parse_version_tag(tag, "If-None-Match") == version
    since = parse_http_date(request.headers.get("if-modified-since"))
    if since is None:
        return False
    return datetime.fromisoformat(last_updated).replace(microsecond=0) <= since


@fhir_endpoint
async def read_resource(request: Request) -> Response:
    """GET [type]/[id]: read (304 when If-None-Match / If-Modified-Since hold)."""
    outcome = await read.read(services_of(request), _type(request), _id(request))
    stored = outcome.stored
    assert stored is not None
    guard.check_visible(stored.resource())
    headers = version_headers(stored, services_of(request).base_url)
    del headers["Location"]
    if _not_modified(request, stored.version, stored.last_updated):
        return Response(status_code=304, headers=headers)
    return fhir_response(request, 200, stored.content, headers)


@fhir_endpoint
async def vread_resource(request: Request) -> Response:
    """GET [type]/[id]/_history/[vid]: vread."""
    services = services_of(request)
    outcome = await read.vread(services, _type(request), _id(request), request.path_params["vid"])
    stored = outcome.stored
    assert stored is not None
    guard.check_visible(stored.resource())
    headers = version_headers(stored, services.base_url)
    del headers["Location"]
    return fhir_response(request, 200, stored.content, headers)


@fhir_endpoint
async def create_resource(request: Request) -> Response:
    """POST [type]: create, or conditional create with If-None-Exist."""
    resource_type = _type(request)
    body = await _json_body(request)
    outcome = await create.create(services_of(request), resource_type, body,
                                  request.headers.get("if-none-exist"))
    return _write_response(request, outcome)


@fhir_endpoint
async def update_resource(request: Request) -> Response:
    """PUT [type]/[id]: update or update-as-create."""
    resource_type, id = _type(request), _id(request)
    if_match = parse_version_tag(request.headers.get("if-match"))
    body = await _json_body(request)
    outcome = await update.update(services_of(request), resource_type, id, body, if_match)
    return _write_response(request, outcome)


@fhir_endpoint
async def conditional_update_resource(request: Request) -> Response:
    """PUT [type]?[search]: conditional update."""
    resource_type = _type(request)
    if_match = parse_version_tag(request.headers.get("if-match"))
    body = await _json_body(request)
    outcome = await update.conditional_update(
        services_of(request), resource_type, request.url.query, body, if_match
    )
    return _write_response(request, outcome)


@fhir_endpoint
async def patch_resource(request: Request) -> Response:
    """PATCH [type]/[id] with a JSON Patch document."""
    resource_type, id = _type(request), _id(request)
    require_content_type(request, PATCH_TYPES)
    services = services_of(request)
    operations = parse_json_any(await read_body(request, services.settings.max_body_bytes))
    if_match = parse_version_tag(request.headers.get("if-match"))
    outcome = await patch.patch(services, resource_type, id, operations, if_match)
    return _write_response(request, outcome)


def parse_json_any(body: bytes) -> Any:
    """Parse a JSON document of any shape (a JSON Patch is an array)."""
    wrapped = parse_json(b'{"value":' + body + b"}")
    return wrapped["value"]


@fhir_endpoint
async def delete_resource(request: Request) -> Response:
    """DELETE [type]/[id]."""
    await delete.delete(services_of(request), _type(request), _id(request))
    return Response(status_code=204)


@fhir_endpoint
async def conditional_delete_resource(request: Request) -> Response:
    """DELETE [type]?[search]: conditional delete of a single match."""
    await delete.conditional_delete(services_of(request), _type(request), request.url.query)
    return Response(status_code=204)


async def _history(request: Request, target: history.HistoryRequest) -> Response:
    params = dict(request.query_params)
    outcome = await history.history(services_of(request), target, params)
    return fhir_response(request, 200, guard.filter_bundle(outcome.body or {}))


@fhir_endpoint
async def history_instance(request: Request) -> Response:
    """GET [type]/[id]/_history."""
    return await _history(request, history.HistoryRequest(_type(request), _id(request)))


@fhir_endpoint
async def history_type(request: Request) -> Response:
    """GET [type]/_history."""
    return await _history(request, history.HistoryRequest(_type(request)))


@fhir_endpoint
async def history_system(request: Request) -> Response:
    """GET [base]/_history."""
    return await _history(request, history.HistoryRequest())


@fhir_endpoint
async def bundle_endpoint(request: Request) -> Response:
    """POST [base]: a transaction or batch Bundle."""
    body = await _json_body(request)
    with counted_push("fhir", body):
        outcome = await bundle.process_bundle(services_of(request), body)
    return fhir_response(request, outcome.status, outcome.body)


@fhir_endpoint
async def operation_endpoint(request: Request) -> Response:
    """[base]/$op, [type]/$op, [type]/[id]/$op: dispatch to ``operations.OPERATIONS``."""
    path = request.path_params
    resource_type = _type(request) if "type" in path else None
    id = _id(request) if "id" in path else None
    level = "instance" if id else "type" if resource_type else "system"
    operation = find_operation(level, resource_type or "*", path["op"])
    if operation is None:
        raise NotFound(f"Operation ${path['op']} is not supported here",
                       message_id="MSG_OPERATION_UNKNOWN")
    body = await _json_body(request) if request.method == "POST" else None
    call = OperationInput.from_request(resource_type, id, request.query_params.multi_items(),
                                       body)
    outcome = await operation(services_of(request), call)
    if outcome.body is not None and outcome.body.get("resourceType") == "Bundle":
        outcome = replace(outcome, body=guard.filter_bundle(outcome.body))
    if wants_html(request):
        html = render_html(outcome.body or {})
        if html is None:
            raise NotAcceptable(f"${path['op']} has no HTML form; ask for JSON",
                                message_id="MSG_FORMAT_NOT_SUPPORTED")
        return Response(html, outcome.status, media_type="text/html; charset=utf-8")
    return fhir_response(request, outcome.status, outcome.body)


async def _form_params(request: Request) -> list[tuple[str, str]]:
    """The parameters of ``POST .../_search``: the form body, plus any in the URL."""
    require_content_type(request, {"application/x-www-form-urlencoded"})
    body = await read_body(request, services_of(request).settings.max_body_bytes) \
        if request.headers.get("content-length", "0") != "0" else b""
    return parse_qsl(body.decode("utf-8"), keep_blank_values=True)


@fhir_endpoint
async def search_endpoint(request: Request) -> Response:
    """GET [type]?, POST [type]/_search, GET [base]?_type=, GET Patient/[id]/[type]?."""
    path = request.path_params
    resource_type = _type(request) if "type" in path else None
    compartment = None
    if "compartment" in path:
        if path["compartment"] != "Patient":
            raise NotFound(f"Compartment {path['compartment']} is not supported",
                           message_id="MSG_COMPARTMENT_UNKNOWN")
        compartment = (path["compartment"], _id(request))
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        params += await _form_params(request)
    services = services_of(request)
    strict = parse_prefer(request.headers.get("prefer")).strict
    extra, policy_compartment = guard.narrowing()
    if resource_type is None and policy_compartment is not None:
        compartment = compartment or policy_compartment
    settings = services.settings
    bundle = await search.search(services.store, services.registry, services.base_url,
                                 resource_type, params + extra, strict=strict,
                                 compartment=compartment, default_count=settings.default_count,
                                 max_count=settings.max_count)
    return fhir_response(request, 200, guard.filter_bundle(bundle))


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: the storage answers a query."""
    try:
        await services_of(request).store.ping()
    except Exception:
        return Response(b'{"status":"unavailable"}', 503, media_type="application/json")
    return Response(b'{"status":"ready"}', media_type="application/json")


ENDPOINTS: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "metadata": metadata,
    "read": read_resource,
    "vread": vread_resource,
    "create": create_resource,
    "update": update_resource,
    "conditional-update": conditional_update_resource,
    "patch": patch_resource,
    "delete": delete_resource,
    "conditional-delete": conditional_delete_resource,
    "history-instance": history_instance,
    "history-type": history_type,
    "history-system": history_system,
    "bundle": bundle_endpoint,
    "search": search_endpoint,
    "operation": operation_endpoint,
    "smart-configuration": smart.smart_config,
    "jwks": smart.jwks,
    "token": smart.token,
    "healthz": healthz,
    "readyz": readyz,
    "metrics": metrics_endpoint.metrics,
}

"""The HTTP adapter of the FHIR API: a Starlette request becomes a ``FhirRequest`` and a
``Caller``, the router answers it, and its ``FhirResponse`` becomes an HTTP response.

What is HTTP stays here: the route of the path, reading the body within ``max_body_bytes``
(413), form-encoded ``_search`` bodies, format negotiation (406; HTML for operations that have
a page), the bearer token (401), rendering (``_pretty``, ``_summary``, ``_elements``) and
errors as OperationOutcomes. Everything else happens behind ``router.door.handle``.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fhir_server.api.errors import fhir_error_response, unexpected_error_handler
from fhir_server.api.request_facts import note_caller
from fhir_server.api.responses import (
    check_accept,
    fhir_response,
    read_body,
    read_form,
    wants_html,
)
from fhir_server.errors import FhirError, Forbidden, NotAcceptable
from fhir_server.interactions.context import Services
from fhir_server.operations import render_html
from fhir_server.router.door import audit_name, handle
from fhir_server.router.request import FhirRequest, FhirResponse, parse_prefer
from fhir_server.router.routes import PUBLIC_ROUTES, Match, match_route
from fhir_server.search.parse import parse_search
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller
from fhir_server.security.tokens import AccessContext

__all__ = ["authenticate", "fhir_endpoint"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
#: Routes that answer in a format of their own, whatever Accept says (a bulk export's
#: NDJSON files; the IG has clients ask for application/fhir+ndjson).
_OWN_FORMATS = frozenset({"export-file"})


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _resolve_patient(services: Services, context: AccessContext) -> AccessContext:
    """Give a token that names its patient by identifier (a national identity provider's
    CCCD claim) the Patient's id."""
    if context.patient_id is not None or context.patient_identifier is None:
        return context
    system, value = context.patient_identifier
    parsed = parse_search("Patient", [("identifier", f"{system}|{value}")], services.registry)
    result = await services.store.search(parsed.query)
    if len(result.matches) != 1:
        raise Forbidden("The token's patient identifier matches no single Patient",
                        message_id="MSG_TOKEN_PATIENT_UNKNOWN")
    return replace(context, patient_id=result.matches[0].id)


async def authenticate(services: Services, authorization: str | None,
                       address: str | None) -> Caller:
    """The caller of a request: its verified bearer token (401 without a valid one), or an
    anonymous caller when access control is off."""
    if services.settings.auth == "off":  # said once, at start-up (main.create_app)
        return Caller.anonymous(address)
    assert services.verifier is not None
    context = services.verifier.verify_authorization(authorization)
    if context.patient_id is None and context.patient_identifier is not None:
        return Caller.from_token(await _resolve_patient(services, context), address)
    return services.callers.caller(context, address)  # the same token: the same Caller


async def _params(request: Request, match: Match, limit: int) -> list[tuple[str, str]]:
    """The query parameters, plus a form-encoded body for ``POST .../_search``."""
    params = list(request.query_params.multi_items())
    if request.method != "POST" or not match.name.startswith("search"):
        return params
    return params + await read_form(request, limit)


async def _fhir_request(request: Request, match: Match, services: Services) -> FhirRequest:
    limit = services.settings.max_body_bytes
    params = await _params(request, match, limit)
    raw = None
    if request.method in _WITH_BODY and not match.name.startswith("search"):
        raw = await read_body(request, limit, required=False) or None
    headers = request.headers
    return FhirRequest(
        request.method, match.name, match.resource_type, match.id, match.version,
        match.operation, match.compartment, match.file, params=tuple(params), raw=raw,
        content_type=headers.get("content-type"), if_match=headers.get("if-match"),
        if_none_match=headers.get("if-none-match"), if_none_exist=headers.get("if-none-exist"),
        if_modified_since=headers.get("if-modified-since"),
        prefer=parse_prefer(headers.get("prefer")),
    )


def _render(request: Request, match: Match, answer: FhirResponse) -> Response:
    headers = dict(answer.headers)
    if answer.status == 304:
        return Response(status_code=304, headers=headers)
    if answer.chunks is not None:
        return StreamingResponse(answer.chunks, answer.status, headers,
                                 media_type=answer.media_type)
    if answer.media_type is not None:
        return Response(orjson.dumps(answer.body), answer.status, headers,
                        media_type=answer.media_type)
    if match.name == "operation" and wants_html(request):
        page = render_html(answer.body if isinstance(answer.body, dict) else {})
        if page is None:
            raise NotAcceptable(f"${match.operation} has no HTML form; ask for JSON",
                                message_id="MSG_FORMAT_NOT_SUPPORTED")
        return Response(page, answer.status, headers, media_type="text/html; charset=utf-8")
    return fhir_response(request, answer.status, answer.body, headers)


async def fhir_endpoint(request: Request) -> Response:
    """Every request below the FHIR base."""
    services = _services(request)
    address = request.client.host if request.client else None
    match: Match | None = None
    caller = Caller.anonymous(address)
    reached = False
    try:
        match = match_route(request.method, request.path_params.get("path", ""))
        if not ((match.name == "operation" and wants_html(request))
                or match.name in _OWN_FORMATS):
            check_accept(request)
        if match.name not in PUBLIC_ROUTES:
            caller = await authenticate(services, request.headers.get("authorization"),
                                        address)
        fhir_request = await _fhir_request(request, match, services)
        reached = True
        answer = await handle(services, fhir_request, caller)
        _note(request, caller, fhir_request, answer.interaction)
        return _render(request, match, answer)
    except FhirError as exc:
        if match is not None:
            _note(request, caller, FhirRequest(request.method, match.name, match.resource_type,
                                               operation=match.operation), None)
        if not reached and match is not None and match.name not in PUBLIC_ROUTES:
            await _audit_refusal(services, match, caller, exc.status)
        return fhir_error_response(exc)
    except Exception as exc:
        return await unexpected_error_handler(request, exc)


def _note(request: Request, caller: Caller, fhir_request: FhirRequest,
          interaction: str | None) -> None:
    """What the access line and the request metrics say of the request."""
    note_caller(request.scope, caller.client_id, interaction or audit_name(fhir_request),
                fhir_request.resource_type)


async def _audit_refusal(services: Services, match: Match, caller: Caller, status: int) -> None:
    """The AuditEvent of a request refused before it reached the router (no or a bad token,
    a body too large...)."""
    if services.audit_trail is None:
        return
    name = audit_name(FhirRequest("GET", match.name, operation=match.operation))
    for record in AuditNote(name).records(caller, status):
        await services.audit_trail.record(record)


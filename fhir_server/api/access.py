"""Access control and auditing around every FHIR endpoint.

``secured(name, endpoint)`` wraps an endpoint of the route table: it verifies the bearer token
(401 with ``WWW-Authenticate`` when missing or bad), resolves a patient given by identifier
(the CCCD claim of a national identity provider), asks the policy whether the interaction is
allowed (403, or the hidden 404 of another patient's data), runs the endpoint with the caller
in ``security.guard.current``, and records an AuditEvent of the outcome, refusals included.
Writes record their AuditEvent inside their own transaction (``Services.record_write``);
everything else goes through the batched ``AuditTrail``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.errors import fhir_error_response, unexpected_error_handler
from fhir_server.api.request_facts import note_caller
from fhir_server.errors import FhirError, Forbidden, NotFound
from fhir_server.interactions.context import Services
from fhir_server.operations import find_operation
from fhir_server.security import guard
from fhir_server.security.audit import audit_record, refuse_protected
from fhir_server.security.policy import AccessRequest
from fhir_server.security.tokens import AccessContext

__all__ = ["PUBLIC_ENDPOINTS", "WRITE_ENDPOINTS", "secured"]

log = logging.getLogger("fhir_server.security")
Endpoint = Callable[[Request], Awaitable[Response]]

PUBLIC_ENDPOINTS = frozenset({"metadata", "healthz", "readyz", "smart-configuration",
                              "token", "jwks", "metrics"})
#: Endpoints whose successful writes audit themselves inside their transaction.
WRITE_ENDPOINTS = frozenset({"create", "update", "conditional-update", "patch", "delete",
                             "conditional-delete", "bundle"})
_INTERACTIONS = {
    "read": "read", "vread": "vread", "create": "create", "update": "update",
    "conditional-update": "update", "patch": "patch", "delete": "delete",
    "conditional-delete": "delete", "history-instance": "history-instance",
    "history-type": "history-type", "history-system": "history-system",
}


def access_request(name: str, request: Request) -> AccessRequest | None:
    """The policy question of an endpoint call (None for a Bundle: its entries are asked)."""
    path = request.path_params
    resource_type, id = path.get("type"), path.get("id")
    if name == "bundle":
        return None
    if name == "operation":
        level = "instance" if id else "type" if resource_type else "system"
        if find_operation(level, resource_type or "*", path["op"]) is None:
            raise NotFound(f"Operation ${path['op']} is not supported here",
                           message_id="MSG_OPERATION_UNKNOWN")
        return AccessRequest("operation", resource_type, id, operation=path["op"])
    if name == "search":
        if "compartment" in path:
            return AccessRequest("search-type", resource_type)
        return AccessRequest("search-type" if resource_type else "search-system",
                             resource_type)
    return AccessRequest(_INTERACTIONS[name], resource_type, id)


async def _resolve_patient(services: Services, context: AccessContext) -> AccessContext:
    """Give a token that names its patient by identifier the Patient's id."""
    if context.patient_id is not None or context.patient_identifier is None:
        return context
    from fhir_server.search.parse import parse_search

    system, value = context.patient_identifier
    parsed = parse_search("Patient", [("identifier", f"{system}|{value}")], services.registry)
    result = await services.store.search(parsed.query)
    if len(result.matches) != 1:
        raise Forbidden("The token's patient identifier matches no single Patient",
                        message_id="MSG_TOKEN_PATIENT_UNKNOWN")
    return replace(context, patient_id=result.matches[0].id)


async def _authenticate(services: Services, request: Request) -> AccessContext | None:
    if services.settings.auth == "off":
        log.warning("access control is OFF: %s %s served without a token",
                    request.method, request.url.path)
        return None
    assert services.verifier is not None
    context = services.verifier.verify_authorization(request.headers.get("authorization"))
    return await _resolve_patient(services, context)


def secured(name: str, endpoint: Endpoint) -> Endpoint:
    """Wrap ``endpoint`` with authentication, authorization and auditing."""
    if name in PUBLIC_ENDPOINTS:
        return endpoint

    async def wrapper(request: Request) -> Response:
        services: Services = request.app.state.services
        address = request.client.host if request.client else None
        security = guard.RequestSecurity(None, address,
                                          audited=services.audit_trail is not None)
        token = guard.current.set(security)
        status = 500
        try:
            try:
                security.context = await _authenticate(services, request)
                question = access_request(name, request)
                if question is not None:
                    refuse_protected(question.resource_type, str(question.interaction))
                    guard.authorize(question)
            except FhirError as exc:
                response = fhir_error_response(exc)
            else:
                response = await endpoint(request)
            status = response.status_code
            return response
        except Exception as exc:
            return await unexpected_error_handler(request, exc)
        finally:
            guard.current.reset(token)
            note_caller(request.scope, security.context.client_id if security.context else None,
                        security.interaction)
            if not (name in WRITE_ENDPOINTS and status < 400):
                await _audit(services, name, request, security, status)

    wrapper.__name__ = getattr(endpoint, "__name__", name)
    return wrapper


async def _audit(services: Services, name: str, request: Request,
                 security: guard.RequestSecurity, status: int) -> None:
    if services.audit_trail is None:
        return
    interaction = security.interaction or _INTERACTIONS.get(name, name)
    if name == "operation":
        interaction = "$" + request.path_params["op"]
    elif name == "search":
        interaction = "search-type" if "type" in request.path_params else "search-system"
    record = audit_record(
        interaction, status=status, context=security.context, touched=security.touched,
        patients=security.patients, network_address=security.address,
        query=request.scope.get("query_string", b"").decode("latin-1") or None,
    )
    await services.audit_trail.record(record)

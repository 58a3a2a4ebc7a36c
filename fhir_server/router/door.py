"""The one door: every FHIR request, whatever brought it (HTTP, an entry of a batch or
transaction Bundle, ``fhir-server load``, a bridge, a background job), is answered by
:func:`handle`.

``handle`` asks the access policy (``security.policy.authorize``) about the request, runs the
route's handler with the ``Access`` it got (the handler can only see and change what that
allows), and leaves the request's AuditEvent: refusals and failures included, written with
the request's writes when it wrote, else through the batched audit trail. A Bundle's entries
come back through the same door, each authorized as the request it is.
"""

from __future__ import annotations

from fhir_server.errors import BadRequest, FhirError, NotFound
from fhir_server.interactions.bundle import process_bundle
from fhir_server.interactions.context import Services
from fhir_server.jobs.export.status import visible_job
from fhir_server.metrics.catalogue import counted_push
from fhir_server.operations import find_operation
from fhir_server.resources import require_id, require_resource_type
from fhir_server.router.dispatch import ROUTE_HANDLERS, json_body, operation_level
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.router.routes import JOB_ROUTES, PUBLIC_ROUTES
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller
from fhir_server.security.policy import (
    Access,
    AccessRequest,
    authorize,
    authorize_job,
    principal,
)
from fhir_server.security.scopes import Interaction

__all__ = ["EntryDoor", "access_request", "audit_name", "handle"]

_INTERACTIONS = {
    "read": Interaction.READ, "vread": Interaction.VREAD,
    "search-type": Interaction.SEARCH_TYPE, "search-compartment": Interaction.SEARCH_TYPE,
    "search-system": Interaction.SEARCH_SYSTEM,
    "history-instance": Interaction.HISTORY_INSTANCE,
    "history-type": Interaction.HISTORY_TYPE, "history-system": Interaction.HISTORY_SYSTEM,
    "create": Interaction.CREATE,
    "update": Interaction.UPDATE, "conditional-update": Interaction.UPDATE,
    "patch": Interaction.PATCH, "conditional-patch": Interaction.PATCH,
    "delete": Interaction.DELETE, "conditional-delete": Interaction.DELETE,
}  # fmt: skip


def _check_target(request: FhirRequest) -> None:
    """A known resource type (404) and a valid id (400), as the route names them."""
    if request.resource_type is not None:
        require_resource_type(request.resource_type)
    if request.id is not None:
        require_id(request.id)


def access_request(request: FhirRequest) -> AccessRequest:
    """The question the access policy answers for a request."""
    _check_target(request)
    if request.route in JOB_ROUTES:
        raise BadRequest("A bulk export's status and files are asked directly, not in a "
                         "Bundle", message_id="MSG_BUNDLE_URL")
    if request.route == "operation":
        if find_operation(operation_level(request), request.resource_type or "*",
                          str(request.operation)) is None:
            raise NotFound(f"Operation ${request.operation} is not supported here",
                           message_id="MSG_OPERATION_UNKNOWN")
        return AccessRequest("operation", request.resource_type, request.id,
                             operation=request.operation)
    return AccessRequest(_INTERACTIONS[request.route], request.resource_type, request.id)


def audit_name(request: FhirRequest) -> str:
    """The interaction an AuditEvent names for a request (its subtype)."""
    if request.route == "operation":
        return f"${request.operation}"
    if request.route == "search-compartment":
        return "search-type"
    interaction = _INTERACTIONS.get(request.route)
    return str(interaction) if interaction is not None else request.route


class EntryDoor:
    """The door as a Bundle sees it: its entries are authorized and read through here."""

    def __init__(self, services: Services, caller: Caller) -> None:
        self.services = services
        self.caller = caller

    def authorize(self, request: FhirRequest) -> Access:
        return authorize(self.caller, access_request(request), self.services.registry,
                         self.services.sharing)

    async def handle(self, request: FhirRequest, note: AuditNote) -> FhirResponse:
        return await handle(self.services, request, self.caller, note)


async def handle(
    services: Services, request: FhirRequest, caller: Caller, note: AuditNote | None = None
) -> FhirResponse:
    """Answer ``request`` for ``caller``; raise ``FhirError`` for a refusal or failure.

    ``note``: the AuditEvent of an enclosing request (a Bundle's) that this one's reads are
    noted in; without it the request leaves its own.
    """
    own = note is None
    note = note or AuditNote(audit_name(request), enabled=services.audit_trail is not None)
    status = 500
    try:
        response = await _serve(services, request, caller, note)
        status = response.status
        return response
    except FhirError as exc:
        status = exc.status
        raise
    finally:
        if own and not note.stored and request.route not in PUBLIC_ROUTES:
            await _audit(services, request, caller, note, status)


async def _serve(
    services: Services, request: FhirRequest, caller: Caller, note: AuditNote
) -> FhirResponse:
    caller = await services.names.named(caller)  # the names Consents may give it
    if request.route in PUBLIC_ROUTES:  # nothing of anyone's: no decision to make
        return await ROUTE_HANDLERS[request.route](
            services, request, Access(caller, services.registry), note)
    if request.route == "bundle":
        body = json_body(request, services.settings.max_string_chars)
        with counted_push("fhir", body):
            outcome = await process_bundle(services, body, EntryDoor(services, caller), note)
        return FhirResponse(outcome.status, outcome.body, interaction=note.interaction)
    if request.route in JOB_ROUTES:
        access = _job_access(services, request, caller)
    else:
        access = authorize(caller, access_request(request), services.registry, services.sharing)
    note.purpose = note.purpose or access.purpose()
    try:
        return await ROUTE_HANDLERS[request.route](services, request, access, note)
    finally:
        if note.enabled:  # why it was allowed (the Consents) or refused, for the AuditEvent
            await access.annotate(note, services.store)


def _job_access(services: Services, request: FhirRequest, caller: Caller) -> Access:
    """A job's status, files and cancellation: the policy is asked what started the job,
    for the principal that started it (``policy.authorize_job``)."""
    runner = services.jobs
    if runner is None:
        raise NotFound("No such job", message_id="MSG_JOB_UNKNOWN")
    job = visible_job(runner.store, str(request.id))
    question = runner.kinds[job.kind].question(job)
    return authorize_job(caller, principal(job.caller), question, services.registry,
                         services.sharing)


async def _audit(services: Services, request: FhirRequest, caller: Caller, note: AuditNote,
                 status: int) -> None:
    if services.audit_trail is None:
        return
    query = request.query_string if request.route.startswith("search") else None
    await services.audit_trail.record_many(note.grouped_records(caller, status, query or None))

"""$export: the kick-off of a bulk export (FHIR Bulk Data Access IG,
https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-kick-off-request): ``[base]/$export``
(everything the caller may see), ``Patient/$export`` (the Patient compartments) and
``Group/[id]/$export`` (the compartments of a Group's patients).

The kick-off checks what is asked (``jobs.export.request``), the Group and the listed
patients against what the caller may see, takes the snapshot's position in the store's
write order, and creates the job: 202 with the polling location in ``Content-Location``.
The job runs in the background (``jobs.export.job``); the status, cancel and file requests
are routes of their own (``router.routes.JOB_ROUTES``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from fhir_server.errors import BadRequest, FhirError, NotSupported, TooManyRequests
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.instants import to_storage_instant
from fhir_server.jobs.export.members import group_criteria
from fhir_server.jobs.export.request import ExportRequest, parse_export
from fhir_server.jobs.export.status import status_url
from fhir_server.jobs.model import caller_record, owner_key
from fhir_server.jobs.runner import JobRunner
from fhir_server.operations.parameters import OperationInput
from fhir_server.outcomes import information
from fhir_server.security.policy import Access
from fhir_server.security.tokens import insufficient_scope
from fhir_server.storage.port import WriteLog

__all__ = ["export", "export_request"]


def _level(call: OperationInput) -> str:
    return "group" if call.id else "patient" if call.resource_type == "Patient" else "system"


def _url(services: Services, call: OperationInput) -> str:
    """The kick-off's URL (the manifest's ``request``; a POST's without its parameters)."""
    path = {"system": "$export", "patient": "Patient/$export",
            "group": f"Group/{call.id}/$export"}[_level(call)]
    query = f"?{call.query_string}" if call.query_string and call.method == "GET" else ""
    return f"{services.base_url}/{path}{query}"


def _runner(services: Services) -> JobRunner:
    if services.jobs is None:
        raise NotSupported("Bulk export does not run here", message_id="MSG_EXPORT_UNAVAILABLE")
    return services.jobs


def _check_types(values: dict[str, list[str]], request: ExportRequest, access: Access) -> None:
    """A type the caller may not read, named in ``_type``, is refused (403)."""
    seen = access.visibility
    if seen is None or not values.get("_type"):
        return
    hidden = [kind for kind in request.types if not seen.readable(kind)]
    if hidden:
        raise insufficient_scope(f"no scope grants reading {', '.join(hidden)}")


async def _group_members(services: Services, access: Access, group_id: str
                         ) -> tuple[str, ...] | None:
    """Check the Group (404 unless the caller may see it, 400 unless this server can
    evaluate it); return the patients it names (None: it names none)."""
    stored = await services.store.read("Group", group_id)
    group = stored.resource()
    access.check_readable(group)
    return group_criteria(group, services.registry).named


async def _check_patients(services: Services, access: Access, request: ExportRequest,
                          named: tuple[str, ...] | None) -> None:
    """Every listed patient exists, the caller may see it, and it is a member of the Group
    when the Group names its members (400 otherwise, the same for each reason)."""
    for patient in request.patients:
        try:
            access.check_readable((await services.store.read("Patient", patient)).resource())
            known = named is None or patient in named
        except FhirError:
            known = False
        if not known:
            raise BadRequest(f"patient: Patient/{patient} is not known" + (
                " in this Group" if request.group else ""),
                message_id="MSG_EXPORT_PATIENT_UNKNOWN", expression=("patient",))


async def _snapshot(services: Services) -> tuple[int, str]:
    """The position of the newest write and its ``lastUpdated`` (the export's
    ``transactionTime``: everything written up to it, and nothing after, is in the
    snapshot); now, for an empty store."""
    store = services.store
    if not isinstance(store, WriteLog):
        raise NotSupported("This store cannot export a consistent snapshot",
                           message_id="MSG_EXPORT_UNAVAILABLE")
    position, last_updated = await store.write_position()
    return position, last_updated or to_storage_instant(datetime.now(UTC))


async def export_request(services: Services, access: Access, values: dict[str, list[str]],
                         level: str, *, group: str | None = None, lenient: bool = False,
                         url: str = "") -> ExportRequest:
    """The export the parameters ask for, checked against what the caller may see (the
    Group, the listed patients, the named types), with its snapshot's position; raise the
    kick-off's errors (400, 403, 404)."""
    request = parse_export(values, level, services.registry, lenient=lenient, group=group,
                           url=url)
    _check_types(values, request, access)
    named = await _group_members(services, access, group) if group else None
    await _check_patients(services, access, request, named)
    position, moment = await _snapshot(services)
    return replace(request, position=position, transaction_time=moment)


async def export(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Start a bulk export; 202 with ``Content-Location``, or an OperationOutcome error."""
    runner = _runner(services)
    if not call.respond_async:
        raise BadRequest("$export runs asynchronously: send 'Prefer: respond-async'",
                         message_id="MSG_EXPORT_ASYNC_REQUIRED")
    owner = owner_key(access.caller)
    limit = services.settings.export_jobs_per_client
    if runner.store.active(owner, "export") >= limit:
        raise TooManyRequests(f"At most {limit} exports of one client run at once; wait for "
                              "one to finish", headers={"Retry-After": "60"})
    request = await export_request(services, access, call.values, _level(call),
                                   group=call.id, lenient=call.lenient, url=_url(services, call))
    job = runner.store.create("export", caller_record(access.caller), owner,
                              request.to_json())
    runner.wake()
    return Outcome(202, body=information("MSG_EXPORT_ACCEPTED", "The export has started; "
                                         "poll the Content-Location for its status"),
                   headers={"Content-Location": status_url(services.base_url, job.id)})

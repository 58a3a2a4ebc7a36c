"""read and vread (R4 http.html#read, http.html#vread).

The caller sees only what the access policy lets it see: another patient's resource, deleted
or not, answers exactly like an unknown id (404); a deletion answers 410 only to a caller who
could see the resource's last content.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fhir_server.errors import Gone, NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.preconditions import version_number
from fhir_server.interactions.security_context import context_patients
from fhir_server.security.policy import Access
from fhir_server.storage.port import HistoryQuery

__all__ = ["check_deleted_visible", "check_readable", "read", "read_resource", "vread"]


async def read(services: Services, access: Access, resource_type: str, id: str) -> Outcome:
    """Return the current version; raises ``NotFound`` (404) or ``Gone`` (410)."""
    try:
        stored = await services.reader(resource_type).read(resource_type, id)
    except Gone:
        await check_deleted_visible(services, access, resource_type, id)
        raise
    if access.visibility is not None:
        await check_readable(services, access, stored.resource())
    return Outcome(200, stored)


async def check_readable(services: Services, access: Access, resource: dict[str, Any]) -> None:
    """The access policy's judgement of one resource (with its security context's patients,
    and the Consents of its patients)."""
    context = await context_patients(services, resource)
    await access.load_grants(services.store, [resource], context)
    access.check_readable(resource, context)


async def read_resource(
    services: Services, access: Access, resource_type: str, id: str
) -> dict[str, Any]:
    """The current content of a resource the caller may see (``read``'s errors)."""
    stored = (await read(services, access, resource_type, id)).stored
    assert stored is not None
    return stored.resource()


async def vread(
    services: Services, access: Access, resource_type: str, id: str, version: str
) -> Outcome:
    """Return one version of a resource; raises ``NotFound`` for an unknown version."""
    number = version_number(version)
    if number is None:
        raise NotFound(f"Version '{version[:40]}' is not known",
                       message_id="MSG_NO_EXIST_VERSION")
    try:
        stored = await services.reader(resource_type).vread(resource_type, id, number)
        if access.visibility is not None:
            await check_readable(services, access, stored.resource())
    except Gone:
        await _as_unknown_version(check_deleted_visible(services, access, resource_type, id),
                                  resource_type, id, version)
        raise
    except NotFound:
        raise NotFound(f"{resource_type}/{id}/_history/{version} is not known",
                       message_id="MSG_NO_EXIST_VERSION") from None
    return Outcome(200, stored)


async def _as_unknown_version(check: Awaitable[None], resource_type: str, id: str,
                              version: str) -> None:
    """A hidden resource's version answers as an unknown version does."""
    try:
        await check
    except NotFound:
        raise NotFound(f"{resource_type}/{id}/_history/{version} is not known",
                       message_id="MSG_NO_EXIST_VERSION") from None


async def check_deleted_visible(
    services: Services, access: Access, resource_type: str, id: str
) -> None:
    """Raise the ``NotFound`` of an unknown id unless the caller could see the deleted
    resource's last content (another patient's deletion is none of the caller's business)."""
    if access.visibility is None:
        return
    page = await services.reader(resource_type).history(
        HistoryQuery(resource_type, id, count=50))
    last = next((s for s in page.entries if not s.deleted), None)
    if last is None:
        raise NotFound(f"{resource_type}/{id} is not known", message_id="MSG_NO_EXIST")
    await check_readable(services, access, last.resource())

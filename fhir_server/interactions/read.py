"""read and vread (R4 http.html#read, http.html#vread)."""

from __future__ import annotations

from fhir_server.errors import NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.preconditions import version_number

__all__ = ["read", "vread"]


async def read(services: Services, resource_type: str, id: str) -> Outcome:
    """Return the current version; raises ``NotFound`` (404) or ``Gone`` (410)."""
    return Outcome(200, await services.store.read(resource_type, id))


async def vread(services: Services, resource_type: str, id: str, version: str) -> Outcome:
    """Return one version of a resource; raises ``NotFound`` for an unknown version."""
    number = version_number(version)
    if number is None:
        raise NotFound(f"Version '{version[:40]}' is not known",
                       message_id="MSG_NO_EXIST_VERSION")
    return Outcome(200, await services.store.vread(resource_type, id, number))

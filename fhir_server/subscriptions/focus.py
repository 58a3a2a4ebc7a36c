"""The focus of an event as someone may see it now: the version the event recorded, provided
that version and the resource's current version (unless deleted since) are both readable by
them. A result corrected into another patient's record after the event is not sent to the
first patient's subscription; a deletion's event shows the version that was deleted.

The versions of a batch of events are read first (``focus_versions``), so that the Consent
grants of all their patients can be read at once before any is judged (``shown``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Services
from fhir_server.interactions.security_context import context_patients
from fhir_server.storage.outbox import NotificationEvent

__all__ = ["Judge", "Versions", "focus_versions", "shown"]

Judge = Callable[[dict[str, Any], Collection[str]], bool]
"""Whether someone may read a resource (with the patients of its security context)."""

Versions = tuple[tuple[dict[str, Any], frozenset[str]], ...]
"""The versions of an event's focus that decide, each with its security context's patients."""


async def focus_versions(services: Services, event: NotificationEvent) -> Versions:
    """The version of its focus the event recorded, then the current version (unless deleted
    since), each with the patients of its security context; none when the recorded version
    cannot be read."""
    reader = services.reader(event.focus_type)
    version = event.focus_version - (1 if event.change == "delete" else 0)
    try:
        recorded = (await reader.vread(event.focus_type, event.focus_id, version)).resource()
    except FhirError:
        return ()
    found = [recorded]
    if event.change != "delete":
        with contextlib.suppress(FhirError):  # deleted since: the recorded one decides
            found.append((await reader.read(event.focus_type, event.focus_id)).resource())
    return tuple([(resource, await context_patients(services, resource)) for resource in found])


def shown(versions: Versions, judge: Judge) -> dict[str, Any] | None:
    """The recorded version if ``judge`` lets every deciding version through, else None."""
    if versions and all(judge(resource, context) for resource, context in versions):
        return versions[0][0]
    return None

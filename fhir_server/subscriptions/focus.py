"""The focus of an event as someone may see it now: the version the event recorded, provided
that version and the resource's current version (unless deleted since) are both readable by
them. A result corrected into another patient's record after the event is not sent to the
first patient's subscription; a deletion's event shows the version that was deleted."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Services
from fhir_server.interactions.security_context import context_patients
from fhir_server.storage.outbox import NotificationEvent

__all__ = ["Judge", "visible_focus"]

Judge = Callable[[dict[str, Any], Collection[str]], bool]
"""Whether someone may read a resource (with the patients of its security context)."""


async def _judged(services: Services, resource: dict[str, Any], judge: Judge) -> bool:
    return judge(resource, await context_patients(services, resource))


async def visible_focus(services: Services, event: NotificationEvent,
                        judge: Judge) -> dict[str, Any] | None:
    """The event's version of its focus if ``judge`` lets it (and the current version)
    through, else None."""
    reader = services.reader(event.focus_type)
    version = event.focus_version - (1 if event.change == "delete" else 0)
    try:
        recorded = (await reader.vread(event.focus_type, event.focus_id, version)).resource()
    except FhirError:
        return None
    if not await _judged(services, recorded, judge):
        return None
    if event.change != "delete":
        try:
            current = (await reader.read(event.focus_type, event.focus_id)).resource()
        except FhirError:  # deleted since: the recorded version alone decides
            return recorded
        if not await _judged(services, current, judge):
            return None
    return recorded

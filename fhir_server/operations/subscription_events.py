"""``Subscription/[id]/$events`` (Subscriptions Backport IG,
OperationDefinition-backport-subscription-events): the events a subscription recorded,
``eventsSinceNumber`` to ``eventsUntilNumber`` (inclusive; at most ``MOST`` of them), as a
notification Bundle of type ``query-event``. Events are kept
``subscription_event_retention_days`` (7 by default). Each event shows its focus only if the
caller may read it now; ``content`` may ask for less than the subscription's payload
(``empty``, ``id-only``), never for more."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read
from fhir_server.operations.parameters import OperationInput
from fhir_server.operations.subscription_status import subscription_notice
from fhir_server.security.policy import Access
from fhir_server.storage.outbox import NotificationEvent
from fhir_server.subscriptions.focus import focus_versions, shown
from fhir_server.subscriptions.notifications import EventEntry, notification
from fhir_server.subscriptions.plans import Content

__all__ = ["MOST", "events"]

MOST = 1000
_LEVELS = (Content.EMPTY, Content.ID_ONLY, Content.FULL_RESOURCE)


def _number(call: OperationInput, name: str) -> int | None:
    value = call.value(name)
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"{name} must be an event number, not '{value}'",
                         message_id="MSG_PARAM_INVALID", expression=(name,))
    return int(value)


def _content(call: OperationInput, subscribed: Content) -> Content:
    asked = call.value("content")
    if asked is None:
        return subscribed
    try:
        wanted = Content(asked)
    except ValueError:
        raise BadRequest(f"content '{asked}' (empty, id-only, full-resource)",
                         message_id="MSG_PARAM_INVALID", expression=("content",)) from None
    return min(wanted, subscribed, key=_LEVELS.index)


def _entry(event: NotificationEvent, resource: dict[str, Any] | None,
           content: Content) -> EventEntry:
    if resource is None:
        return EventEntry(event.number, event.timestamp, None, event.change)
    full = content is Content.FULL_RESOURCE and event.change != "delete"
    return EventEntry(event.number, event.timestamp, f"{event.focus_type}/{event.focus_id}",
                      event.change, resource if full else None)


async def events(services: Services, access: Access, call: OperationInput) -> Outcome:
    """``$events`` of one Subscription."""
    assert call.id is not None
    stored = (await read(services, access, "Subscription", call.id)).stored
    assert stored is not None
    notice = await subscription_notice(services, stored.resource(), "query-event")
    first = _number(call, "eventsSinceNumber") or 1
    last = _number(call, "eventsUntilNumber")
    content = _content(call, notice.content)
    found = await services.store.outbox.events(call.id, first, last, MOST)
    versions = [await focus_versions(services, event) for event in found]
    await access.load_grants(services.store, [r for v in versions for r, _ in v],
                             set().union(*(c for v in versions for _, c in v)))
    entries = [_entry(event, shown(v, access.readable), content)
               for event, v in zip(found, versions, strict=True)]
    shaped = replace(notice, content=content)
    return Outcome(200, body=notification(shaped, entries, services.base_url))

"""Notification Bundles (Subscriptions Backport IG, notifications.html and payloads.html).

Every notification, ``$status`` answer and ``$events`` answer is built here. A notification is
a ``history`` Bundle whose first entry is the SubscriptionStatus, with a ``request`` to the
subscription's ``$status`` (bdl-3/bdl-4): in R4 a ``Parameters`` resource of the
``backport-subscription-status-r4`` profile, in R4B (``fhirVersion=4.3`` in
``channel.payload``) a ``SubscriptionStatus`` resource. Each event names its number, time and
(unless the content is ``empty``) its focus; ``id-only`` adds an entry per focus with its URL
and no resource, ``full-resource`` the resource itself. An event whose resource the owner may
no longer read keeps its number and loses its focus, as in an ``empty`` notification: the
numbers stay without gaps and nothing unreadable is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.subscriptions.plans import Content

__all__ = ["EventEntry", "Notice", "notification", "status_resource"]

STATUS_PROFILE = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                  "backport-subscription-status-r4")
_METHODS = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


@dataclass(frozen=True)
class EventEntry:
    """One event as notified: its number and time, its focus (``Type/id``; None when it is
    withheld), the kind of change, and the focus resource for ``full-resource``."""

    number: int
    timestamp: str
    focus: str | None
    change: str
    resource: dict[str, Any] | None = None


@dataclass(frozen=True)
class Notice:
    """What a notification says about its subscription."""

    subscription: str
    topic: str | None
    status: str
    type: str
    events_since_start: int
    content: Content
    fhir_version: str = "4.0"
    error: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r4_event(event: EventEntry, base: str, content: Content) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(event.number)},
        {"name": "timestamp", "valueInstant": event.timestamp}]
    if event.focus is not None and content is not Content.EMPTY:
        parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.focus}"}})
    return {"name": "notification-event", "part": parts}


def _r4_status(notice: Notice, events: list[EventEntry], base: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription",
         "valueReference": {"reference": f"{base}/Subscription/{notice.subscription}"}}]
    if notice.topic and notice.content is not Content.EMPTY:
        parameters.append({"name": "topic", "valueCanonical": notice.topic})
    parameters += [
        {"name": "status", "valueCode": notice.status},
        {"name": "type", "valueCode": notice.type},
        {"name": "events-since-subscription-start",
         "valueString": str(notice.events_since_start)}]
    parameters += [_r4_event(event, base, notice.content) for event in events]
    if notice.error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": notice.error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def _r4b_status(notice: Notice, events: list[EventEntry], base: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "resourceType": "SubscriptionStatus", "id": str(uuid.uuid4()),
        "status": notice.status, "type": notice.type,
        "eventsSinceSubscriptionStart": str(notice.events_since_start),
        "subscription": {"reference": f"{base}/Subscription/{notice.subscription}"}}
    if events:
        status["notificationEvent"] = [
            {"eventNumber": str(e.number), "timestamp": e.timestamp,
             **({"focus": {"reference": f"{base}/{e.focus}"}}
                if e.focus is not None and notice.content is not Content.EMPTY else {})}
            for e in events]
    if notice.topic and notice.content is not Content.EMPTY:
        status["topic"] = notice.topic
    if notice.error:
        status["error"] = [{"text": notice.error}]
    return status


def status_resource(notice: Notice, events: list[EventEntry], base: str) -> dict[str, Any]:
    """The SubscriptionStatus of a notification (R4 Parameters, or R4B's resource)."""
    build = _r4b_status if notice.fhir_version == "4.3" else _r4_status
    return build(notice, events, base)


def _focus_entry(event: EventEntry, base: str, content: Content) -> dict[str, Any] | None:
    if event.focus is None or content is Content.EMPTY:
        return None
    method, status = _METHODS.get(event.change, ("GET", "200"))
    kind = event.focus.split("/", 1)[0]
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{event.focus}",
        "request": {"method": method, "url": kind if method == "POST" else event.focus},
        "response": {"status": status}}
    if content is Content.FULL_RESOURCE and event.resource is not None:
        entry["resource"] = event.resource
    return entry


def notification(notice: Notice, events: list[EventEntry], base: str) -> dict[str, Any]:
    """The notification Bundle (``history``) of ``events`` (none for a handshake, a
    heartbeat or a status query)."""
    status = status_resource(notice, events, base)
    entries = [{
        "fullUrl": f"urn:uuid:{status['id']}", "resource": status,
        "request": {"method": "GET", "url": f"Subscription/{notice.subscription}/$status"},
        "response": {"status": "200"}}]
    entries += [entry for event in events
                if (entry := _focus_entry(event, base, notice.content)) is not None]
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
            "timestamp": _now(), "entry": entries}

"""A Subscription resource as the server acts on it: a ``Plan``.

Topic-based (Subscriptions Backport IG, StructureDefinition-backport-subscription):
``criteria`` is the canonical url of a topic; the ``backport-filter-criteria`` extensions of
``criteria`` narrow it in search syntax (``Encounter?patient=Patient/123``,
``patient=Patient/123`` or ``Encounter.patient=...``; all of them must hold); the
``backport-payload-content`` extension of ``channel.payload`` says how much a notification
carries (``empty``, ``id-only``, ``full-resource``); ``backport-heartbeat-period``,
``backport-timeout`` and ``backport-max-count`` on ``channel``. Classic R4: ``criteria`` is a
search (``Observation?patient=Patient/123&code=...``), and it goes through the same
machinery as a topic with one trigger on create and update of that type.

``channel.payload`` may ask for R4B notifications (``application/fhir+json;
fhirVersion=4.3``: a SubscriptionStatus resource instead of R4's Parameters). Channels:
``rest-hook`` and ``websocket``; others are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError
from fhir_server.resources import is_resource_type
from fhir_server.search.matching import matches
from fhir_server.search.model import SearchIndex, SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.search.subscription_patients import criteria_patients, filter_criteria
from fhir_server.subscriptions.topics import Topic, Trigger

__all__ = ["BACKPORT", "Content", "Plan", "make_plan", "shape_of"]

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
_PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
_HEARTBEAT = BACKPORT + "backport-heartbeat-period"
_TIMEOUT = BACKPORT + "backport-timeout"
_MAX_COUNT = BACKPORT + "backport-max-count"
_CHANNELS = frozenset({"rest-hook", "websocket"})
_JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
_CLASSIC_INTERACTIONS = frozenset({"create", "update"})
#: The longest a server waits for one rest-hook attempt, whatever the subscription asks.
MAX_TIMEOUT_S = 60.0


class Content(StrEnum):
    """How much a notification carries (backport-content-value-set)."""

    EMPTY = "empty"
    ID_ONLY = "id-only"
    FULL_RESOURCE = "full-resource"


@dataclass(frozen=True)
class Plan:
    """What the server does for one Subscription.

    ``topic`` is the canonical url of its topic (None for a classic criteria subscription,
    whose ``classic`` trigger stands in); ``filters`` the search each changed resource of a
    type must match; ``patients`` the patients its criteria filter on (the key of the
    server's index; empty: any). ``fhir_version`` is ``4.0`` or ``4.3`` (R4B notifications).
    """

    id: str
    status: str
    topic: str | None
    classic: Trigger | None
    filters: Mapping[str, SearchQuery]
    resource_types: frozenset[str]
    patients: frozenset[str]
    channel: str
    endpoint: str | None
    headers: tuple[tuple[str, str], ...]
    content: Content
    mime: str
    fhir_version: str
    heartbeat_s: int | None
    timeout_s: float
    max_count: int

    def triggers(self, topic: Topic | None) -> tuple[Trigger, ...]:
        """The triggers that apply: the topic's, or the classic criteria's."""
        if self.classic is not None:
            return (self.classic,)
        return topic.triggers if topic is not None else ()

    def fires(self, topic: Topic | None, kind: str, resource_type: str,
              before: SearchIndex | None, after: SearchIndex | None) -> bool:
        """Whether a change of ``resource_type`` triggers this subscription: a trigger of
        its topic fires and the changed resource meets its filters."""
        if not any(t.resource_type == resource_type and t.fires(kind, before, after)
                   for t in self.triggers(topic)):
            return False
        query = self.filters.get(resource_type)
        subject = after if after is not None else before
        return query is None or (subject is not None and matches(query, subject))


def _invalid(text: str, expression: str = "Subscription") -> BadRequest:
    return BadRequest(text, message_id="MSG_SUBSCRIPTION_INVALID", expression=(expression,))


def _extension(element: Any, url: str) -> Any:
    extensions = element.get("extension") if isinstance(element, dict) else None
    for extension in extensions or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            return next((v for k, v in extension.items() if k.startswith("value")), None)
    return None


def _split_filter(text: str, types: frozenset[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """A filter string as (type, parameters) for each type it applies to."""
    if "?" in text:
        kind, _, query = text.partition("?")
        if kind not in types:
            raise _invalid(f"filter '{text}': {kind} is not a type of the topic",
                           "Subscription.criteria")
        return [(kind, parse_qsl(query, keep_blank_values=True))]
    pairs = parse_qsl(text, keep_blank_values=True)
    by_type: dict[str, list[tuple[str, str]]] = {kind: [] for kind in types}
    for name, value in pairs:
        kind, dot, code = name.rpartition(".")
        for target in ([kind] if dot else sorted(types)):
            if target not in by_type:
                raise _invalid(f"filter '{text}': {target} is not a type of the topic",
                               "Subscription.criteria")
            by_type[target].append((code, value))
    return [(kind, params) for kind, params in by_type.items() if params]


def _filters(texts: list[str], types: frozenset[str],
             registry: SearchParameterRegistry) -> dict[str, SearchQuery]:
    params: dict[str, list[tuple[str, str]]] = {}
    for text in texts:
        if "=" not in text:  # a classic criteria naming a type alone
            continue
        for kind, pairs in _split_filter(text, types):
            params.setdefault(kind, []).extend(pairs)
    queries = {}
    for kind, pairs in params.items():
        try:
            queries[kind] = parse_search(kind, pairs, registry, strict=True).query
        except FhirError as exc:
            raise _invalid(f"filter on {kind}: {exc.diagnostics}",
                           "Subscription.criteria") from None
    return queries


def _channel(resource: dict[str, Any]) -> dict[str, Any]:
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise _invalid("Subscription.channel is required", "Subscription.channel")
    if channel.get("type") not in _CHANNELS:
        raise _invalid(f"channel type '{channel.get('type')}' is not supported here "
                       "(rest-hook, websocket)", "Subscription.channel.type")
    return channel


def _mime(channel: dict[str, Any]) -> tuple[str, str]:
    """(media type as sent, FHIR version) of ``channel.payload``."""
    payload = channel.get("payload")
    if payload is None:
        return "application/fhir+json", "4.0"
    media, *parameters = [part.strip() for part in str(payload).split(";")]
    version = next((p.split("=", 1)[1].strip() for p in parameters
                    if p.lower().startswith("fhirversion=")), "4.0")
    if media.lower() not in _JSON_TYPES:
        raise _invalid(f"payload '{payload}': notifications are sent as "
                       "application/fhir+json", "Subscription.channel.payload")
    if version not in ("4.0", "4.3"):
        raise _invalid(f"payload '{payload}': fhirVersion {version} is not offered "
                       "(4.0: R4, 4.3: R4B)", "Subscription.channel.payload")
    return str(payload), version


def _content(channel: dict[str, Any], topic_based: bool) -> Content:
    code = _extension(channel.get("_payload"), _PAYLOAD_CONTENT)
    if code is None:
        # A classic subscription without a payload is notified without content (R4).
        return Content.EMPTY if not topic_based and "payload" not in channel \
            else Content.ID_ONLY
    try:
        return Content(code)
    except ValueError:
        raise _invalid(f"payload content '{code}' (empty, id-only, full-resource)",
                       "Subscription.channel.payload") from None


def _headers(channel: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    headers = []
    for line in channel.get("header") or ():
        name, colon, value = str(line).partition(":")
        if not colon or not name.strip() or any(c in line for c in "\r\n"):
            raise _invalid(f"channel header '{line}' is not 'Name: value'",
                           "Subscription.channel.header")
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


def _classic(criteria: str, registry: SearchParameterRegistry) -> tuple[Trigger, str]:
    kind = criteria.split("?", 1)[0]
    if not is_resource_type(kind):
        raise _invalid(f"criteria '{criteria}' is neither a known topic nor a search "
                       "'[type]?[query]'", "Subscription.criteria")
    return Trigger(kind, _CLASSIC_INTERACTIONS), kind


def make_plan(resource: dict[str, Any], topics: Mapping[str, Topic],
              registry: SearchParameterRegistry) -> Plan:
    """The plan of a Subscription resource; ``BadRequest`` (``MSG_SUBSCRIPTION_INVALID``)
    for what the server cannot do (unknown topic, filter, channel or payload)."""
    criteria = str(resource.get("criteria") or "")
    channel = _channel(resource)
    topic = topics.get(criteria)
    if topic is not None:
        classic, types, texts = None, topic.resource_types, filter_criteria(resource)
    else:
        classic, kind = _classic(criteria, registry)
        types, texts = frozenset({kind}), [criteria]
    mime, version = _mime(channel)
    heartbeat = _extension(channel, _HEARTBEAT)
    timeout = _extension(channel, _TIMEOUT)
    return Plan(
        id=str(resource.get("id", "")), status=str(resource.get("status", "")),
        topic=topic.url if topic else None, classic=classic,
        filters=_filters(texts, types, registry), resource_types=types,
        patients=criteria_patients(resource), channel=str(channel["type"]),
        endpoint=channel.get("endpoint"), headers=_headers(channel),
        content=_content(channel, topic is not None), mime=mime, fhir_version=version,
        heartbeat_s=int(heartbeat) if isinstance(heartbeat, int) and heartbeat > 0 else None,
        timeout_s=min(float(timeout), MAX_TIMEOUT_S) if isinstance(timeout, int) and timeout > 0
        else 10.0,
        max_count=max(1, int(_extension(channel, _MAX_COUNT) or 1)),
    )


def shape_of(resource: dict[str, Any]) -> tuple[str | None, Content, str]:
    """(topic url or None for classic criteria, content, FHIR version) of a stored
    Subscription, without its topic at hand (``$status``, ``$events``)."""
    criteria = str(resource.get("criteria") or "")
    classic = "?" in criteria or is_resource_type(criteria)
    found = resource.get("channel")
    channel: dict[str, Any] = found if isinstance(found, dict) else {}
    try:
        version = _mime(channel)[1]
        content = _content(channel, not classic)
    except BadRequest:
        version, content = "4.0", Content.ID_ONLY
    return (None if classic else criteria), content, version

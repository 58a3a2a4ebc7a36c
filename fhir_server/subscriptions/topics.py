"""SubscriptionTopics in R4: a ``Basic`` resource with the code
``http://hl7.org/fhir/fhir-types|SubscriptionTopic`` whose extensions carry the R4B/R5
SubscriptionTopic elements (Subscriptions Backport IG, components.html "Subscription Topics in
R4"; the IG's ``Basic-r4-encounter-complete`` example).

A topic has a canonical ``url`` and resource triggers: the resource type, the interactions
(``create``, ``update``, ``delete``) and optional query criteria on the version before and
after the change (``previous``/``current`` in search syntax, ``resultForCreate``,
``resultForDelete``, ``requireBoth``). ``fhirPathCriteria`` is not evaluated: a topic that
relies on it alone is refused. The topics shipped with the server are data
(``fhir_server/data/subscription_topics.json``); operators add their own by creating such a
Basic resource.

A topic may say who subscribes to it (the server's extension ``SUBSCRIBER``): ``patient``
means only the patient its subscription filters on, with a token bound to that patient's
record (the emergency accesses to a citizen's record are the citizen's to be told of).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fhir_server.errors import BadRequest, FhirError
from fhir_server.resources import is_resource_type
from fhir_server.search.matching import matches
from fhir_server.search.model import SearchIndex, SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry

__all__ = [
    "SUBSCRIBER",
    "TOPIC_CODE",
    "Topic",
    "Trigger",
    "compile_all",
    "compile_topic",
    "is_topic",
    "shipped_topics",
    "topic_urls",
]

TOPIC_CODE = ("http://hl7.org/fhir/fhir-types", "SubscriptionTopic")
_ELEMENT = "StructureDefinition/extension-SubscriptionTopic."
_INTERACTIONS = frozenset({"create", "update", "delete"})
#: The extension of a topic saying who may subscribe to it (``valueCode`` ``patient``).
SUBSCRIBER = "https://fhir.sskdt.vn/StructureDefinition/subscription-topic-subscriber"


@dataclass(frozen=True)
class Trigger:
    """One ``resourceTrigger``: which changes of ``resource_type`` the topic is about."""

    resource_type: str
    interactions: frozenset[str]
    previous: SearchQuery | None = None
    current: SearchQuery | None = None
    passes_on_create: bool = True
    passes_on_delete: bool = True
    require_both: bool = False

    def fires(self, kind: str, before: SearchIndex | None, after: SearchIndex | None) -> bool:
        """Whether a change of ``kind`` (create, update, delete) from ``before`` to ``after``
        (indexes of the versions; None where there is none) triggers the topic."""
        if kind not in self.interactions:
            return False
        if self.previous is None and self.current is None:
            return True
        tests = []
        if self.previous is not None:
            tests.append(self.passes_on_create if before is None
                         else matches(self.previous, before))
        if self.current is not None:
            tests.append(self.passes_on_delete if after is None
                         else matches(self.current, after))
        return all(tests) if self.require_both else any(tests)


@dataclass(frozen=True)
class Topic:
    """A compiled SubscriptionTopic: its canonical url, title and triggers; ``patient_only``:
    only the patient a subscription filters on subscribes, with a token bound to them."""

    url: str
    title: str
    triggers: tuple[Trigger, ...]
    patient_only: bool = False

    @property
    def resource_types(self) -> frozenset[str]:
        """The types whose changes may trigger the topic."""
        return frozenset(trigger.resource_type for trigger in self.triggers)

    def needs_previous(self, resource_type: str) -> bool:
        """Whether deciding on a change of the type needs the version before it."""
        return any(t.previous is not None for t in self.triggers
                   if t.resource_type == resource_type)


def is_topic(resource: dict[str, Any]) -> bool:
    """Whether ``resource`` is a Basic-wrapped SubscriptionTopic."""
    if resource.get("resourceType") != "Basic":
        return False
    codings = (resource.get("code") or {}).get("coding") or ()
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == TOPIC_CODE
               for c in codings)


def _element(extension: dict[str, Any]) -> str:
    """The SubscriptionTopic element an extension carries (``url``, ``resourceTrigger``...),
    whatever FHIR version its URL names (the IG uses both 4.3 and 5.0)."""
    url = str(extension.get("url", ""))
    return url.rsplit(_ELEMENT, 1)[1] if _ELEMENT in url else url


def _value(extension: dict[str, Any]) -> Any:
    return next((v for k, v in extension.items() if k.startswith("value")), None)


def _parts(extension: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(str(e.get("url")), _value(e)) for e in extension.get("extension") or ()
            if isinstance(e, dict)]


def _invalid(text: str) -> BadRequest:
    return BadRequest(f"SubscriptionTopic: {text}", message_id="MSG_TOPIC_INVALID")


def _type_of(value: Any) -> str:
    kind = str(value or "").rsplit("/", 1)[-1]
    if not is_resource_type(kind):
        raise _invalid(f"resourceTrigger.resource '{value}' is not an R4 resource type")
    return kind


def _criteria(kind: str, text: Any, registry: SearchParameterRegistry) -> SearchQuery | None:
    if not text:
        return None
    query = str(text).split("?", 1)[-1]
    try:
        return parse_search(kind, parse_qsl(query, keep_blank_values=True), registry,
                            strict=True).query
    except FhirError as exc:
        raise _invalid(f"queryCriteria '{text}': {exc.diagnostics}") from None


def _trigger(extension: dict[str, Any], registry: SearchParameterRegistry) -> Trigger:
    parts = _parts(extension)
    kind = _type_of(next((v for n, v in parts if n == "resource"), None))
    interactions = frozenset(str(v) for n, v in parts if n == "supportedInteraction")
    if not interactions <= _INTERACTIONS:
        raise _invalid(f"supportedInteraction {sorted(interactions - _INTERACTIONS)}")
    query = next((e for e in extension.get("extension") or ()
                  if isinstance(e, dict) and e.get("url") == "queryCriteria"), None)
    criteria = dict(_parts(query)) if query else {}
    if not query and any(n == "fhirPathCriteria" for n, _ in parts):
        raise _invalid("a trigger with fhirPathCriteria and no queryCriteria (this server "
                       "does not evaluate FHIRPath criteria)")
    return Trigger(
        kind, interactions or _INTERACTIONS,
        previous=_criteria(kind, criteria.get("previous"), registry),
        current=_criteria(kind, criteria.get("current"), registry),
        passes_on_create=criteria.get("resultForCreate", "test-passes") == "test-passes",
        passes_on_delete=criteria.get("resultForDelete", "test-fails") == "test-passes",
        require_both=criteria.get("requireBoth") is True,
    )


def compile_topic(basic: dict[str, Any], registry: SearchParameterRegistry) -> Topic:
    """The topic a Basic-wrapped SubscriptionTopic describes; ``BadRequest``
    (``MSG_TOPIC_INVALID``) when it has no url or no usable trigger."""
    extensions = [e for e in basic.get("extension") or () if isinstance(e, dict)]
    values = {_element(e): _value(e) for e in extensions}
    url = values.get("url")
    if not isinstance(url, str) or not url:
        raise _invalid("the topic has no url (extension-SubscriptionTopic.url)")
    triggers = tuple(_trigger(e, registry) for e in extensions
                     if _element(e) == "resourceTrigger")
    if not triggers:
        raise _invalid(f"{url} has no resourceTrigger")
    return Topic(url, str(values.get("title") or values.get("name") or url), triggers,
                 patient_only=values.get(SUBSCRIBER) == "patient")


@cache
def shipped_topics() -> tuple[dict[str, Any], ...]:
    """The topics the server ships (Basic resources), from its package data."""
    data = resources.files("fhir_server").joinpath("data/subscription_topics.json")
    found: list[dict[str, Any]] = orjson.loads(data.read_bytes())["topics"]
    return tuple(found)


def topic_urls() -> list[str]:
    """The canonical urls of the shipped topics."""
    return [value for topic in shipped_topics() for extension in topic["extension"]
            if _element(extension) == "url" and isinstance(value := _value(extension), str)]


def compile_all(basics: Iterable[dict[str, Any]],
                registry: SearchParameterRegistry) -> dict[str, Topic]:
    """The topics by url (an invalid one is left out; a later one of a url wins)."""
    topics: dict[str, Topic] = {}
    for basic in basics:
        try:
            topic = compile_topic(basic, registry)
        except FhirError:
            continue
        topics[topic.url] = topic
    return topics

"""What the subscription tests share: a rest-hook receiver inside the test (``Receiver``), an app
whose delivery worker posts to it (``Subscribed``), and Subscription builders."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests.api.two_patients import FHIR, World, new_id, populate
from tests.conftest import token_for

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPICS = "https://fhir.sskdt.vn/SubscriptionTopic/"
ENDPOINT = "https://receiver.test/hook"


@dataclass
class Receiver:
    """A rest-hook endpoint: what was posted to it, and whether it is up."""

    up: bool = True
    posts: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    refused: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            self.refused += 1
            return httpx.Response(503)
        self.posts.append((dict(request.headers), json.loads(request.content)))
        return httpx.Response(200)

    def bundles(self, subscription: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The notifications of a subscription (of one type) in the order received."""
        return [bundle for _, bundle in self.posts
                if subscription_of(bundle) == subscription
                and (kind is None or status_of(bundle)["type"] == kind)]

    def events(self, subscription: str) -> list[tuple[int, str | None]]:
        """(event number, focus) of every event notified to a subscription, in order."""
        return [event for bundle in self.bundles(subscription, "event-notification")
                for event in events_of(bundle)]


def _parameter(parameters: dict[str, Any], name: str) -> Any:
    found = [p for p in parameters["parameter"] if p["name"] == name]
    return found


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The R4 SubscriptionStatus (Parameters) of a notification, as a flat dict."""
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    flat: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        if parameter["name"] != "notification-event":
            flat[parameter["name"]] = value
    return flat


def subscription_of(bundle: dict[str, Any]) -> str:
    return str(status_of(bundle)["subscription"]["reference"]).rsplit("/", 1)[-1]


def events_of(bundle: dict[str, Any]) -> list[tuple[int, str | None]]:
    """(number, focus ``Type/id``) of each notification-event of a notification."""
    found = []
    for event in _parameter(bundle["entry"][0]["resource"], "notification-event"):
        parts = {p["name"]: p for p in event["part"]}
        focus = parts.get("focus", {}).get("valueReference", {}).get("reference")
        found.append((int(parts["event-number"]["valueString"]),
                      focus.split("/fhir/", 1)[1] if focus else None))
    return found


def topic_subscription(topic: str, *filters: str, content: str = "id-only",
                       endpoint: str = ENDPOINT, channel: str = "rest-hook",
                       heartbeat: int | None = None, payload: str = "application/fhir+json",
                       headers: tuple[str, ...] = ("X-Api-Key: secret-of-the-receiver",),
                       ) -> dict[str, Any]:
    """A Subscription of the Backport IG's profile on one of the shipped topics."""
    extensions = [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}
                  ] if heartbeat else []
    channel_element: dict[str, Any] = {
        "type": channel, "payload": payload,
        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                    "valueCode": content}]},
        **({"extension": extensions} if extensions else {})}
    if channel == "rest-hook":
        channel_element.update(endpoint=endpoint, header=list(headers))
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested", "reason": "test", "criteria": TOPICS + topic,
        "channel": channel_element}
    if filters:
        subscription["_criteria"] = {"extension": [
            {"url": BACKPORT + "backport-filter-criteria", "valueString": text}
            for text in filters]}
    return subscription


def classic_subscription(criteria: str, payload: str | None = "application/fhir+json",
                         endpoint: str = ENDPOINT) -> dict[str, Any]:
    """A classic R4 criteria Subscription."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = payload
    return {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": criteria, "channel": channel}


def new_lab(world: World, category: str = "laboratory", of: str = "a") -> dict[str, Any]:
    """A new Observation of A's (or B's) record, with an identifier of its own."""
    person = getattr(world, of)
    role = "lab" if category == "laboratory" else "vital"
    lab = copy.deepcopy(person.resources[role])
    lab.pop("id", None)
    lab.pop("meta", None)
    lab["identifier"] = [{"system": "urn:test:lab", "value": new_id()}]
    return lab


def new_encounter(world: World, status: str = "finished", of: str = "a") -> dict[str, Any]:
    """A new Encounter of A's (or B's) record."""
    encounter = copy.deepcopy(getattr(world, of).resources["encounter"])
    encounter.pop("id", None)
    encounter.pop("meta", None)
    encounter["identifier"] = [{"system": "https://fhir.sskdt.vn/sid/ma-lk/01929",
                                "value": f"LK{new_id()[:9]}"}]
    encounter["status"] = status
    return encounter


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@dataclass
class Subscribed:
    """An app whose rest-hooks post to ``receiver``, a ``system/*.cruds`` client, a world."""

    http: httpx.AsyncClient
    settings: Settings
    receiver: Receiver
    app: Any
    world: World

    def headers(self, scope: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(self.settings, scope, **claims)}", **FHIR}

    def citizen(self, scope: str = "patient/*.cruds", of: str = "a",
                **claims: Any) -> dict[str, str]:
        """Headers of a token bound to A's (or B's) record."""
        return self.headers(scope, patient_id=getattr(self.world, of).patient, **claims)

    async def subscribe(self, resource: dict[str, Any],
                        headers: dict[str, str] | None = None) -> str:
        response = await self.http.post("/fhir/Subscription", json=resource,
                                        headers=headers or FHIR)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def active(self, id: str) -> None:
        """Wait until the subscription's handshake made it active."""
        async def status() -> str:
            response = await self.http.get(f"/fhir/Subscription/{id}")
            return str(response.json()["status"])

        deadline = time.monotonic() + 10
        while await status() != "active":
            assert time.monotonic() < deadline, await status()
            await asyncio.sleep(0.02)

    async def create(self, resource: dict[str, Any],
                     headers: dict[str, str] | None = None) -> str:
        response = await self.http.post(f"/fhir/{resource['resourceType']}", json=resource,
                                        headers=headers or FHIR)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    @property
    def worker(self) -> Any:
        return self.app.state.subscription_delivery.worker

    async def settled(self, ids: Iterable[str]) -> None:
        """Wait until every event recorded for the subscriptions ``ids`` was delivered."""
        store, wanted = self.app.state.services.store, list(ids)

        async def done() -> bool:
            for id in wanted:
                state = await store.outbox.state(id)
                if state is None or state.delivered < state.events:
                    return False
            return True

        for _ in range(500):
            if await done():
                break
            await asyncio.sleep(0.02)
        assert await done()
        await self.worker.drain()


async def subscribed_app(settings: Settings, receiver: Receiver,
                         **overrides: Any) -> AsyncIterator[Subscribed]:
    """Run an app whose delivery worker posts to ``receiver`` (fast polling and retries)."""
    changed = settings.model_copy(update={
        "subscription_allow_http": True, "subscription_allow_private_endpoints": True,
        "subscription_poll_s": 0.02, "subscription_retry_first_s": 0.05,
        "subscription_retry_max_interval_s": 0.2, **overrides})
    app = create_app(changed)
    async with app.router.lifespan_context(app):
        app.state.subscription_delivery.worker.client = httpx.AsyncClient(
            transport=httpx.MockTransport(receiver.handle))
        headers = {"Authorization": f"Bearer {token_for(changed, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=headers) as http:
            world = await populate(http, changed)
            yield Subscribed(http, changed, receiver, app, world)

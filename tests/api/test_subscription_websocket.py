"""The websocket channel (Backport IG, channels.html "Websockets"): ``$get-ws-binding-token``,
``bind-with-token``, the handshake, notifications on the connection (those recorded while no
client was connected first), and a connection without a valid token is closed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from httpx_ws import WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from fhir_server.api.routes import WEBSOCKET_ROUTES
from fhir_server.settings import Settings
from tests.api.subscribing import (
    Receiver,
    Subscribed,
    events_of,
    new_lab,
    status_of,
    subscribed_app,
    topic_subscription,
)

WEBSOCKET = "http://test/fhir/$subscription-websocket"


@pytest_asyncio.fixture
async def server(settings: Settings) -> AsyncIterator[Subscribed]:
    async for running in subscribed_app(settings, Receiver()):
        yield running


async def _token(server: Subscribed, id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await server.http.get(f"/fhir/Subscription/{id}/$get-ws-binding-token",
                                     headers=headers)
    assert response.status_code == 200, response.text
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in response.json()["parameter"]}


async def _message(ws: Any) -> dict[str, Any]:
    return dict(json.loads(await ws.receive_text(timeout=10)))


def test_the_websocket_endpoint_is_the_only_one_outside_the_http_route_table() -> None:
    assert WEBSOCKET_ROUTES == ["/fhir/$subscription-websocket"]


async def test_a_bound_websocket_gets_a_handshake_then_events_missed_and_new(
    server: Subscribed,
) -> None:
    mine = server.citizen()
    subscription = topic_subscription("observation", f"patient=Patient/{server.world.a.patient}",
                                      channel="websocket")
    id = await server.subscribe(subscription, mine)
    assert (await server.http.get(f"/fhir/Subscription/{id}")).json()["status"] == "active"
    missed = await server.create(new_lab(server.world))  # before any client connected
    granted = await _token(server, id, mine)
    assert granted["subscription"] == id
    assert granted["websocket-url"] == "ws://test/fhir/$subscription-websocket"
    transport = ASGIWebSocketTransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client, \
            aconnect_ws(WEBSOCKET, client) as ws:
        await ws.send_text(f"bind-with-token {granted['token']}")
        handshake = await _message(ws)
        assert status_of(handshake)["type"] == "handshake"
        first = await _message(ws)
        assert events_of(first) == [(1, f"Observation/{missed}")]
        new = await server.create(new_lab(server.world))
        second = await _message(ws)
        assert events_of(second) == [(2, f"Observation/{new}")]


async def test_a_binding_token_is_only_for_the_callers_own_websocket_subscriptions(
    server: Subscribed,
) -> None:
    subscription = topic_subscription("observation", f"patient=Patient/{server.world.a.patient}",
                                      channel="websocket")
    id = await server.subscribe(subscription, server.citizen())
    refused = await server.http.get(f"/fhir/Subscription/{id}/$get-ws-binding-token",
                                    headers=server.citizen(of="b"))
    assert refused.status_code == 404
    hook = await server.subscribe(topic_subscription("observation"))
    not_websocket = await server.http.get(f"/fhir/Subscription/{hook}/$get-ws-binding-token")
    assert not_websocket.status_code == 400


async def test_a_connection_without_a_valid_token_is_closed(server: Subscribed) -> None:
    transport = ASGIWebSocketTransport(app=server.app)
    for message in ("bind-with-token not-a-token", "hello"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client, \
                aconnect_ws(WEBSOCKET, client) as ws:
            await ws.send_text(message)
            try:
                await ws.receive_text(timeout=5)
                raise AssertionError("the connection stayed open")
            except WebSocketDisconnect as closed:
                assert closed.code == 1008

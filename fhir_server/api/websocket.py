"""The websocket channel's endpoint (Subscriptions Backport IG, channels.html "Websockets").

A client connects to ``[base]/$subscription-websocket`` and sends ``bind-with-token <token>``
with a token of ``$get-ws-binding-token`` (it may send more, for more subscriptions or a
fresh token before the last expires). The server answers each bound subscription with a
``handshake`` notification, then its delivery worker sends the subscription's notifications
on the connection (those recorded while no client was connected first). An invalid or
expired token closes the connection (1008, policy violation); nothing else is read from the
client.
"""

from __future__ import annotations

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_server.errors import FhirError
from fhir_server.operations.subscription_status import subscription_notice
from fhir_server.subscriptions.binding_tokens import Binding, read_token
from fhir_server.subscriptions.notifications import notification

__all__ = ["subscription_websocket"]

_BIND = "bind-with-token"
_POLICY_VIOLATION = 1008


class _Connection:
    """A Starlette websocket as the hub's ``Connection``."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send_text(self, text: str) -> None:
        await self._websocket.send_text(text)


def _token(message: str) -> str | None:
    command, _, rest = message.strip().partition(" ")
    if command.rstrip(":") != _BIND:
        return None
    return rest.strip() or None


async def _handshakes(websocket: WebSocket, binding: Binding) -> None:
    services = websocket.app.state.services
    for id in binding.subscriptions:
        try:
            resource = (await services.store.read("Subscription", id)).resource()
        except FhirError:
            continue
        notice = await subscription_notice(services, resource, "handshake")
        bundle = notification(notice, [], services.base_url)
        await websocket.send_text(orjson.dumps(bundle).decode())


async def subscription_websocket(websocket: WebSocket) -> None:
    """Serve one websocket client until it disconnects."""
    state = websocket.app.state
    hub = getattr(state, "subscription_hub", None)
    await websocket.accept()
    connection = _Connection(websocket)
    try:
        while True:
            token = _token(await websocket.receive_text())
            binding = read_token(state.services.settings, token) if token else None
            if binding is None or hub is None:
                await websocket.close(code=_POLICY_VIOLATION)
                return
            await _handshakes(websocket, binding)
            for id in binding.subscriptions:
                hub.bind(id, connection, binding.expires)
            delivery = getattr(state, "subscription_delivery", None)
            if delivery is not None:
                delivery.worker.wake.set()
    except WebSocketDisconnect:
        pass
    finally:
        if hub is not None:
            hub.unbind(connection)

"""The websocket connections bound to subscriptions in this process (Backport IG,
channels.html "Websockets").

A client binds a connection to subscriptions with a token from ``$get-ws-binding-token``
(``api.websocket``); the delivery worker of the same process sends those subscriptions'
notifications on it. A subscription is delivered by the process that holds its connection:
the worker claims a websocket subscription only while the hub holds one for it, and events
wait in the outbox while no client is connected (they are sent after the next handshake).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

__all__ = ["Connection", "WebSocketHub"]

log = logging.getLogger("fhir_server.subscriptions")


class Connection(Protocol):
    """A connected websocket client (as ``api.websocket`` wraps Starlette's)."""

    async def send_text(self, text: str) -> None:
        """Send one message; raise when the connection is gone."""
        ...


class WebSocketHub:
    """Connections by subscription id, each bound until its token expires."""

    def __init__(self) -> None:
        self._bound: dict[str, dict[Connection, float]] = {}

    def bind(self, subscription: str, connection: Connection, expires: float) -> None:
        """Deliver the subscription's notifications on ``connection`` until ``expires``
        (epoch seconds; binding again with a new token extends it)."""
        self._bound.setdefault(subscription, {})[connection] = expires

    def unbind(self, connection: Connection) -> None:
        """Forget a closed connection."""
        for subscription in list(self._bound):
            self._bound[subscription].pop(connection, None)
            if not self._bound[subscription]:
                del self._bound[subscription]

    def _live(self, subscription: str) -> list[Connection]:
        now = time.time()
        bound = self._bound.get(subscription, {})
        for connection in [c for c, expires in bound.items() if expires <= now]:
            del bound[connection]
        return list(bound)

    def holds(self, subscription: str) -> bool:
        """Whether an unexpired connection is bound to the subscription here."""
        return bool(self._live(subscription))

    async def send(self, subscription: str, text: str) -> bool:
        """Send to every connection bound to the subscription; whether one received it."""
        sent = False
        for connection in self._live(subscription):
            try:
                await connection.send_text(text)
                sent = True
            except Exception as exc:  # a client gone mid-send: forget it
                log.info("websocket of subscription %s closed: %r", subscription, exc)
                self.unbind(connection)
        return sent

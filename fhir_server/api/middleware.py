"""ASGI middleware: a request id on every response, the request metrics, and one structured
access line per request.

Written as plain ASGI (not ``BaseHTTPMiddleware``) because it runs on every request and the
plain form costs a few microseconds instead of tens. Requests are counted here, around the
whole application, by interaction, resource type and status (``metrics.catalogue``), so
that every route is counted the same way and no endpoint has to remember to; with
``FHIR_SERVER_METRICS=off`` they are not counted.

The access line holds the request's coordinates only: method, path (never the query string,
which carries identifiers), status, duration, request id, interaction, resource type and the
caller's client id (never the token). No resource content is logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.api.request_facts import RequestFacts, RouteNames
from fhir_server.metrics.catalogue import observe_request

__all__ = ["RequestLogMiddleware"]

log = logging.getLogger("fhir_server.access")
_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
#: Request ids: random per process, then a counter (unique without a system call per request).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


class RequestLogMiddleware:
    """Adds ``X-Request-Id``, counts the request and logs its access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = RouteNames()
        self._counting: bool | None = None  # learnt from the settings on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            facts = self.routes.facts(scope)
            if self._counting is None:
                self._counting = _metrics_on(scope)
            if self._counting:
                observe_request(facts.interaction, facts.resource_type, status, seconds)
            _log_line(scope, facts, status, seconds, request_id)


def _metrics_on(scope: Scope) -> bool:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return services is None or services.settings.metrics != "off"


def _request_id(scope: Scope) -> bytes:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and _VALID_ID.match(value):
            return bytes(value)
    return f"{_ID_PREFIX}{next(_ID_COUNTER):020x}".encode()


def _log_line(scope: Scope, facts: RequestFacts, status: int, seconds: float,
              request_id: bytes) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    method, path = scope.get("method"), scope.get("path")
    fields = {
        "request_id": request_id.decode(),
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "interaction": facts.interaction,
        "resource_type": facts.resource_type or None,
        "client_id": facts.client_id,
    }
    log.info("%s %s %d %.1f ms %s%s client=%s id=%s", method, path, status, seconds * 1000,
             facts.interaction, f" {facts.resource_type}" if facts.resource_type else "",
             facts.client_id or "-", fields["request_id"], extra={"fields": fields})

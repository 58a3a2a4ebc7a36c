"""Baseline: a bare ASGI callable that answers every request with one fixed FHIR Patient.

Served by the same uvicorn with the same worker count as the FHIR server, it measures what the
HTTP stack alone costs (uvicorn, the event loop, the loopback TCP path and wrk itself), so the
FHIR server's figures can be read as a ratio to it. It reads and discards the request body, so
a POST under it costs what receiving the body costs and nothing more.

Run: ``python -m uvicorn baseline_app:app --app-dir benchmarks --workers 2``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from patients import patient_document

__all__ = ["app"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY = patient_document(0)[:-1] + b',"id":"bench-0","meta":{"versionId":"1"}}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(_BODY)).encode()),
    ],
}
_ANSWER = {"type": "http.response.body", "body": _BODY}


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """Answer HTTP requests with the fixed Patient; accept the lifespan protocol."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send(_START)
    await send(_ANSWER)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

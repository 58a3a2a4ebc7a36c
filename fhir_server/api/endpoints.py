"""The HTTP endpoints outside FHIR interactions: liveness and readiness, and the routing of
everything below the FHIR base to ``api.fhir``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import dev_idp, launch, metrics_endpoint, smart
from fhir_server.interactions.context import Services

__all__ = ["ENDPOINTS", "Endpoint"]

Endpoint = Callable[[Request], Awaitable[Response]]


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: the storage answers a query."""
    services: Services = request.app.state.services
    try:
        await services.store.ping()
    except Exception:
        return Response(b'{"status":"unavailable"}', 503, media_type="application/json")
    return Response(b'{"status":"ready"}', media_type="application/json")


ENDPOINTS: dict[str, Endpoint] = {
    "healthz": healthz,
    "readyz": readyz,
    "metrics": metrics_endpoint.metrics,
    "smart-configuration": smart.smart_config,
    "jwks": smart.jwks,
    "token": smart.token,
    **launch.ENDPOINTS,
    **dev_idp.ENDPOINTS,
}

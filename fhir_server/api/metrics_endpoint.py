"""``GET /metrics``: the Prometheus figures, off the FHIR base, behind their own setting.

``FHIR_SERVER_METRICS``: ``loopback`` (the default) answers only connections from 127.0.0.0/8
and ::1 (a Prometheus on the same host, or one reaching it through an SSH tunnel); ``token``
wants ``Authorization: Bearer <FHIR_SERVER_METRICS_TOKEN>`` from any address; ``open`` answers
anyone (a private network); ``off`` answers 404. The FHIR access tokens play no part: a
scraper is not a FHIR client. Behind a reverse proxy on the same host every connection comes
from loopback, so such a proxy must not pass ``/metrics`` on (docs/operations.md).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.metrics.exposition import CONTENT_TYPE, render
from fhir_server.settings import Settings

__all__ = ["metrics", "scrape_allowed"]


def scrape_allowed(settings: Settings, client_host: str | None,
                   authorization: str | None) -> bool:
    """Whether a scrape from ``client_host`` with that Authorization header may be answered."""
    mode = settings.metrics
    if mode == "open":
        return True
    if mode == "token":
        expected = f"Bearer {settings.metrics_token}"
        return bool(settings.metrics_token) and hmac.compare_digest(
            (authorization or "").encode(), expected.encode())
    if mode == "loopback":
        return _is_loopback(client_host)
    return False


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def metrics(request: Request) -> Response:
    """The figures in the Prometheus text format; 404 when off, 403 when not allowed."""
    settings: Settings = request.app.state.services.settings
    if settings.metrics == "off":
        return Response(b"metrics are off\n", 404, media_type="text/plain")
    client = request.client.host if request.client else None
    if not scrape_allowed(settings, client, request.headers.get("authorization")):
        return Response(b"metrics are not served to this client\n", 403,
                        media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    return Response(render(), media_type=CONTENT_TYPE)

"""Cross-origin resource sharing (CORS) for browser apps, off unless origins are configured.

``FHIR_SERVER_CORS_ORIGINS`` (a JSON list, ``["https://app.example.vn"]``, or ``["*"]``) names
the origins whose pages may call the API. Preflight requests (``OPTIONS`` with
``Access-Control-Request-Method``) are answered before routing and without a token; actual
responses carry ``Access-Control-Allow-Origin`` and expose the headers a FHIR client reads.
Tokens travel in ``Authorization``, so no cookies (credentials mode) are allowed.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "cors_middleware"]

EXPOSED_HEADERS = ("Location", "Content-Location", "ETag", "Last-Modified", "X-Request-Id")
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "Accept", "Prefer", "If-Match", "If-None-Match",
    "If-None-Exist", "If-Modified-Since", "X-Request-Id",
)
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def cors_middleware(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """Return ``app`` behind the CORS middleware for ``origins`` (``app`` itself if none)."""
    if not origins:
        return app
    return CORSMiddleware(app, allow_origins=origins, allow_methods=_METHODS,
                          allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
                          max_age=3600)

"""The HTTP routes: the endpoints outside FHIR (health, the authorization server) and, below
the FHIR base, the router's own table (``router.routes.ROUTES``), which one endpoint serves.
No logic here.
"""

from __future__ import annotations

from fhir_server.router.routes import ROUTES as FHIR_ROUTES
from fhir_server.subscriptions.binding_tokens import WEBSOCKET_PATH

__all__ = ["FHIR_BASE_PATH", "OTHER_ROUTES", "ROUTES", "WEBSOCKET_ROUTES"]

FHIR_BASE_PATH = "/fhir"

#: (method, path, endpoint name) of what is not a FHIR interaction. Matched before the FHIR
#: routes.
OTHER_ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/healthz", "healthz"),
    ("GET", "/readyz", "readyz"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/fhir/.well-known/smart-configuration", "smart-configuration"),
    ("GET", "/fhir/.well-known/jwks.json", "jwks"),
    ("POST", "/fhir/auth/token", "token"),
    ("GET", "/fhir/auth/authorize", "authorize"),
    ("POST", "/fhir/auth/authorize", "authorize"),
    ("GET", "/fhir/auth/callback", "sign-in-callback"),
    ("GET", "/fhir/auth/consent", "consent"),
    ("POST", "/fhir/auth/consent", "consent"),
    ("GET", "/fhir/auth/apps", "apps"),
    ("POST", "/fhir/auth/apps", "apps"),
    ("POST", "/fhir/auth/revoke", "revoke"),
    ("POST", "/fhir/auth/introspect", "introspect"),
    ("POST", "/fhir/auth/register", "register"),
    ("GET", "/dev-idp/.well-known/openid-configuration", "dev-idp-metadata"),
    ("GET", "/dev-idp/jwks", "dev-idp-jwks"),
    ("GET", "/dev-idp/authorize", "dev-idp-authorize"),
    ("POST", "/dev-idp/authorize", "dev-idp-authorize"),
    ("POST", "/dev-idp/token", "dev-idp-token"),
]

#: Every (method, path pattern, name) the server answers, the FHIR ones under the base.
ROUTES: list[tuple[str, str, str]] = OTHER_ROUTES + [
    (route.method, f"{FHIR_BASE_PATH}/{route.pattern}".rstrip("/"), route.name)
    for route in FHIR_ROUTES
]

#: Websocket endpoints (not HTTP routes): the subscriptions' websocket channel, whose access
#: is the binding token of ``$get-ws-binding-token`` (``api.websocket``).
WEBSOCKET_ROUTES: list[str] = [f"{FHIR_BASE_PATH}/{WEBSOCKET_PATH}"]

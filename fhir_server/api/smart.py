"""The server's own small authorization server (SMART App Launch and Backend Services):
``/.well-known/smart-configuration``, the JWKS of its signing key, and the token endpoint
(``client_credentials`` with a ``private_key_jwt`` client assertion). All are public; every
token issuance and refusal leaves an AuditEvent."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.routes import ROUTES
from fhir_server.interactions.context import Services
from fhir_server.security.audit import TOKEN_ISSUANCE, audit_record
from fhir_server.security.client_assertion import SqliteJtiStore
from fhir_server.security.clients import ClientRegistry, auth_database_path
from fhir_server.security.keys import load_server_key
from fhir_server.security.oauth import INVALID_REQUEST, OAuthError
from fhir_server.security.token_endpoint import issue_token, smart_configuration

__all__ = ["jwks", "smart_config", "token"]

_JSON = "application/json"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


#: What the SMART document may claim only when the server has an authorization endpoint.
_AUTHORIZE_ONLY = ("authorization_endpoint", "code_challenge_methods_supported")
_AUTHORIZE_CAPABILITIES = ("launch-", "client-public", "authorize-", "sso-", "context-")


def advertised(body: dict[str, Any], base_url: str) -> dict[str, Any]:
    """``body`` cut to what the route table has: without an ``authorize`` route there is no
    authorization endpoint, PKCE or launch to advertise; with one, its URL is given."""
    path = next((path for _, path, name in ROUTES if name == "authorize"), None)
    if path is not None:
        return {**body, "authorization_endpoint": base_url.rstrip("/") + path.removeprefix(
            "/fhir")}
    kept = {key: value for key, value in body.items() if key not in _AUTHORIZE_ONLY}
    kept["capabilities"] = [c for c in body.get("capabilities", ())
                            if not c.startswith(_AUTHORIZE_CAPABILITIES)]
    return kept


async def smart_config(request: Request) -> Response:
    """GET [base]/.well-known/smart-configuration (what the server has, nothing more)."""
    base = _services(request).base_url
    body = advertised(smart_configuration(base), base)
    return Response(orjson.dumps(body), media_type=_JSON)


async def jwks(request: Request) -> Response:
    """GET [base]/.well-known/jwks.json: the public key that signs the server's tokens."""
    key = load_server_key(_services(request).settings.data_dir)
    return Response(orjson.dumps(key.jwks()), media_type=_JSON)


def _form(body: bytes) -> dict[str, str]:
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(INVALID_REQUEST, f"{name} is repeated")
        form[name] = value
    return form


async def token(request: Request) -> Response:
    """POST [base]/auth/token: SMART Backend Services token request."""
    services = _services(request)
    data_dir = services.settings.data_dir
    status, client_id = 200, None
    try:
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise OAuthError(INVALID_REQUEST, "send the form as x-www-form-urlencoded")
        form = _form(await request.body())
        client_id = form.get("client_id")
        database = auth_database_path(data_dir)
        answer = issue_token(form, clients=ClientRegistry(database),
                             jti_store=SqliteJtiStore(database),
                             server_key=load_server_key(data_dir), base_url=services.base_url)
        body, headers = orjson.dumps(answer), _NO_STORE
    except OAuthError as exc:
        status, body, headers = exc.status, orjson.dumps(exc.to_json()), _NO_STORE
    if services.audit_trail is not None:
        await services.audit_trail.record(audit_record(
            TOKEN_ISSUANCE, status=status, client_id=client_id,
            network_address=request.client.host if request.client else None))
    return Response(body, status, headers, media_type=_JSON)

"""The server's own authorization server (SMART App Launch and Backend Services):
``/.well-known/smart-configuration``, the JWKS of its signing keys, and the token endpoint
(``client_credentials`` with a ``private_key_jwt`` client assertion here; the App Launch grants
through ``api/launch.py``). All are public; every token issuance and refusal leaves an
AuditEvent."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.launch import app_launch, oauth_request, oauth_response
from fhir_server.interactions.context import Services
from fhir_server.security.audit import TOKEN_ISSUANCE, audit_record
from fhir_server.security.client_assertion import SqliteJtiStore
from fhir_server.security.clients import ClientRegistry, auth_database_path
from fhir_server.security.keys import load_id_token_key, load_server_key
from fhir_server.security.oauth import INVALID_REQUEST, OAuthError
from fhir_server.security.token_endpoint import issue_token, smart_configuration

__all__ = ["jwks", "smart_config", "token"]

_JSON = "application/json"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def smart_config(request: Request) -> Response:
    """GET [base]/.well-known/smart-configuration."""
    services = _services(request)
    body = smart_configuration(services.base_url,
                               app_launch=services.settings.app_launch_enabled(),
                               registration=services.settings.dynamic_registration)
    return Response(orjson.dumps(body), media_type=_JSON)


async def jwks(request: Request) -> Response:
    """GET [base]/.well-known/jwks.json: the public keys that sign the server's access tokens
    (ES256) and, when App Launch is on, its OpenID Connect ID tokens (RS256)."""
    settings = _services(request).settings
    keys = load_server_key(settings.data_dir).jwks()
    if settings.app_launch_enabled():
        keys["keys"].append(load_id_token_key(settings.data_dir).public_jwk())
    return Response(orjson.dumps(keys), media_type=_JSON)


def _form(body: bytes) -> dict[str, str]:
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(INVALID_REQUEST, f"{name} is repeated")
        form[name] = value
    return form


async def token(request: Request) -> Response:
    """POST [base]/auth/token: ``client_credentials`` (SMART Backend Services) here, the grants
    of App Launch (``authorization_code``, ``refresh_token``) by the authorization server."""
    services = _services(request)
    client_id = None
    try:
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise OAuthError(INVALID_REQUEST, "send the form as x-www-form-urlencoded")
        form = _form(await request.body())
        client_id = form.get("client_id")
        response = await _grant(request, services, form)
    except OAuthError as exc:
        response = Response(orjson.dumps(exc.to_json()), exc.status, _NO_STORE, media_type=_JSON)
    if services.audit_trail is not None:
        await services.audit_trail.record(audit_record(
            TOKEN_ISSUANCE, status=response.status_code, client_id=client_id,
            network_address=request.client.host if request.client else None))
    return response


async def _grant(request: Request, services: Services, form: dict[str, str]) -> Response:
    launch = app_launch(request)
    if form.get("grant_type") != "client_credentials" and launch is not None:
        answer = await launch.token(await oauth_request(request, "token"))
        return oauth_response(answer)
    data_dir = services.settings.data_dir
    database = auth_database_path(data_dir)
    body = issue_token(form, clients=ClientRegistry(database), jti_store=SqliteJtiStore(database),
                       server_key=load_server_key(data_dir), base_url=services.base_url)
    return Response(orjson.dumps(body), 200, _NO_STORE, media_type=_JSON)

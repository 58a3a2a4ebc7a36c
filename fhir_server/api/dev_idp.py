"""HTTP endpoints of the development identity provider (``/dev-idp``, DEVELOPMENT ONLY).

Off (404) unless ``FHIR_SERVER_DEV_IDENTITY_PROVIDER=true``; see
:mod:`fhir_server.authorization.dev_idp` for what it is and why it keeps no state.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_server.api.launch import dev_issuer
from fhir_server.authorization.dev_idp import DevIdentityProvider, DevIdpError
from fhir_server.authorization.pages import dev_sign_in_page
from fhir_server.interactions.context import Services

__all__ = ["ENDPOINTS", "PUBLIC_ENDPOINTS"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def _provider(request: Request) -> DevIdentityProvider | None:
    state = request.app.state
    services: Services = state.services
    if not services.settings.dev_identity_provider:
        return None
    if getattr(state, "dev_idp", None) is None:
        state.dev_idp = DevIdentityProvider(services.settings.data_dir,
                                            dev_issuer(services.settings),
                                            services.base_url + "/auth/callback")
    provider: DevIdentityProvider = state.dev_idp
    return provider


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, _NO_STORE, media_type="application/json")


def _off() -> Response:
    return _json({"error": "not_found"}, 404)


async def metadata(request: Request) -> Response:
    """GET /dev-idp/.well-known/openid-configuration."""
    provider = _provider(request)
    return _off() if provider is None else _json(provider.metadata())


async def jwks(request: Request) -> Response:
    """GET /dev-idp/jwks."""
    provider = _provider(request)
    return _off() if provider is None else _json(provider.jwks())


async def authorize(request: Request) -> Response:
    """GET /dev-idp/authorize shows the sign-in form; POST signs in and redirects back."""
    provider = _provider(request)
    if provider is None:
        return _off()
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if request.method == "POST":
        params = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    person = {"cccd": params.pop("cccd", ""), "name": params.pop("name", "")}
    try:
        provider.check_request(params)
        if request.method == "GET":
            return HTMLResponse(dev_sign_in_page(provider.issuer + "/authorize", params))
        code = provider.issue_code(params, person["cccd"], person["name"])
    except DevIdpError as exc:
        return HTMLResponse(dev_sign_in_page(provider.issuer + "/authorize", params, str(exc)),
                            400)
    query = urlencode({"code": code, "state": params["state"]})
    return RedirectResponse(f"{params['redirect_uri']}?{query}", 302)


async def token(request: Request) -> Response:
    """POST /dev-idp/token: the code for an ID token."""
    provider = _provider(request)
    if provider is None:
        return _off()
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    try:
        return _json(provider.token_response(form))
    except DevIdpError as exc:
        return _json({"error": "invalid_grant", "error_description": str(exc)}, 400)


ENDPOINTS: dict[str, Endpoint] = {
    "dev-idp-metadata": metadata,
    "dev-idp-jwks": jwks,
    "dev-idp-authorize": authorize,
    "dev-idp-token": token,
}
PUBLIC_ENDPOINTS = frozenset(ENDPOINTS)

"""HTTP endpoints of SMART App Launch: authorize, the sign-in callback, consent, the citizen's
apps page, revocation and introspection (the token endpoint is ``api/smart.py``).

They translate Starlette requests into the steps of :mod:`fhir_server.authorization.launch`
and render what those answer: a redirect, an HTML page (no-store, not framable), or OAuth JSON.
All answer 404 when no identity provider is configured (App Launch is off). Two cookies bind
the flow to one browser: ``fhir_browser`` (which sign-ins it started) and ``fhir_session`` (who
is signed in); both HttpOnly, SameSite=Lax, limited to ``<base>/auth``, Secure on https.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_server.audit_record import TOKEN_REVOCATION, audit_record
from fhir_server.authorization import pages
from fhir_server.authorization.approvals import Approvals
from fhir_server.authorization.identity import UpstreamProvider
from fhir_server.authorization.launch import AppLaunch, Redirect, Step
from fhir_server.authorization.model import AuthConfig, OAuthRequest, OAuthResponse
from fhir_server.authorization.sessions import SignIns, new_secret
from fhir_server.authorization.store import AuthStore
from fhir_server.errors import Unauthorized
from fhir_server.interactions.context import Services
from fhir_server.security.client_assertion import SqliteJtiStore
from fhir_server.security.clients import ClientRegistry, auth_database_path
from fhir_server.security.keys import load_id_token_key, load_server_key
from fhir_server.security.scopes import ScopeContext
from fhir_server.settings import Settings

__all__ = ["ENDPOINTS", "PUBLIC_ENDPOINTS", "app_launch", "oauth_request", "oauth_response"]

BROWSER_COOKIE, SESSION_COOKIE = "fhir_browser", "fhir_session"
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                            "frame-ancestors 'none'",
                 "Referrer-Policy": "no-referrer"}
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def dev_issuer(settings: Settings) -> str:
    """The issuer URL of the development identity provider (``<origin>/dev-idp``)."""
    parts = urlsplit(settings.public_base_url())
    return f"{parts.scheme}://{parts.netloc}/dev-idp"


def _upstream(settings: Settings, http: Callable[[], httpx.AsyncClient]) -> UpstreamProvider:
    if settings.identity_issuer:
        return UpstreamProvider(settings.identity_issuer, settings.identity_client_id,
                                settings.identity_client_secret, settings.identity_cccd_claim,
                                settings.identity_scope, http)
    return UpstreamProvider(dev_issuer(settings), "fhir-server", "", "cccd", "openid", http)


def _build(services: Services, http: Callable[[], httpx.AsyncClient]) -> AppLaunch:
    settings = services.settings
    database = auth_database_path(settings.data_dir)
    store = AuthStore(database, settings.sqlite_synchronous)
    config = AuthConfig(
        store, ClientRegistry(database), SqliteJtiStore(database),
        load_server_key(settings.data_dir), load_id_token_key(settings.data_dir),
        services.base_url, settings.access_token_ttl, settings.refresh_token_ttl,
        settings.authorization_code_ttl)
    return AppLaunch(services, config, _upstream(settings, http),
                     SignIns(store, settings.sign_in_ttl), Approvals(store))


def app_launch(request: Request) -> AppLaunch | None:
    """The application's :class:`AppLaunch` (built on first use), or None when it is off.

    ``app.state.identity_http`` (tests set it) makes the clients that reach the provider.
    """
    state = request.app.state
    services: Services = state.services
    if not services.settings.app_launch_enabled():
        return None
    if getattr(state, "app_launch", None) is None:
        http = getattr(state, "identity_http", None) or (lambda: httpx.AsyncClient(timeout=10))
        state.app_launch = _build(services, http)
    launch: AppLaunch = state.app_launch
    return launch


def _params(request: Request, body: bytes) -> list[tuple[str, str]]:
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    if body:
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return pairs


async def oauth_request(request: Request, path: str) -> OAuthRequest:
    """The OAuth view of a request to ``<base>/auth/<path>`` (its public URL, for Authlib)."""
    services: Services = request.app.state.services
    headers = {"Authorization": request.headers["authorization"]} if (
        "authorization" in request.headers) else {}
    body = await request.body() if request.method == "POST" else b""
    return OAuthRequest(request.method, f"{services.base_url}/auth/{path}", headers,
                        _params(request, body))


def oauth_response(answer: OAuthResponse) -> Response:
    """Render an Authlib answer: JSON with its headers, or a redirect."""
    headers = {name: value for name, value in answer.headers if name.lower() != "content-type"}
    body = orjson.dumps(answer.body) if isinstance(answer.body, dict) else str(answer.body)
    return Response(body, answer.status, headers, media_type="application/json")


def _language(request: Request) -> str:
    return "en" if request.query_params.get("lang") == "en" else "vi"


def _cookie_flags(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    parts = urlsplit(services.base_url)
    return {"httponly": True, "samesite": "lax", "secure": parts.scheme == "https",
            "path": parts.path.rstrip("/") + "/auth"}


def _render(request: Request, step: Step, browser: str | None = None) -> Response:
    services: Services = request.app.state.services
    if isinstance(step, Redirect):
        response: Response = RedirectResponse(step.location, 302, headers=_PAGE_HEADERS)
        cookies = {**step.cookies}
        if "session" in cookies:
            response.set_cookie(SESSION_COOKIE, cookies["session"], **_cookie_flags(request))
    else:
        html = pages.render(step, _language(request), services.base_url)
        response = HTMLResponse(html, step.status, headers=_PAGE_HEADERS)
    if browser is not None and request.cookies.get(BROWSER_COOKIE) != browser:
        response.set_cookie(BROWSER_COOKIE, browser, **_cookie_flags(request))
    return response


def _not_found() -> Response:
    return Response(b'{"error":"not_found"}', 404, media_type="application/json")


async def authorize(request: Request) -> Response:
    """GET or POST <base>/auth/authorize (SMART ``authorize-post``)."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    browser = request.cookies.get(BROWSER_COOKIE) or new_secret()
    body = await request.body() if request.method == "POST" else b""
    step = await launch.authorize(_params(request, body), browser,
                                  request.cookies.get(SESSION_COOKIE))
    return _render(request, step, browser)


async def callback(request: Request) -> Response:
    """GET <base>/auth/callback: the upstream provider sends the browser back here."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    return _render(request, await launch.callback(params, request.cookies.get(BROWSER_COOKIE)))


def _form(body: bytes) -> dict[str, list[str]]:
    form: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form[name].append(value)
    return dict(form)


async def consent(request: Request) -> Response:
    """GET <base>/auth/consent shows the consent page; POST takes the decision."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    browser, session = request.cookies.get(BROWSER_COOKIE), request.cookies.get(SESSION_COOKIE)
    if request.method == "POST":
        step = await launch.decide(_form(await request.body()), browser, session)
    else:
        step = await launch.consent(request.query_params.get("request", ""), browser, session,
                                    _language(request))
    return _render(request, step)


async def apps(request: Request) -> Response:
    """GET <base>/auth/apps: the citizen's apps with access (signing in first if needed);
    POST revokes one."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    session = request.cookies.get(SESSION_COOKIE)
    if request.method == "POST":
        return _render(request, await launch.revoke(_form(await request.body()), session))
    step: Step | None = await launch.manage(session, request.query_params.get("revoked"))
    if step is None:
        browser = request.cookies.get(BROWSER_COOKIE) or new_secret()
        return _render(request, await launch.manage_sign_in(browser), browser)
    return _render(request, step)


async def revoke(request: Request) -> Response:
    """POST <base>/auth/revoke: RFC 7009 revocation by the app (audited)."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    oauth = await oauth_request(request, "revoke")
    response = oauth_response(await launch.endpoint("revocation", oauth))
    services: Services = request.app.state.services
    if services.audit_trail is not None:
        await services.audit_trail.record(audit_record(
            TOKEN_REVOCATION, status=response.status_code,
            client_id=dict(oauth.params).get("client_id"),
            network_address=request.client.host if request.client else None))
    return response


async def introspect(request: Request) -> Response:
    """POST <base>/auth/introspect: RFC 7662 for an app's own tokens (client authentication),
    or for any token with a backend service's bearer token (SMART token introspection)."""
    launch = app_launch(request)
    if launch is None:
        return _not_found()
    oauth = await oauth_request(request, "introspect")
    authorization = request.headers.get("authorization", "")
    services: Services = request.app.state.services
    if not authorization.lower().startswith("bearer ") or services.verifier is None:
        return oauth_response(await launch.endpoint("introspection", oauth))
    try:
        caller = services.verifier.verify_authorization(authorization)
    except Unauthorized as exc:
        return Response(b'{"error":"invalid_token"}', 401, exc.headers,
                        media_type="application/json")
    if caller.patient_id is not None or not any(
            scope.context is ScopeContext.SYSTEM for scope in caller.scopes):
        return Response(b'{"error":"insufficient_scope"}', 403, media_type="application/json")
    return oauth_response(await launch.introspect_any(dict(oauth.params)))


async def register(request: Request) -> Response:
    """POST <base>/auth/register: RFC 7591 dynamic registration (404 unless switched on)."""
    launch = app_launch(request)
    if launch is None or not launch.services.settings.dynamic_registration:
        return _not_found()
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return Response(b'{"error":"invalid_client_metadata","error_description":"send a JSON'
                        b' object"}', 400, media_type="application/json")
    services: Services = request.app.state.services
    oauth = OAuthRequest("POST", services.base_url + "/auth/register", {}, [], body)
    return oauth_response(await launch.endpoint("client_registration", oauth))


ENDPOINTS: dict[str, Endpoint] = {
    "authorize": authorize,
    "sign-in-callback": callback,
    "consent": consent,
    "apps": apps,
    "revoke": revoke,
    "introspect": introspect,
    "register": register,
}
PUBLIC_ENDPOINTS = frozenset(ENDPOINTS)

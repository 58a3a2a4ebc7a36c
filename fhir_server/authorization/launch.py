"""The standalone launch, step by step, without HTTP types (``api/launch.py`` serves it).

1. ``authorize``: Authlib validates the app's request (client, exact redirect URI, scope, PKCE
   S256, ``state``, ``aud``, nonce); a request that names no valid client and redirect URI gets
   an error page, never a redirect. The request is kept as a :class:`SignIn` bound to the
   browser's cookie; a person not signed in on this browser is sent to the upstream provider.
2. ``callback``: the provider's answer is checked (state, browser, code exchange, ID token) and
   the person's Patient is found by CCCD. No Patient: a clear page, and no code. Else the
   person is signed in on this browser (session cookie) and goes on to consent.
3. ``consent``: if the person already approved everything asked, the code is issued at once;
   else the consent page lists each scope in plain words, all ticked.
4. ``decide``: the form (CSRF token, one use) approves the ticked scopes, or denies. Approval is
   remembered, recorded as a Consent (audited), and the code carries the approved scopes only.
5. ``manage`` and ``revoke``: the person's apps with access; revoking one forgets the approval,
   revokes every token the app holds for the person and sets its Consent inactive.

Each step answers a :class:`Redirect` or a :class:`Page` for the HTTP layer to render.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import OAuth2Error

from fhir_server.authorization import consent, records
from fhir_server.authorization.approvals import Approval, Approvals
from fhir_server.authorization.endpoints import find_token, introspection_payload
from fhir_server.authorization.identity import SignInFailed, UpstreamProvider
from fhir_server.authorization.model import AuthConfig, OAuthRequest, OAuthResponse, Person
from fhir_server.authorization.server import SmartAuthorizationServer
from fhir_server.authorization.sessions import Session, SignIn, SignIns, new_secret
from fhir_server.interactions.context import Services
from fhir_server.security.clients import APP_WORDS, RegisteredClient

__all__ = ["AppLaunch", "Page", "Redirect", "Step"]

_ALWAYS = frozenset({"launch/patient"})


@dataclass(frozen=True)
class Redirect:
    """Send the browser to ``location`` (302), setting the cookies given."""

    location: str
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """Show page ``kind`` (``consent``, ``apps``, ``no-patient``, ``error``) with ``data``."""

    kind: str
    status: int
    data: Mapping[str, Any]


Step = Redirect | Page


def _error(reason: str, status: int = 400) -> Page:
    return Page("error", status, {"reason": reason})


def _to_app(redirect_uri: str, state: str | None, **params: str) -> Redirect:
    pairs = list(params.items()) + ([("state", state)] if state else [])
    return Redirect(add_params_to_uri(redirect_uri, pairs))


class AppLaunch:
    """The steps of a standalone launch and of managing apps, for one server."""

    def __init__(self, services: Services, config: AuthConfig, upstream: UpstreamProvider,
                 sign_ins: SignIns, approvals: Approvals) -> None:
        self.services = services
        self.config = config
        self.server = SmartAuthorizationServer(config, services.settings.dynamic_registration)
        self.upstream = upstream
        self.sign_ins = sign_ins
        self.approvals = approvals
        self.authorize_url = config.base_url + "/auth/authorize"
        self.callback_url = config.base_url + "/auth/callback"

    async def token(self, request: OAuthRequest) -> OAuthResponse:
        """The token endpoint for ``authorization_code`` and ``refresh_token``."""
        return await self._answer(self.server.create_token_response, request)

    async def endpoint(self, name: str, request: OAuthRequest) -> OAuthResponse:
        """The ``revocation``, ``introspection`` or ``client_registration`` endpoint."""
        return await self._answer(self.server.create_endpoint_response, name, request)

    async def _answer(self, call: Callable[..., OAuthResponse], *args: Any) -> OAuthResponse:
        """Run an Authlib endpoint in a worker thread; an error raised before Authlib's own
        handling (plain http off the loopback: ``insecure_transport``) is answered too."""
        try:
            return await asyncio.to_thread(call, *args)
        except OAuth2Error as error:
            response: OAuthResponse = self.server.handle_response(*error())
            return response

    async def introspect_any(self, form: Mapping[str, str]) -> OAuthResponse:
        """Introspection for a backend service (already verified by its bearer token)."""
        token = await asyncio.to_thread(find_token, self.config, form.get("token", ""),
                                        form.get("token_type_hint"))
        payload = introspection_payload(self.config, token)
        return OAuthResponse(200, payload, [("Cache-Control", "no-store"),
                                            ("Pragma", "no-cache")])

    def _grant(self, params: Sequence[tuple[str, str]]) -> Any:
        """Validate an authorization request; raises Authlib's ``OAuth2Error``."""
        return self.server.get_consent_grant(OAuthRequest("GET", self.authorize_url, {},
                                                          list(params)))

    async def authorize(self, params: Sequence[tuple[str, str]], browser: str,
                        session: str | None) -> Step:
        """Step 1 (GET or POST ``/auth/authorize``)."""
        try:
            await asyncio.to_thread(self._grant, params)
        except OAuth2Error as error:
            return self._refusal(error)
        sign_in = self.sign_ins.start(browser, "authorize", dict(params))
        if self.sign_ins.session(session) is not None:
            return Redirect(self._consent_url(sign_in))
        return await self._sign_in_upstream(sign_in)

    def _refusal(self, error: OAuth2Error) -> Step:
        if error.redirect_uri:  # Authlib sets it only once client and URI are validated
            return Redirect(dict(error(None)[2])["Location"])
        return _error(str(error.description or error.error))

    async def _sign_in_upstream(self, sign_in: SignIn) -> Step:
        try:
            return Redirect(await self.upstream.authorization_url(sign_in, self.callback_url))
        except SignInFailed as exc:
            return _error(str(exc), 502)

    def _consent_url(self, sign_in: SignIn) -> str:
        return self.config.base_url + "/auth/consent?" + urlencode({"request": sign_in.id})

    async def manage_sign_in(self, browser: str) -> Step:
        """Start a sign-in whose goal is the page of apps with access."""
        return await self._sign_in_upstream(self.sign_ins.start(browser, "manage", {}))

    async def callback(self, params: Mapping[str, str], browser: str | None) -> Step:
        """Step 2 (GET ``/auth/callback``): the upstream provider's answer."""
        sign_in = self.sign_ins.by_upstream_state(params.get("state", ""))
        if sign_in is None or not sign_in.belongs_to(browser):
            return _error("this sign-in is unknown, expired, or was started in another browser")
        if "code" not in params:
            self.sign_ins.finish(sign_in.id)
            return self._back_to_app(sign_in, "access_denied") or _error("sign-in was refused")
        try:
            identity = await self.upstream.identity(params["code"], sign_in, self.callback_url)
        except SignInFailed as exc:
            self.sign_ins.finish(sign_in.id)
            return _error(str(exc), 502)
        patient_id = await records.patient_by_cccd(self.services, identity.cccd)
        if patient_id is None:
            self.sign_ins.finish(sign_in.id)
            back = self._back_to_app(sign_in, "access_denied")
            return Page("no-patient", 403, {"back": back.location if back else None})
        cookie = self.sign_ins.open_session(identity.subject, patient_id, identity.name)
        target = self._consent_url(sign_in) if sign_in.purpose == "authorize" else (
            self.config.base_url + "/auth/apps")
        if sign_in.purpose != "authorize":
            self.sign_ins.finish(sign_in.id)
        return Redirect(target, {"session": cookie})

    def _back_to_app(self, sign_in: SignIn, error: str) -> Redirect | None:
        redirect_uri = sign_in.params.get("redirect_uri")
        if sign_in.purpose != "authorize" or not redirect_uri:
            return None
        return _to_app(redirect_uri, sign_in.params.get("state"), error=error)

    def _pending(self, sign_in_id: str, browser: str | None, session: str | None
                 ) -> tuple[SignIn, Session] | Page:
        sign_in = self.sign_ins.get(sign_in_id)
        if sign_in is None or not sign_in.belongs_to(browser):
            return _error("this authorization request is unknown, expired, or was started "
                          "in another browser")
        person = self.sign_ins.session(session)
        if person is None:
            return _error("you are not signed in (or your sign-in expired)", 401)
        return sign_in, person

    async def consent(self, sign_in_id: str, browser: str | None, session: str | None,
                      language: str) -> Step:
        """Step 3 (GET ``/auth/consent``)."""
        pending = self._pending(sign_in_id, browser, session)
        if isinstance(pending, Page):
            return pending
        sign_in, person = pending
        try:
            grant = await asyncio.to_thread(self._grant, list(sign_in.params.items()))
        except OAuth2Error as error:
            self.sign_ins.finish(sign_in.id)
            return self._refusal(error)
        requested: str = grant.request.scope
        client: RegisteredClient = grant.request.client.client
        remembered = self.approvals.get(person.subject, client.client_id)
        if (remembered is not None and remembered.covers(requested)
                and sign_in.params.get("prompt") != "consent"):
            self.sign_ins.finish(sign_in.id)
            return await self._issue_code(sign_in, person, requested)
        return Page("consent", 200, {
            "app": client.name or client.client_id, "request": sign_in.id,
            "csrf": sign_in.csrf, "person": person.name or "",
            "scopes": [(w, consent.describe(w, language))
                       for w in requested.split() if w not in _ALWAYS]})

    async def decide(self, form: Mapping[str, Sequence[str]], browser: str | None,
                     session: str | None) -> Step:
        """Step 4 (POST ``/auth/consent``): the citizen's decision."""
        pending = self._pending(_first(form, "request"), browser, session)
        if isinstance(pending, Page):
            return pending
        sign_in, person = pending
        if _first(form, "csrf") != sign_in.csrf or not self.sign_ins.finish(sign_in.id):
            return _error("this form was already used or is not from this server", 403)
        if _first(form, "decision") != "approve":
            return _to_app(sign_in.params["redirect_uri"], sign_in.params.get("state"),
                           error="access_denied")
        try:
            grant = await asyncio.to_thread(self._grant, list(sign_in.params.items()))
        except OAuth2Error as error:
            return self._refusal(error)
        ticked = set(form.get("scope", ()))
        grantable: str = grant.request.scope
        approved = " ".join(w for w in grantable.split() if w in ticked or w in _ALWAYS)
        if not any(w not in APP_WORDS for w in approved.split()):
            return _to_app(sign_in.params["redirect_uri"], sign_in.params.get("state"),
                           error="access_denied", error_description="nothing was approved")
        await self._remember(person, grant.request.client.client, approved)
        return await self._issue_code(sign_in, person, approved)

    async def _remember(self, person: Session, client: RegisteredClient, scope: str) -> None:
        """Remember the approval and record it as the app's Consent (audited)."""
        earlier = self.approvals.get(person.subject, client.client_id)
        since = time.time()
        caller = records.citizen(self.services, person.subject, person.patient_id,
                                 client.client_id)
        resource = consent.consent_resource(client, person.patient_id, scope, since)
        consent_id = await records.save_consent(self.services, caller, resource,
                                                earlier.consent_id if earlier else None)
        self.approvals.remember(Approval(person.subject, client.client_id, person.patient_id,
                                         scope, consent_id, since))

    async def _issue_code(self, sign_in: SignIn, person: Session, scope: str) -> Step:
        user = Person(person.subject, person.patient_id, new_secret(),
                      self.sign_ins.signed_in_at(person))
        params = {**sign_in.params, "scope": scope}

        def respond() -> OAuthResponse:
            grant = self._grant(list(params.items()))
            response: OAuthResponse = self.server.create_authorization_response(
                request=grant.request, grant_user=user, grant=grant)
            return response

        response = await asyncio.to_thread(respond)
        location = dict(response.headers).get("Location")
        return Redirect(location) if location else _error("the code could not be issued", 500)

    async def manage(self, session: str | None, notice: str | None = None) -> Step | None:
        """Step 5 (GET ``/auth/apps``): None when nobody is signed in on this browser."""
        person = self.sign_ins.session(session)
        if person is None:
            return None
        apps = []
        for approval in self.approvals.of_person(person.subject):
            client = self.config.clients.get(approval.client_id)
            apps.append({"client_id": approval.client_id,
                         "app": (client.name if client else None) or approval.client_id,
                         "since": approval.approved_at, "scopes": approval.scope.split()})
        return Page("apps", 200, {"apps": apps, "csrf": person.csrf,
                                  "person": person.name or "", "notice": notice})

    async def revoke(self, form: Mapping[str, Sequence[str]], session: str | None) -> Step:
        """Step 5 (POST ``/auth/apps``): withdraw an app's access."""
        person = self.sign_ins.session(session)
        if person is None:
            return _error("you are not signed in (or your sign-in expired)", 401)
        if _first(form, "csrf") != person.csrf:
            return _error("this form is not from this server", 403)
        client_id = _first(form, "client_id")
        approval = self.approvals.forget(person.subject, client_id)
        self.config.store.revoke_person_client(person.subject, client_id)
        client = self.config.clients.get(client_id)
        if approval is not None and client is not None:
            caller = records.citizen(self.services, person.subject, person.patient_id,
                                     client_id)
            resource = consent.consent_resource(client, person.patient_id, approval.scope,
                                                approval.approved_at, time.time())
            await records.save_consent(self.services, caller, resource, approval.consent_id)
        return Redirect(self.config.base_url + "/auth/apps?" + urlencode({"revoked": client_id}))


def _first(form: Mapping[str, Sequence[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]

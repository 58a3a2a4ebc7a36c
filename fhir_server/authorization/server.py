"""The SMART App Launch authorization server: Authlib's machinery over the project's state.

:class:`SmartAuthorizationServer` is an Authlib ``AuthorizationServer`` for framework-free
requests (:class:`~fhir_server.authorization.model.OAuthRequest` in,
:class:`~fhir_server.authorization.model.OAuthResponse` out) with the grants of
``authorization.grants``, RFC 7009 revocation, RFC 7662 introspection and, when switched on,
RFC 7591 dynamic registration. Access tokens are the
server's own ES256 JWTs (``security.tokens.mint_access_token``), carrying the Patient and the
authorization they belong to (``grant_id``); refresh tokens are random strings, issued only for
``offline_access``. ``client_credentials`` stays with ``security.token_endpoint``.

Authlib's calls are blocking (SQLite, signing): run them in a worker thread.
"""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer

from fhir_server.authorization.endpoints import Introspection, Revocation
from fhir_server.authorization.grants import (
    CodeGrant,
    IdToken,
    RotatingRefreshGrant,
    S256Challenge,
)
from fhir_server.authorization.model import (
    AppClient,
    AuthConfig,
    AuthlibRequest,
    OAuthRequest,
    OAuthResponse,
    Person,
    json_request,
)
from fhir_server.authorization.registration import Registration
from fhir_server.authorization.sessions import new_secret
from fhir_server.authorization.store import TokenFamily
from fhir_server.security.client_assertion import CLIENT_ASSERTION_TYPE, verify_client_assertion
from fhir_server.security.oauth import OAuthError
from fhir_server.security.tokens import mint_access_token

__all__ = ["SmartAuthorizationServer"]


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Authorization code + PKCE, OpenID Connect, rotating refresh tokens, revocation and
    introspection for registered apps."""

    def __init__(self, config: AuthConfig, registration: bool = False) -> None:
        super().__init__(scopes_supported=None)
        self.config = config
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method("private_key_jwt", self._authenticate_assertion)
        self.register_grant(CodeGrant, [S256Challenge(required=True), IdToken(config)])
        self.register_grant(RotatingRefreshGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        if registration:
            self.register_endpoint(Registration)

    def query_client(self, client_id: str) -> AppClient | None:
        client = self.config.clients.get(client_id)
        return AppClient(client) if client is not None and client.is_app else None

    def create_oauth2_request(self, request: Any) -> AuthlibRequest:
        if isinstance(request, AuthlibRequest):
            return request
        assert isinstance(request, OAuthRequest)
        return AuthlibRequest(request)

    def create_json_request(self, request: OAuthRequest) -> Any:
        return json_request(request)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]
                        ) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals are listened to."""

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        person: Person = request.user
        client_id = request.client.get_client_id()
        self.config.store.open_family(TokenFamily(
            person.family_id, client_id, person.subject, person.patient_id, token["scope"],
            person.auth_time, time.time()))
        if "refresh_token" in token:
            self.config.store.save_refresh_token(token["refresh_token"], person.family_id,
                                                 token["scope"], self.config.refresh_token_ttl)

    def _generate_token(self, grant_type: str, client: AppClient, user: Person | None = None,
                        scope: str | None = None, expires_in: int | None = None,
                        include_refresh_token: bool = True) -> dict[str, Any]:
        assert user is not None, "app tokens always have a citizen"
        config, scope = self.config, scope or ""
        access = mint_access_token(
            config.server_key, issuer=config.base_url, audience=config.base_url,
            subject=user.subject, scope=scope, ttl=config.access_token_ttl,
            client_id=client.client_id, patient_id=user.patient_id, grant_id=user.family_id)
        token: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                 "expires_in": config.access_token_ttl, "scope": scope,
                                 "patient": user.patient_id}
        if include_refresh_token and "offline_access" in scope.split():
            token["refresh_token"] = new_secret()
        return token

    def _authenticate_assertion(self, query_client: Any, request: Any) -> AppClient | None:
        form = request.form
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return None
        try:
            client = verify_client_assertion(
                form.get("client_assertion", ""), token_url=self.config.token_url,
                clients=self.config.clients, jti_store=self.config.jti_store)
        except OAuthError:
            return None
        return AppClient(client) if client.is_app else None

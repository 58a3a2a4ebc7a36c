"""The server's own token endpoint (SMART Backend Services) and its SMART configuration.

:func:`issue_token` handles a ``client_credentials`` request authenticated by a
``private_key_jwt`` client assertion (https://hl7.org/fhir/smart-app-launch/backend-services.html)
and returns the RFC 6749 §5.1 response; the granted scopes are the requested ones narrowed to
what the client is registered for. :func:`smart_configuration` is the
``.well-known/smart-configuration`` document. Neither knows HTTP: the API layer passes the form
fields in and renders :class:`~fhir_server.security.oauth.OAuthError` as RFC 6749 §5.2 JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_server.security.client_assertion import (
    CLIENT_ASSERTION_TYPE,
    JtiStore,
    verify_client_assertion,
)
from fhir_server.security.clients import ASSERTION_ALGORITHMS, ClientLookup, RegisteredClient
from fhir_server.security.keys import ServerKey
from fhir_server.security.oauth import (
    INVALID_REQUEST,
    INVALID_SCOPE,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    OAuthError,
)
from fhir_server.security.scopes import InvalidScope, narrow_scopes, parse_scope
from fhir_server.security.tokens import mint_access_token
from fhir_server.settings import Settings

__all__ = [
    "BACKEND_TOKEN_TTL",
    "OAuthError",
    "issue_token",
    "oauth_uris",
    "smart_configuration",
    "token_endpoint_url",
]

# SMART recommends backend-services tokens live no longer than five minutes.
BACKEND_TOKEN_TTL = 300
TOKEN_PATH = "/auth/token"
JWKS_PATH = "/.well-known/jwks.json"


def token_endpoint_url(base_url: str) -> str:
    """Return the token endpoint URL for the server at ``base_url`` (the ``aud`` of assertions)."""
    return base_url.rstrip("/") + TOKEN_PATH


def issue_token(
    form: Mapping[str, str],
    *,
    clients: ClientLookup,
    jti_store: JtiStore,
    server_key: ServerKey,
    base_url: str,
    ttl: int = BACKEND_TOKEN_TTL,
) -> dict[str, Any]:
    """Validate a token request and return ``{access_token, token_type, expires_in, scope}``.

    Raises ``OAuthError``: ``invalid_request`` for missing or wrong fields,
    ``unsupported_grant_type``, ``invalid_client`` for a failed assertion, ``invalid_scope``
    for a malformed or missing scope or one the client may not have.
    """
    _check_grant(form)
    client = verify_client_assertion(
        form["client_assertion"],
        token_url=token_endpoint_url(base_url),
        clients=clients,
        jti_store=jti_store,
    )
    if client.is_app:
        raise OAuthError(UNAUTHORIZED_CLIENT, "apps use the authorization_code grant")
    scope = _granted_scope(form.get("scope", ""), client)
    token = mint_access_token(
        server_key,
        issuer=base_url,
        audience=base_url,
        subject=client.client_id,
        client_id=client.client_id,
        organization=client.organization,
        scope=scope,
        ttl=ttl,
    )
    return {"access_token": token, "token_type": "bearer", "expires_in": ttl, "scope": scope}


def _check_grant(form: Mapping[str, str]) -> None:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(INVALID_REQUEST, "grant_type is required")
    if grant_type != "client_credentials":
        raise OAuthError(UNSUPPORTED_GRANT_TYPE, "only client_credentials is supported")
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise OAuthError(INVALID_REQUEST, f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if not form.get("client_assertion"):
        raise OAuthError(INVALID_REQUEST, "client_assertion is required")


def _granted_scope(requested_text: str, client: RegisteredClient) -> str:
    words = requested_text.split()
    if not words:
        raise OAuthError(INVALID_SCOPE, "scope is required")
    try:
        requested = [parse_scope(word) for word in words]
    except InvalidScope as exc:
        raise OAuthError(INVALID_SCOPE, str(exc)) from exc
    granted = narrow_scopes(requested, client.allowed_scopes())
    if not granted:
        raise OAuthError(INVALID_SCOPE, "none of the requested scopes is allowed for this client")
    return " ".join(scope.to_text() for scope in granted)


def oauth_uris(settings: Settings) -> dict[str, str]:
    """The OAuth endpoints of the CapabilityStatement's SMART ``oauth-uris`` extension."""
    auth = settings.public_base_url() + "/auth"
    uris = {"token": auth + "/token"}
    if settings.app_launch_enabled():
        uris |= {"authorize": auth + "/authorize", "revoke": auth + "/revoke",
                 "introspect": auth + "/introspect", "manage": auth + "/apps"}
    if settings.dynamic_registration:
        uris["register"] = auth + "/register"
    return uris


_APP_LAUNCH_CAPABILITIES = [
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "sso-openid-connect",
    "context-standalone-patient",
    "permission-offline",
]


def smart_configuration(base_url: str, *, app_launch: bool = False,
                        registration: bool = False) -> dict[str, Any]:
    """Return the ``.well-known/smart-configuration`` document for the server at ``base_url``.

    ``app_launch`` when citizens can sign in (an identity provider is configured): then the
    authorization code flow, OpenID Connect, refresh, revocation, introspection and the page
    of apps with access exist and are announced; ``registration`` when RFC 7591 is on.
    """
    base = base_url.rstrip("/")
    auth = base + "/auth"
    document: dict[str, Any] = {
        "jwks_uri": base + JWKS_PATH,
        "token_endpoint": token_endpoint_url(base),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(ASSERTION_ALGORITHMS),
        "scopes_supported": [
            "system/*.cruds",
            "system/*.rs",
            "system/*.read",
            "system/*.write",
            "patient/*.rs",
            "patient/*.read",
            "user/*.rs",
            "user/*.read",
        ],
        "capabilities": [
            "client-confidential-asymmetric",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
        ],
    }
    if app_launch:
        # PKCE belongs to the authorization code flow: claimed only when it exists (SMART
        # lists the field as required; a server without the flow would claim what it lacks).
        document |= {
            "code_challenge_methods_supported": ["S256"],
            "issuer": base,
            "authorization_endpoint": auth + "/authorize",
            "revocation_endpoint": auth + "/revoke",
            "introspection_endpoint": auth + "/introspect",
            "management_endpoint": auth + "/apps",
            "response_types_supported": ["code"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        document["grant_types_supported"] += ["authorization_code", "refresh_token"]
        document["token_endpoint_auth_methods_supported"] += [
            "client_secret_basic", "client_secret_post", "none"]
        document["scopes_supported"] += ["launch/patient", "openid", "fhirUser",
                                         "offline_access"]
        document["capabilities"] += _APP_LAUNCH_CAPABILITIES
    if registration:
        document["registration_endpoint"] = auth + "/register"
    return document

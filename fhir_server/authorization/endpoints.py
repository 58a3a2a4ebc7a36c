"""Token revocation (RFC 7009) and introspection (RFC 7662, with SMART's required fields).

Both accept the server's own tokens: access tokens (JWTs it signed; an expired or foreign one is
simply unknown) and refresh tokens (looked up by hash). Revoking a refresh token revokes its whole
family, so the access tokens issued with it stop working too; revoking an access token refuses
that token alone. A client may revoke and introspect only its own tokens; the introspection
response for anything else is ``{"active": false}``, as RFC 7662 asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import jwt
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from fhir_server.authorization.grants import CLIENT_AUTH_METHODS
from fhir_server.authorization.model import AuthConfig

__all__ = ["Introspection", "IssuedToken", "Revocation", "find_token"]


@dataclass(frozen=True)
class IssuedToken:
    """An access or refresh token the server issued, as far as revocation needs to know it."""

    kind: str
    client_id: str
    scope: str
    subject: str
    patient_id: str | None
    family_id: str | None
    jti: str | None
    issued_at: int
    expires_at: float
    revoked: bool

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked


def find_token(config: AuthConfig, token: str, hint: str | None) -> IssuedToken | None:
    """Return what the server knows of ``token`` (tried as the hinted kind first)."""
    kinds = [_refresh_token, _access_token]
    if hint == "access_token":
        kinds.reverse()
    for kind in kinds:
        found = kind(config, token)
        if found is not None:
            return found
    return None


def _refresh_token(config: AuthConfig, token: str) -> IssuedToken | None:
    item = config.store.find_refresh_token(token)
    if item is None:
        return None
    family = item.family
    return IssuedToken("refresh_token", family.client_id, item.scope, family.subject,
                       family.patient_id, family.family_id, None, int(item.issued_at),
                       item.expires_at, item.is_revoked())


def _access_token(config: AuthConfig, token: str) -> IssuedToken | None:
    public = config.server_key.verification_key().key
    try:
        claims = jwt.decode(token, public, algorithms=[config.server_key.algorithm],
                            audience=config.base_url, issuer=config.base_url)
    except jwt.InvalidTokenError:
        return None
    family, jti = claims.get("grant_id"), claims.get("jti")
    return IssuedToken("access_token", str(claims.get("client_id", "")), str(claims["scope"]),
                       str(claims["sub"]), claims.get("patient"), family, jti,
                       int(claims["iat"]), float(claims["exp"]),
                       config.store.is_revoked(family, jti))


def _config(endpoint: Any) -> AuthConfig:
    config: AuthConfig = endpoint.server.config
    return config


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: ``POST /auth/revoke`` with ``token`` and an optional ``token_type_hint``."""

    CLIENT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return find_token(_config(self), token_string, token_type_hint)

    def revoke_token(self, token: IssuedToken, request: Any) -> None:
        store = _config(self).store
        if token.kind == "refresh_token" and token.family_id is not None:
            store.revoke_family(token.family_id)
        elif token.jti is not None:
            store.revoke_access_token(token.jti, token.expires_at)


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 with SMART's fields: ``active``, ``scope``, ``client_id``, ``exp``, ``sub``,
    ``iss``, ``patient`` and ``fhirUser`` when the token has a patient."""

    CLIENT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return find_token(_config(self), token_string, token_type_hint)

    def check_permission(self, token: IssuedToken, client: Any, request: Any) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: IssuedToken) -> dict[str, Any]:
        return introspection_payload(_config(self), token)


def introspection_payload(config: AuthConfig, token: IssuedToken | None) -> dict[str, Any]:
    """Return the RFC 7662 answer for ``token`` (inactive when unknown, expired or revoked)."""
    if token is None or token.is_expired() or token.is_revoked():
        return {"active": False}
    payload: dict[str, Any] = {
        "active": True, "scope": token.scope, "client_id": token.client_id,
        "exp": int(token.expires_at), "iat": token.issued_at, "sub": token.subject,
        "iss": config.base_url, "token_type": "Bearer" if token.kind == "access_token"
        else "refresh_token"}
    if token.patient_id:
        payload["patient"] = token.patient_id
        if "fhirUser" in token.scope.split():
            payload["fhirUser"] = f"{config.base_url}/Patient/{token.patient_id}"
    return payload

"""The grants of SMART App Launch, as Authlib grant classes over :class:`AuthStore`.

- :class:`CodeGrant`: RFC 6749 authorization code, with what SMART 2 adds: ``state`` and
  ``aud`` (this FHIR base URL) are required; the code lives ``code_ttl`` seconds, is bound to
  its client and redirect URI, and is used once. A second use is refused and revokes every
  token issued from the code (RFC 6749 §4.1.2), also when two uses race.
- :class:`S256Challenge`: PKCE (RFC 7636) required of every app, S256 only (SMART forbids
  ``plain``).
- :class:`IdToken`: OpenID Connect ID token (RS256) with SMART's ``fhirUser``; a ``nonce``
  already used by the client is refused, and is echoed in the ID token.
- :class:`RotatingRefreshGrant`: refresh tokens rotate; a refresh token presented a second
  time (stolen, or replayed) revokes its whole family (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from joserfc.jwk import RSAKey

from fhir_server.authorization.model import AuthConfig, Person
from fhir_server.authorization.store import AuthorizationCode, RefreshToken, digest

__all__ = ["CLIENT_AUTH_METHODS", "CodeGrant", "IdToken", "RotatingRefreshGrant", "S256Challenge"]

#: How apps authenticate at the token, revocation and introspection endpoints.
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def _config(grant: Any) -> AuthConfig:
    config: AuthConfig = grant.server.config
    return config


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """The authorization code grant, SMART style (see the module docstring)."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        if not data.get("state"):
            raise InvalidRequestError("'state' is required", redirect_uri=redirect_uri)
        audience = (data.get("aud") or data.get("resource") or "").rstrip("/")
        if audience != _config(self).base_url:
            raise InvalidRequestError("'aud' must be this FHIR server's base URL",
                                      redirect_uri=redirect_uri, state=data.get("state"))
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        person: Person = request.user
        data = request.payload.data
        _config(self).store.save_code(AuthorizationCode(
            digest(code), request.client.get_client_id(), data["redirect_uri"], request.scope,
            person.subject, person.patient_id, data.get("nonce"), data["code_challenge"],
            data.get("code_challenge_method", "S256"), person.family_id, person.auth_time,
            time.time() + _config(self).code_ttl))

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        store = _config(self).store
        item = store.find_code(code)
        if item is None or item.client_id != client.get_client_id():
            return None  # unknown, or issued to another client
        if item.used:
            store.revoke_family(item.family_id)  # a replayed code: revoke what it gave
            return None
        return item if time.time() < item.expires_at else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        store = _config(self).store
        if not store.claim_code(authorization_code.code_hash):
            store.revoke_family(authorization_code.family_id)
            raise InvalidGrantError("the code was already used")

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Person:
        return Person(authorization_code.subject, authorization_code.patient_id,
                      authorization_code.family_id, authorization_code.auth_time)


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256, required at the authorization endpoint for every app."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: send code_challenge with "
                                      "code_challenge_method=S256", redirect_uri=redirect_uri,
                                      state=data.get("state"))
        super().validate_code_challenge(grant, redirect_uri)


class IdToken(OpenIDCode):  # type: ignore[misc]
    """OpenID Connect ID tokens signed RS256 by the server's ID token key."""

    def __init__(self, config: AuthConfig) -> None:
        super().__init__(require_nonce=False)
        self._config = config

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return self._config.store.nonce_used(request.payload.client_id, nonce)

    def resolve_client_private_key(self, client: Any) -> RSAKey:
        return RSAKey.import_key(self._config.id_token_key.private_pem())

    def get_client_algorithm(self, client: Any) -> str:
        return "RS256"

    def get_encode_header(self, client: Any) -> dict[str, str]:
        return {"alg": "RS256", "kid": self._config.id_token_key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self._config.base_url, "aud": [client.get_client_id()], "iat": now,
                "exp": now + self._config.access_token_ttl}

    def generate_user_info(self, user: Person, scope: str) -> dict[str, str]:
        info = {"sub": user.subject}
        if "fhirUser" in scope.split():
            info["fhirUser"] = f"{self._config.base_url}/Patient/{user.patient_id}"
        return info


class RotatingRefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    """Refresh tokens that rotate, and whose reuse revokes their family."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        store = _config(self).store
        item = store.find_refresh_token(refresh_token)
        if item is None:
            return None
        if item.used_at is not None:
            store.revoke_family(item.family.family_id)
            return None
        return None if item.is_revoked() or item.is_expired() else item

    def authenticate_user(self, refresh_token: RefreshToken) -> Person:
        family = refresh_token.family
        return Person(family.subject, family.patient_id, family.family_id, family.auth_time)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        store = _config(self).store
        if not store.claim_refresh_token(refresh_token.token_hash):
            store.revoke_family(refresh_token.family.family_id)  # two uses raced
            raise InvalidGrantError("the refresh token was already used")

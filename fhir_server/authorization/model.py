"""The values the authorization server works with, and the adapters Authlib asks for.

:class:`OAuthRequest` is an HTTP request reduced to what OAuth needs (no Starlette types), and
:class:`AuthlibRequest` presents it to Authlib. :class:`AppClient` presents a registered app as
Authlib's ``ClientMixin``; :class:`Person` is the signed-in citizen (Authlib's "user").
:func:`grantable_scope` decides what an app may be granted of what it asked for.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request

from fhir_server.authorization.store import AuthStore
from fhir_server.security.client_assertion import JtiStore
from fhir_server.security.clients import APP_WORDS, ClientLookup, RegisteredClient
from fhir_server.security.keys import IdTokenKey, ServerKey
from fhir_server.security.scopes import (
    InvalidScope,
    Scope,
    ScopeContext,
    narrow_scopes,
    parse_scope,
)

__all__ = [
    "AppClient",
    "AuthConfig",
    "AuthlibRequest",
    "OAuthRequest",
    "OAuthResponse",
    "Person",
    "grantable_scope",
    "json_request",
]

APP_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
_CLINICAL = re.compile(r"(patient|user|system)/")


@dataclass(frozen=True)
class OAuthRequest:
    """An HTTP request as OAuth sees it: method, public URL, headers, parameters in order."""

    method: str
    uri: str
    headers: dict[str, str]
    params: list[tuple[str, str]] = field(default_factory=list)
    #: A JSON body (dynamic registration).
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class OAuthResponse:
    """What an OAuth endpoint answers: status, a JSON body or text, headers."""

    status: int
    body: Any
    headers: list[tuple[str, str]]


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, params: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in params:
            self._data.setdefault(name, value)
            self._datalist[name].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class AuthlibRequest(OAuth2Request):  # type: ignore[misc]
    """An :class:`OAuthRequest` as Authlib's ``OAuth2Request``."""

    def __init__(self, request: OAuthRequest) -> None:
        super().__init__(request.method, request.uri, headers=request.headers)
        self.payload = _Payload(request.params)

    @property
    def args(self) -> dict[str, str]:
        return dict(self.payload.data)

    @property
    def form(self) -> dict[str, str]:
        return dict(self.payload.data)


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


def json_request(request: OAuthRequest) -> JsonRequest:
    """An :class:`OAuthRequest` with a JSON body as Authlib's ``JsonRequest``."""
    wrapped = JsonRequest(request.method, request.uri, request.headers)
    wrapped.payload = _JsonPayload(request.json or {})
    return wrapped


@dataclass(frozen=True)
class Person:
    """The signed-in citizen: upstream subject, their Patient, and the authorization in use."""

    subject: str
    patient_id: str
    family_id: str
    auth_time: int


@dataclass(frozen=True)
class AuthConfig:
    """What the grants and endpoints need: state, keys, URLs and lifetimes."""

    store: AuthStore
    clients: ClientLookup
    jti_store: JtiStore
    server_key: ServerKey
    id_token_key: IdTokenKey
    base_url: str
    access_token_ttl: int
    refresh_token_ttl: int
    code_ttl: int

    @property
    def token_url(self) -> str:
        """The token endpoint (the ``aud`` of client assertions)."""
        return self.base_url + "/auth/token"


class AppClient:
    """A registered app as Authlib's ``ClientMixin``: exact redirect URIs, code flow only."""

    def __init__(self, client: RegisteredClient) -> None:
        self.client = client
        self.client_id = client.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # SMART: redirect_uri is always sent, and must match exactly

    def get_allowed_scope(self, scope: str | None) -> str | None:
        return grantable_scope(scope or "", self.client)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.client.auth_method == "client_secret_basic":
            return method in ("client_secret_basic", "client_secret_post")
        return method == self.client.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in APP_GRANT_TYPES


def grantable_scope(requested: str, client: RegisteredClient) -> str | None:
    """Return what of ``requested`` the app may be granted, or None if nothing clinical is.

    Launch and identity words are kept when the app registered them, other words (``profile``,
    ``launch``) are not granted; clinical scopes are narrowed to the app's registered ones, and
    only ``patient/`` scopes are ever granted (the citizen shares their own record). A malformed
    clinical scope refuses the whole request.
    """
    registered = set(client.scope.split())
    words = [w for w in dict.fromkeys(requested.split()) if w in APP_WORDS and w in registered]
    try:
        clinical = [parse_scope(w) for w in requested.split() if _CLINICAL.match(w)]
    except InvalidScope:
        return None
    allowed = client.allowed_scopes()
    granted: dict[Scope, None] = {}
    for wanted in (s for s in clinical if s.context is ScopeContext.PATIENT):
        whole = any(wanted.intersect(scope) == wanted for scope in allowed)
        granted.update(dict.fromkeys([wanted] if whole else narrow_scopes([wanted], allowed)))
    kept = [s.to_text() for s in granted if not _covered(s, granted)]
    return " ".join([*words, *kept]) if kept else None


def _covered(scope: Scope, others: Iterable[Scope]) -> bool:
    """Whether another of the scopes grants everything ``scope`` does."""
    return any(other != scope and scope.intersect(other) == scope for other in others)

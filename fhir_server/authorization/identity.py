"""Sign-in through the upstream OpenID Connect provider (VNeID, or a deployment's own).

The server is a relying party of the provider configured by ``FHIR_SERVER_IDENTITY_*``: it sends
the browser to the provider's authorization endpoint (authorization code flow with ``state``,
``nonce`` and PKCE S256), then exchanges the code at the provider's token endpoint
(``client_secret_basic`` when a secret is configured, else as a public client) and verifies the
ID token: signature by a key of the provider's JWKS, ``iss``, ``aud`` = our client id, ``exp``,
and the ``nonce`` it sent. The person is the ID token's ``sub``, and their CCCD is the claim
named by ``identity_cccd_claim``. Provider metadata comes from
``<issuer>/.well-known/openid-configuration`` (cached); the JWKS is refetched when an unknown
``kid`` arrives, at most once a minute.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jwt

from fhir_server.authorization.sessions import SignIn
from fhir_server.security.jwks import StaticJwks
from fhir_server.security.keys import InvalidKey, VerificationKey

__all__ = ["Identity", "SignInFailed", "UpstreamProvider", "pkce_challenge"]

HttpFactory = Callable[[], httpx.AsyncClient]
_ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "ES256", "ES384", "PS256"]
_REFETCH_SECONDS = 60.0


class SignInFailed(Exception):
    """The provider refused the sign-in or answered something that cannot be trusted."""


@dataclass(frozen=True)
class Identity:
    """Who signed in: the provider's subject, their CCCD and name (if the provider gave it)."""

    subject: str
    cccd: str
    name: str | None


@dataclass(frozen=True)
class _Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def pkce_challenge(verifier: str) -> str:
    """Return the S256 code challenge of a PKCE verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class UpstreamProvider:
    """The configured OpenID Connect provider, seen from this server (its relying party)."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, cccd_claim: str,
                 scope: str, http: HttpFactory) -> None:
        self.issuer = issuer.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._cccd_claim = cccd_claim
        self._scope = scope
        self._http = http
        self._metadata: _Metadata | None = None
        self._keys: StaticJwks | None = None
        self._keys_fetched = 0.0

    async def authorization_url(self, sign_in: SignIn, redirect_uri: str) -> str:
        """Return where to send the browser to sign in."""
        metadata = await self._discover()
        query = urlencode({
            "response_type": "code", "client_id": self._client_id, "redirect_uri": redirect_uri,
            "scope": self._scope, "state": sign_in.upstream_state, "nonce": sign_in.nonce,
            "code_challenge": pkce_challenge(sign_in.code_verifier),
            "code_challenge_method": "S256"})
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    async def identity(self, code: str, sign_in: SignIn, redirect_uri: str) -> Identity:
        """Exchange the code and return the verified identity; raises :class:`SignInFailed`."""
        id_token = await self._exchange(code, sign_in, redirect_uri)
        claims = await self._verified(id_token, sign_in.nonce)
        cccd = claims.get(self._cccd_claim)
        if not isinstance(cccd, str) or not cccd:
            raise SignInFailed(f"the provider gave no '{self._cccd_claim}' claim")
        name = claims.get("name")
        return Identity(str(claims["sub"]), cccd, name if isinstance(name, str) else None)

    async def _discover(self) -> _Metadata:
        if self._metadata is None:
            document = await self._get_json(self.issuer + "/.well-known/openid-configuration")
            try:
                metadata = _Metadata(*(str(document[name]) for name in (
                    "issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")))
            except KeyError as exc:
                raise SignInFailed(f"the provider's metadata lacks {exc}") from exc
            if metadata.issuer.rstrip("/") != self.issuer:
                raise SignInFailed("the provider's metadata names another issuer")
            self._metadata = metadata
        return self._metadata

    async def _exchange(self, code: str, sign_in: SignIn, redirect_uri: str) -> str:
        metadata = await self._discover()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": sign_in.code_verifier}
        headers = {}
        if self._client_secret:
            # RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
            pair = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self._client_id
        async with self._http() as http:
            response = await http.post(metadata.token_endpoint, data=form, headers=headers)
        if response.status_code != 200:
            raise SignInFailed(f"the provider refused the code (HTTP {response.status_code})")
        id_token = response.json().get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("the provider's token response has no id_token")
        return id_token

    async def _verified(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            key = await self._key(str(kid))
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=sorted(key.algorithms & set(_ID_TOKEN_ALGORITHMS)),
                audience=self._client_id, issuer=self._metadata.issuer if self._metadata else "",
                leeway=30, options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except (jwt.InvalidTokenError, InvalidKey) as exc:
            raise SignInFailed(f"the provider's ID token does not verify ({exc})") from exc
        if claims.get("nonce") != nonce:
            raise SignInFailed("the provider's ID token carries another nonce")
        return claims

    async def _key(self, kid: str) -> VerificationKey:
        key = self._keys.find(kid) if self._keys is not None else None
        stale = time.monotonic() - self._keys_fetched > _REFETCH_SECONDS
        if key is None and (self._keys is None or stale):
            metadata = await self._discover()
            self._keys = StaticJwks.from_document(await self._get_json(metadata.jwks_uri))
            self._keys_fetched = time.monotonic()
            key = self._keys.find(kid)
        if key is None:
            raise InvalidKey("the ID token's kid is not in the provider's JWKS")
        return key

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http() as http:
                response = await http.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInFailed(f"the provider could not be reached at {url} ({exc})") from exc
        if not isinstance(document, dict):
            raise SignInFailed(f"{url} did not answer a JSON object")
        return document

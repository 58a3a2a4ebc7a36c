"""A tiny OpenID Connect provider for DEVELOPMENT AND TESTS ONLY (``/dev-idp``).

It lets the whole App Launch flow run on one machine: its page asks for a CCCD and a name,
with no password, and vouches for whoever types them. It is off unless
``FHIR_SERVER_DEV_IDENTITY_PROVIDER=true``, and the server logs a warning at start-up when it is
on. It serves only this server's own sign-in callback.

It keeps no state: its authorization code is a JWT (60 s) signed with its own ES256 key
(``<data_dir>/keys/dev-idp-key.pem``) that carries who signed in, the client, the redirect URI,
the nonce and the PKCE challenge; the token endpoint checks all of them and answers an ID token
signed with the same key. A code can be exchanged again within its minute: no matter here.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from fhir_server.authorization.identity import pkce_challenge
from fhir_server.security.keys import ServerKey, load_server_key

__all__ = ["DEV_IDP_KEY_PATH", "DevIdentityProvider", "DevIdpError"]

DEV_IDP_KEY_PATH = Path("keys") / "dev-idp-key.pem"
CODE_TTL = 60
_CCCD = re.compile(r"[0-9]{12}")


class DevIdpError(ValueError):
    """A request the development provider refuses (shown as an OAuth error)."""


class DevIdentityProvider:
    """The development provider at ``issuer`` (``<origin>/dev-idp``), serving one callback."""

    def __init__(self, data_dir: Path, issuer: str, callback: str) -> None:
        self.issuer = issuer
        self.callback = callback
        self._key: ServerKey = load_server_key(data_dir, DEV_IDP_KEY_PATH)

    def metadata(self) -> dict[str, Any]:
        """Return its ``.well-known/openid-configuration``."""
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"]}

    def jwks(self) -> dict[str, Any]:
        """Return its public keys."""
        return self._key.jwks()

    def check_request(self, params: Mapping[str, str]) -> None:
        """Raise :class:`DevIdpError` unless the sign-in request is for our own callback."""
        if params.get("redirect_uri") != self.callback:
            raise DevIdpError("the development provider serves this server's callback only")
        for name in ("client_id", "state", "nonce", "code_challenge"):
            if not params.get(name):
                raise DevIdpError(f"'{name}' is required")

    def issue_code(self, params: Mapping[str, str], cccd: str, name: str) -> str:
        """Return the code for a person who typed ``cccd`` and ``name`` (12 digits required)."""
        self.check_request(params)
        if not _CCCD.fullmatch(cccd):
            raise DevIdpError("a CCCD has 12 digits")
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.issuer + "/token", "exp": now + CODE_TTL,
                  "cccd": cccd, "name": name.strip() or None, "nonce": params["nonce"],
                  "client_id": params["client_id"], "redirect_uri": params["redirect_uri"],
                  "code_challenge": params["code_challenge"]}
        return self._sign(claims)

    def token_response(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Exchange a code for an ID token; raises :class:`DevIdpError` (``invalid_grant``)."""
        try:
            code = jwt.decode(form.get("code", ""), self._key.verification_key().key,
                              algorithms=["ES256"], audience=self.issuer + "/token",
                              issuer=self.issuer)
        except jwt.InvalidTokenError as exc:
            raise DevIdpError("the code is invalid or expired") from exc
        if (form.get("redirect_uri") != code["redirect_uri"]
                or form.get("client_id", code["client_id"]) != code["client_id"]
                or pkce_challenge(form.get("code_verifier", "")) != code["code_challenge"]):
            raise DevIdpError("the code does not match the request")
        return {"access_token": "unused", "token_type": "Bearer", "expires_in": CODE_TTL,
                "id_token": self._id_token(code)}

    def _id_token(self, code: Mapping[str, Any]) -> str:
        now = int(time.time())
        subject = "dev-" + hashlib.sha256(str(code["cccd"]).encode()).hexdigest()[:24]
        claims = {"iss": self.issuer, "aud": code["client_id"], "sub": subject, "iat": now,
                  "exp": now + 300, "nonce": code["nonce"], "cccd": code["cccd"],
                  "name": code["name"]}
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key.private_key, algorithm="ES256",
                          headers={"kid": self._key.kid})

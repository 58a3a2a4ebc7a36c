"""Websocket binding tokens (Subscriptions Backport IG, channels.html "Websockets",
OperationDefinition-backport-subscription-get-ws-binding-token).

A token names the subscriptions a websocket connection may be bound to and who asked for it;
it is a JWT signed with the server's own key (ES256), for the audience of the websocket URL,
valid ``subscription_ws_token_ttl_s``: every worker process of the server can check it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import jwt

from fhir_server.security.keys import load_server_key
from fhir_server.settings import Settings

__all__ = ["WEBSOCKET_PATH", "Binding", "mint", "read_token", "websocket_url"]

#: Where the websocket endpoint is, below the FHIR base.
WEBSOCKET_PATH = "$subscription-websocket"
_TYPE = "ws-binding+jwt"


@dataclass(frozen=True)
class Binding:
    """What a valid token allows: binding to these subscriptions, for this subject."""

    subject: str
    subscriptions: tuple[str, ...]
    expires: int


def websocket_url(settings: Settings) -> str:
    """The websocket URL of the server (``ws``/``wss`` under the FHIR base)."""
    parts = urlsplit(settings.public_base_url())
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/{WEBSOCKET_PATH}", "", ""))


def mint(settings: Settings, subject: str, subscriptions: Sequence[str]) -> tuple[Binding, str]:
    """A signed token binding ``subscriptions`` for ``subject``, and what it allows."""
    key = load_server_key(settings.data_dir)
    expires = int(time.time()) + settings.subscription_ws_token_ttl_s
    claims = {"iss": settings.public_base_url(), "aud": websocket_url(settings),
              "sub": subject, "subscriptions": list(subscriptions), "exp": expires,
              "jti": str(uuid.uuid4())}
    token = jwt.encode(claims, key.private_key, algorithm=key.algorithm,
                       headers={"kid": key.kid, "typ": _TYPE})
    return Binding(subject, tuple(subscriptions), expires), token


def read_token(settings: Settings, token: str) -> Binding | None:
    """What a token allows, or None when it is not a valid, unexpired token of this server."""
    key = load_server_key(settings.data_dir)
    try:
        if jwt.get_unverified_header(token).get("typ") != _TYPE:
            return None
        claims = jwt.decode(token, key.private_key.public_key(), algorithms=[key.algorithm],
                            audience=websocket_url(settings),
                            issuer=settings.public_base_url())
    except jwt.InvalidTokenError:
        return None
    found = claims.get("subscriptions")
    if not isinstance(found, list) or not all(isinstance(s, str) for s in found):
        return None
    return Binding(str(claims.get("sub")), tuple(found), int(claims["exp"]))

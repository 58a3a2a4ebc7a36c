"""RFC 7591 dynamic client registration of apps (``POST <base>/auth/register``), OFF by default.

Switched on with ``FHIR_SERVER_DYNAMIC_REGISTRATION=true``, it is open registration: anyone can
register an app, which still reaches no data without a citizen's consent. The metadata is
checked by Authlib (RFC 7591 §2) against what the server supports, then as ``fhir-server client
add`` checks it: exact redirect URIs (https, loopback http, or a native app's private scheme)
and ``patient/`` scopes only. ``token_endpoint_auth_method`` ``none`` registers a public app;
``client_secret_basic`` or ``client_secret_post`` a confidential one, whose secret is answered
once and kept only as its hash.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError

from fhir_server.authorization.model import AuthConfig
from fhir_server.security.clients import ClientRegistry, RegisteredClient, secret_hash

__all__ = ["DEFAULT_APP_SCOPE", "Registration"]

DEFAULT_APP_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


class Registration(ClientRegistrationEndpoint):  # type: ignore[misc]
    """Open registration of public and confidential apps."""

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration (RFC 7591 §3), allowed only when switched on

    def get_server_metadata(self) -> dict[str, Any]:
        return {"grant_types_supported": ["authorization_code", "refresh_token"],
                "response_types_supported": ["code"],
                "token_endpoint_auth_methods_supported": [
                    "none", "client_secret_basic", "client_secret_post"]}

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if self._method(request) == "none":
            info.pop("client_secret", None)
            info.pop("client_secret_expires_at", None)
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any],
                    request: Any) -> RegisteredClient:
        config: AuthConfig = self.server.config
        secret = client_info.get("client_secret")
        client = RegisteredClient(
            client_info["client_id"], {}, client_metadata.get("scope") or DEFAULT_APP_SCOPE,
            kind="public" if secret is None else "confidential",
            name=client_metadata.get("client_name"),
            redirect_uris=tuple(client_metadata.get("redirect_uris") or ()),
            secret_hash=secret_hash(secret) if secret else None)
        registry = config.clients
        if not isinstance(registry, ClientRegistry):
            raise InvalidClientMetadataError("this server cannot store clients")
        try:
            registry.add(client)
        except ValueError as exc:
            raise InvalidClientMetadataError(_ascii(str(exc))) from exc
        return client

    @staticmethod
    def _method(request: Any) -> str:
        return str(request.payload.data.get("token_endpoint_auth_method",
                                            "client_secret_basic"))


def _ascii(text: str) -> str:
    """RFC 6749 error descriptions allow printable ASCII without quote and backslash."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')

"""OAuth 2.0 token-endpoint errors (RFC 6749 §5.2), raised by the pure authorization code.

These are not FHIR errors: the token endpoint answers ``{"error", "error_description"}`` JSON,
not an OperationOutcome, so the HTTP layer renders :class:`OAuthError` on its own.
"""

from __future__ import annotations

__all__ = [
    "INVALID_CLIENT",
    "INVALID_GRANT",
    "INVALID_REQUEST",
    "INVALID_SCOPE",
    "UNAUTHORIZED_CLIENT",
    "UNSUPPORTED_GRANT_TYPE",
    "OAuthError",
]

INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
INVALID_SCOPE = "invalid_scope"
UNAUTHORIZED_CLIENT = "unauthorized_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"


class OAuthError(Exception):
    """A token request refused with an RFC 6749 error code, a description and an HTTP status."""

    def __init__(self, error: str, description: str, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        # RFC 6749 §5.2: 400 for everything except failed client authentication.
        self.status = status if status is not None else (401 if error == INVALID_CLIENT else 400)

    def to_json(self) -> dict[str, str]:
        """Return the error response body."""
        return {"error": self.error, "error_description": self.description}

"""The FhirError hierarchy: every failure the server reports on purpose.

Each class carries the HTTP status and the OperationOutcome issue code of its category
(one table, read by ``api.errors``). Code below the HTTP layer raises these and never builds
responses itself; storage raises only the domain errors (``NotFound``, ``Gone``,
``VersionConflict``, ``PreconditionFailed``).

Every issue carries a stable ``message_id`` (tests assert it, not the prose), a human
``diagnostics`` text and, where an element is at fault, its FHIRPath ``expression``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BadRequest",
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "InvalidResource",
    "Issue",
    "LimitExceeded",
    "MethodNotAllowed",
    "MultipleMatches",
    "NotAcceptable",
    "NotFound",
    "NotSupported",
    "PayloadTooLarge",
    "PreconditionFailed",
    "SearchTooCostly",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "VersionConflict",
]


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code, stable id, text and element path."""

    severity: str
    code: str
    message_id: str
    diagnostics: str
    expression: tuple[str, ...] = field(default=())

    def to_fhir(self) -> dict[str, object]:
        """Return the issue as an OperationOutcome.issue JSON object."""
        out: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "details": {
                "coding": [
                    {
                        "system": "urn:fhir-server:message-id",
                        "code": self.message_id,
                    }
                ],
                "text": self.diagnostics,
            },
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """Base of every deliberate failure; ``status`` and ``issue_code`` classify it."""

    status = 500
    issue_code = "exception"
    default_message_id = "MSG_ERROR"

    def __init__(
        self,
        diagnostics: str,
        *,
        message_id: str | None = None,
        expression: tuple[str, ...] | list[str] = (),
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.message_id = message_id or self.default_message_id
        self.headers = headers or {}
        first = Issue("error", self.issue_code, self.message_id, diagnostics, tuple(expression))
        self.issues: list[Issue] = issues if issues else [first]


class BadRequest(FhirError):
    """400: the request cannot be understood (malformed JSON, bad parameter value...)."""

    status = 400
    issue_code = "invalid"
    default_message_id = "MSG_BAD_REQUEST"


class InvalidResource(FhirError):
    """400: the resource is not a structurally valid FHIR R4 resource."""

    status = 400
    issue_code = "structure"
    default_message_id = "MSG_RESOURCE_INVALID"


class Unprocessable(FhirError):
    """422: the resource is well-formed but breaks a business rule or profile."""

    status = 422
    issue_code = "processing"
    default_message_id = "MSG_UNPROCESSABLE"


class NotSupported(FhirError):
    """400 (or as given): a feature the server does not implement."""

    status = 400
    issue_code = "not-supported"
    default_message_id = "MSG_NOT_SUPPORTED"


class Unauthorized(FhirError):
    """401: no valid credentials."""

    status = 401
    issue_code = "login"
    default_message_id = "MSG_AUTH_REQUIRED"


class Forbidden(FhirError):
    """403: credentials valid but not sufficient."""

    status = 403
    issue_code = "forbidden"
    default_message_id = "MSG_FORBIDDEN"


class NotFound(FhirError):
    """404: unknown resource type, id or version."""

    status = 404
    issue_code = "not-found"
    default_message_id = "MSG_NO_EXIST"


class MethodNotAllowed(FhirError):
    """405: the HTTP method is not allowed on that path."""

    status = 405
    issue_code = "not-supported"
    default_message_id = "MSG_METHOD_NOT_ALLOWED"


class NotAcceptable(FhirError):
    """406: the client accepts no format the server produces."""

    status = 406
    issue_code = "not-supported"
    default_message_id = "MSG_NOT_ACCEPTABLE"


class Conflict(FhirError):
    """409: the request conflicts with the server's state."""

    status = 409
    issue_code = "conflict"
    default_message_id = "MSG_CONFLICT"


class VersionConflict(Conflict):
    """409: a concurrent write changed the resource (version-aware update lost the race)."""

    default_message_id = "MSG_VERSION_CONFLICT"


class Gone(FhirError):
    """410: the resource was deleted."""

    status = 410
    issue_code = "deleted"
    default_message_id = "MSG_DELETED"


class PreconditionFailed(FhirError):
    """412: If-Match (or a conditional interaction's precondition) did not hold."""

    status = 412
    issue_code = "conflict"
    default_message_id = "MSG_PRECONDITION_FAILED"


class MultipleMatches(PreconditionFailed):
    """412: a conditional interaction matched more than one resource."""

    issue_code = "multiple-matches"
    default_message_id = "MSG_MULTIPLE_MATCHES"


class PayloadTooLarge(FhirError):
    """413: the request body exceeds the configured limit."""

    status = 413
    issue_code = "too-costly"
    default_message_id = "MSG_BODY_TOO_LARGE"


class LimitExceeded(FhirError):
    """400: the request asks more than a configured bound allows (``too-costly``)."""

    status = 400
    issue_code = "too-costly"
    default_message_id = "MSG_LIMIT_EXCEEDED"

    @classmethod
    def of(cls, what: str, limit: int, setting: str,
           expression: tuple[str, ...] = ()) -> LimitExceeded:
        """The error for ``what`` beyond ``limit``, naming the setting that raises it."""
        return cls(f"{what} exceeds the limit of {limit} (FHIR_SERVER_{setting.upper()})",
                   expression=expression)


class TooManyRequests(FhirError):
    """429: the caller has too much work in progress already (unfinished bulk exports);
    ``Retry-After`` says when to try again."""

    status = 429
    issue_code = "throttled"
    default_message_id = "MSG_TOO_MANY_REQUESTS"


class SearchTooCostly(FhirError):
    """503: a search ran past the configured time limit (``search_timeout_s``) and was stopped."""

    status = 503
    issue_code = "too-costly"
    default_message_id = "MSG_SEARCH_TOO_COSTLY"

    @classmethod
    def after(cls, seconds: float) -> SearchTooCostly:
        """The error for a search stopped once it had run ``seconds``."""
        return cls(
            f"The search ran longer than {seconds:g} s and was stopped; narrow it (more "
            "parameters, fewer includes) or ask for fewer results"
        )


class UnsupportedMediaType(FhirError):
    """415: the request body is in a format the server does not read."""

    status = 415
    issue_code = "not-supported"
    default_message_id = "MSG_UNSUPPORTED_MEDIA_TYPE"

"""The FHIR parts of a response: version headers (``ETag``, ``Last-Modified``, ``Location``),
``Prefer: return`` for writes and the conditional read (R4 http.html#read, #ops,
#versioning)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from fhir_server.errors import Issue
from fhir_server.interactions.context import Outcome
from fhir_server.interactions.preconditions import parse_version_tag
from fhir_server.outcomes import operation_outcome
from fhir_server.router.request import FhirRequest, FhirResponse
from fhir_server.storage.port import StoredResource

__all__ = ["http_date", "not_modified", "version_headers", "write_response"]

#: HTTP-dates of the instants seen, by the instant without its fraction of a second.
_HTTP_DATES: dict[str, str] = {}


def http_date(instant: str) -> str:
    """Return the FHIR instant as an HTTP-date (RFC 9110) for ``Last-Modified``.

    An HTTP-date has whole seconds, so the instants of one second share one text, made once
    (about 10 µs each time otherwise; every read and write sends one). Stored instants have
    the fixed form ``YYYY-MM-DDThh:mm:ss.ffffff+00:00``.
    """
    key = instant[:19] + instant[26:] if len(instant) == 32 and instant[19] == "." else instant
    text = _HTTP_DATES.get(key)
    if text is None:
        text = format_datetime(datetime.fromisoformat(instant), usegmt=True)
        if len(_HTTP_DATES) >= 4096:
            _HTTP_DATES.clear()
        _HTTP_DATES[key] = text
    return text


def version_headers(
    stored: StoredResource, base_url: str, location: bool = True
) -> dict[str, str]:
    """Return ETag, Last-Modified and (``location``) Location with ``_history``."""
    headers = {"ETag": f'W/"{stored.version}"', "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = (
            f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}")
    return headers


def _http_date_of(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def not_modified(request: FhirRequest, stored: StoredResource) -> bool:
    """Whether ``If-None-Match`` or ``If-Modified-Since`` say the client has this version."""
    if request.if_none_match is not None:
        return parse_version_tag(request.if_none_match, "If-None-Match") == stored.version
    since = _http_date_of(request.if_modified_since)
    if since is None:
        return False
    return datetime.fromisoformat(stored.last_updated).replace(microsecond=0) <= since


def write_response(request: FhirRequest, outcome: Outcome, base_url: str) -> FhirResponse:
    """The answer to a create, update or patch, as ``Prefer: return=`` asks.

    Without a preference the stored resource is returned, except when validation in ``warn``
    mode let errors through: then the answer is the OperationOutcome holding the issues.
    """
    stored = outcome.stored
    if stored is None:
        return FhirResponse(outcome.status)
    headers = version_headers(stored, base_url)
    prefer = request.prefer.return_
    if prefer is None and any(i.severity in ("error", "fatal") for i in outcome.issues):
        prefer = "OperationOutcome"
    if prefer == "minimal":
        return FhirResponse(outcome.status, None, headers, stored, outcome.issues)
    if prefer == "OperationOutcome":
        text = f"{stored.resource_type}/{stored.id} version {stored.version} stored"
        issues = [Issue("information", "informational", "MSG_WRITE_OK", text),
                  *outcome.issues]
        return FhirResponse(outcome.status, operation_outcome(issues), headers, stored,
                            outcome.issues)
    return FhirResponse(outcome.status, stored.content, headers, stored, outcome.issues)

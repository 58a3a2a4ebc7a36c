"""HTTP headers of the FHIR RESTful API: ETag and If-Match, Prefer, Location, Last-Modified."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from fhir_server.interactions.preconditions import parse_version_tag
from fhir_server.storage.port import StoredResource

__all__ = [
    "Prefer",
    "http_date",
    "parse_http_date",
    "parse_prefer",
    "parse_version_tag",
    "version_headers",
]

@dataclass(frozen=True)
class Prefer:
    """The parts of the ``Prefer`` header the server honours."""

    return_: str | None = None
    strict: bool = False


def parse_prefer(value: str | None) -> Prefer:
    """Parse ``Prefer`` (``return=minimal|representation|OperationOutcome``, ``handling``)."""
    if not value:
        return Prefer()
    return_: str | None = None
    strict = False
    for part in value.split(","):
        for token in part.split(";"):
            key, _, val = token.strip().partition("=")
            val = val.strip().strip('"')
            if key == "return" and val in ("minimal", "representation", "OperationOutcome"):
                return_ = val
            elif key == "handling":
                strict = val == "strict"
    return Prefer(return_, strict)


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


def parse_http_date(value: str | None) -> datetime | None:
    """Parse an HTTP-date header value; None when absent or unreadable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def version_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    """Return ETag, Last-Modified and Location (with ``_history``) of a stored version."""
    return {
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": http_date(stored.last_updated),
        "Location": (
            f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
        ),
    }

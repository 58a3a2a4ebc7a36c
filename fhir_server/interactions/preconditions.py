"""Version tags of preconditions (``If-Match``, ``ifMatch``, ``If-None-Match``): ``W/"3"``."""

from __future__ import annotations

import re

from fhir_server.errors import BadRequest

__all__ = ["parse_version_tag"]

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_version_tag(value: str | None, header: str = "If-Match") -> int | None:
    """Return the version in an ETag-style value (``W/"3"``); raise ``BadRequest`` if bad."""
    if value is None:
        return None
    match = _ETAG.match(value)
    if match is None:
        raise BadRequest(f"{header} must be a version tag such as W/\"1\", not '{value}'",
                         message_id="MSG_HEADER_INVALID", expression=(header,))
    return int(match.group(1))

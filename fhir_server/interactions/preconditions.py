"""Version tags of preconditions (``If-Match``, ``ifMatch``, ``If-None-Match``): ``W/"3"``."""

from __future__ import annotations

import re

from fhir_server.errors import BadRequest

__all__ = ["parse_version_tag", "version_number"]

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
#: Versions are counted from 1 in a signed 64-bit column: at most 18 digits.
_MAX_VERSION_DIGITS = 18


def version_number(text: str) -> int | None:
    """Return the version ``text`` names, or None if no stored version could have it."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_VERSION_DIGITS:
        return None
    return int(text)


def parse_version_tag(value: str | None, header: str = "If-Match") -> int | None:
    """Return the version in an ETag-style value (``W/"3"``); raise ``BadRequest`` if bad."""
    if value is None:
        return None
    match = _ETAG.match(value) if len(value) < 64 else None
    version = version_number(match.group(1)) if match else None
    if version is None:
        raise BadRequest(f"{header} must be a version tag such as W/\"1\", not '{value[:40]}'",
                         message_id="MSG_HEADER_INVALID", expression=(header,))
    return version

"""What a JSON signature covers: the canonical JSON of R4 (json.html#canonical) of the signed
content.

The canonical form is the JSON with no whitespace between tokens and the properties of every
object in alphabetical order; numbers keep the text they were written with (``1.50`` stays
``1.50``: ``decimals``), strings are written in UTF-8 with only the escapes JSON requires.
The methods of R4 remove parts before that: ``#data`` the narrative (``Resource.text``),
``#static`` the narrative and ``Resource.meta``, ``#narrative`` everything but ``id`` and the
narrative, ``#document`` the root Bundle's ``id`` and ``meta``. A signature never covers
itself: the signed element (``Bundle.signature``) is removed first.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server import decimals

__all__ = [
    "DEFAULT_BUNDLE_METHOD",
    "DEFAULT_RESOURCE_METHOD",
    "JSON",
    "METHODS",
    "canonical_json",
    "method_of",
]

JSON = "http://hl7.org/fhir/canonicalization/json"
DEFAULT_BUNDLE_METHOD = JSON + "#document"
DEFAULT_RESOURCE_METHOD = JSON
METHODS = frozenset({JSON, JSON + "#data", JSON + "#static", JSON + "#narrative",
                     JSON + "#document"})


def method_of(target_format: object, default: str) -> str | None:
    """The canonicalization a ``Signature.targetFormat`` names (its ``canonicalization``
    parameter), ``default`` when it names none, None when it names one this server does not
    know."""
    if not isinstance(target_format, str):
        return default
    for part in target_format.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip() == "canonicalization":
            value = value.strip().strip('"')
            return value if value in METHODS else None
    return default


def _reduced(resource: dict[str, Any], method: str, omit: str | None) -> dict[str, Any]:
    fragment = method.partition("#")[2]
    if fragment == "narrative":
        return {k: v for k, v in resource.items()
                if k in ("resourceType", "id", "text")}  # fmt: skip
    dropped = {omit} if omit else set()
    if fragment in ("data", "static"):
        dropped.add("text")
    if fragment in ("static", "document"):
        dropped.add("meta")
    if fragment == "document":
        dropped.add("id")
    return {k: v for k, v in resource.items() if k not in dropped}


def canonical_json(content: dict[str, Any] | list[Any], method: str = JSON,
                   omit: str | None = None) -> bytes:
    """The canonical bytes of ``content`` (a resource, or a list of them) by ``method``,
    without its element ``omit`` (the signature being checked)."""
    if isinstance(content, list):
        reduced: Any = [_reduced(r, method, omit) if isinstance(r, dict) else r for r in content]
    else:
        reduced = _reduced(content, method, omit)
    return decimals.dumps(reduced, orjson.OPT_SORT_KEYS)

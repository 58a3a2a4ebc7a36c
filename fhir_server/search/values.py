"""Parsing of one search value by the parameter's declared type (R4 3.1.1.4 and 3.1.1.5).

The type decides the grammar: prefixes only for number, date and quantity; ``system|code`` only
for token and quantity; ``$`` only for composite. Each function raises ``ValueError`` with a
human message when the value does not fit; ``parse`` turns that into a 400 naming the parameter.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation

from fhir_server.folding import fold
from fhir_server.search.dates import date_range
from fhir_server.search.model import (
    DateValue,
    Modifier,
    NumberValue,
    Prefix,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

__all__ = [
    "parse_date",
    "parse_number",
    "parse_quantity",
    "parse_reference",
    "parse_string",
    "parse_token",
    "parse_uri",
    "split_escaped",
    "split_unescaped",
    "unescape",
]

_PREFIXES = {prefix.value for prefix in Prefix}
_AP_SHARE = "0.1"  # "ap": within 10% of the value (dates: of the gap to now), as R4 suggests


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` not preceded by ``\\`` and undo the escapes ``\\, \\| \\$ \\\\``."""
    if "\\" not in text:  # no escape: the common case, at C speed
        return text.split(separator)
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char if char in ",|$\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current) + ("\\" if escaped else ""))
    return parts


def unescape(text: str) -> str:
    """Undo the escapes ``\\, \\| \\$ \\\\`` of a value part."""
    return split_escaped(text, "\x00")[0]


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` not preceded by ``\\``, keeping every escape for a later split."""
    if "\\" not in text:  # no escape: the common case, at C speed
        return text.split(separator)
    parts, start, position = [], 0, 0
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        if text[position] == separator:
            parts.append(text[start:position])
            start = position + 1
        position += 1
    parts.append(text[start:])
    return parts


def _prefixed(text: str) -> tuple[Prefix, str]:
    if len(text) > 2 and text[:2] in _PREFIXES and not text[:2].isdigit():
        return Prefix(text[:2]), text[2:]
    return Prefix.EQ, text


def parse_string(text: str) -> StringValue:
    """Return a string value (folded for the default and ``:contains`` searches)."""
    raw = unescape(text)
    return StringValue(raw, fold(raw))


def parse_token(text: str, modifier: Modifier | None) -> TokenValue:
    """Return ``[system|]code``; under ``:text`` the folded text as ``code``."""
    if modifier is Modifier.TEXT:
        return TokenValue(None, fold(unescape(text)))
    if modifier is Modifier.OF_TYPE:
        parts = [unescape(part) for part in split_unescaped(text, "|")]
        if len(parts) != 3 or not all(parts[1:]):
            raise ValueError(":of-type takes system|code|value")
        return TokenValue(parts[0], f"{parts[1]}|{parts[2]}")
    parts = split_unescaped(text, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    if len(parts) > 2:
        raise ValueError("a token has at most one unescaped '|'")
    system, code = (unescape(part) for part in parts)
    return TokenValue(system, code or None)


def parse_date(text: str) -> DateValue:
    """Return a prefixed date as a half-open UTC microsecond range."""
    prefix, rest = _prefixed(text)
    low, high = date_range(rest)
    if prefix is Prefix.AP:
        # "now" by the day, so that the pages of one search agree on the same range
        now = int(time.time() // 86_400 * 86_400 * 1_000_000)
        margin = int(abs(now - low) * float(_AP_SHARE))
        low, high = low - margin, high + margin
    return DateValue(prefix, low, high)


def parse_number(text: str) -> NumberValue:
    """Return a prefixed number with the range implied by its significant figures."""
    prefix, rest = _prefixed(text)
    try:
        number = Decimal(rest)
    except InvalidOperation:
        raise ValueError(f"not a number: {rest!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {rest!r}")
    value = float(number)
    # Half a unit of the last significant digit: "100" is [99.5, 100.5), "5.4" [5.35, 5.45).
    half = Decimal(5).scaleb(int(number.as_tuple().exponent) - 1)
    if prefix is Prefix.AP:
        half = max(half, abs(number) * Decimal(_AP_SHARE))
    # sa and eb compare with the implied range too: sa100 excludes 100 (and 100.4).
    if prefix in (Prefix.EQ, Prefix.NE, Prefix.AP, Prefix.SA, Prefix.EB):
        return NumberValue(prefix, value, float(number - half), float(number + half))
    return NumberValue(prefix, value, value, value)


def parse_quantity(text: str) -> QuantityValue:
    """Return ``[prefix]number[|system|code]``; an empty system or code means any."""
    parts = [unescape(part) for part in split_unescaped(text, "|")]
    if len(parts) not in (1, 3):
        raise ValueError("a quantity is number, or number|system|code")
    number = parse_number(parts[0])
    if len(parts) == 1:
        return QuantityValue(number, None, None)
    return QuantityValue(number, parts[1] or None, parts[2] or None)


def parse_reference(text: str, target_type: str | None) -> ReferenceValue:
    """Return ``Type/id``, a bare id (of ``target_type`` when given) or an absolute URL."""
    raw = unescape(text)
    if "/_history/" in raw:
        raw = raw.split("/_history/", 1)[0]
    if "://" in raw or raw.startswith("urn:"):
        segments = raw.rstrip("/").split("/")
        if len(segments) >= 2 and segments[-2][:1].isupper():
            return ReferenceValue(segments[-2], segments[-1], raw)
        return ReferenceValue(None, None, raw)
    if "/" in raw:
        kind, _, ident = raw.partition("/")
        if not kind or not ident or "/" in ident:
            raise ValueError(f"not a reference: {raw!r}")
        return ReferenceValue(kind, ident)
    if not raw:
        raise ValueError("an empty reference")
    return ReferenceValue(target_type, raw)


def parse_uri(text: str) -> UriValue:
    """Return a uri value."""
    return UriValue(unescape(text))

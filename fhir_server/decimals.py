"""FHIR JSON with every decimal kept as written: ``1.50`` is read back ``1.50``, not ``1.5``.

R4 (datatypes.html#decimal) says a decimal's precision is part of its value. A JSON parser
gives a float, and a float's shortest text drops trailing zeros and exponents (``105.00`` ->
``105.0``, ``1.000000000000000000E-245`` -> ``1e-245``). Here:

- ``loads`` parses with orjson, then looks in the bytes for a number whose text the float
  would not give back (one regex pass; almost every body has none, and is done). Where there
  is one it parses again with the standard library, giving such numbers as ``ExactDecimal``:
  a float (validation, search indexing and comparisons see its value) carrying its text.
- ``dumps`` serialises with orjson and writes each ``ExactDecimal`` as its text
  (``orjson.Fragment``); a value without one costs nothing more.

Everything that turns request bodies or stored content into JSON objects, or back, goes
through these two functions (``resources.parse_json``, ``StoredResource.resource``, the
stores' writes, the responses).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["ExactDecimal", "dumps", "has_inexact_number", "loads"]

#: The scan runs on a copy of the body with every digit made byte 1 (which valid JSON never
#: holds raw) and ``E`` made ``e`` (``bytes.translate``, a few microseconds), so that each
#: search below starts with a literal and runs at memchr speed: a character class first
#: (``[0-9]``) made a 14 kB Bundle's scan cost 300 us, more than orjson's parse.
_SHAPES = bytes.maketrans(b"0123456789E", b"\x01" * 10 + b"e")
_END = rb"(?=[ \t\r\n]*[,}\]])"  # a number ends before , } or ]
#: Where a number with a fraction (``.``) or an exponent without one (digit, ``e``) ends.
_FRACTION = re.compile(rb"\.\x01+(?:e[+-]?\x01+)?" + _END)
_EXPONENT = re.compile(rb"\x01e[+-]?\x01+" + _END)
_NEGATIVE_ZERO = re.compile(rb"-0(?:\.0+)?" + _END)
_END_AT = re.compile(_END)
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LONG_INTEGER = b"\x01" * 20  # orjson reads integers up to 2**64 - 1 (20 digits) exactly
_INT64 = (-(2**63), 2**64 - 1)
_MAX_DIGITS = 1000  # a longer fraction is taken as inexact without converting it


class ExactDecimal(float):
    """A JSON number whose float would not give its text back: the value, and ``text``."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        """Equal to a number of the same value written the same way (``1.50 != 1.5``)."""
        if isinstance(other, float | int) and not isinstance(other, bool):
            return float.__eq__(self, float(other)) and self.text == _text(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = float.__hash__

    def __reduce__(self) -> tuple[type[ExactDecimal], tuple[str]]:
        return ExactDecimal, (self.text,)

    def __copy__(self) -> ExactDecimal:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ExactDecimal:
        return self


def _text(number: float | int) -> str:
    """The JSON text ``dumps`` writes for a number."""
    if isinstance(number, ExactDecimal):
        return number.text
    return orjson.dumps(number).decode()


def _inexact(token: bytes) -> bool:
    """True if orjson's number for ``token`` would not be written back as ``token``."""
    if b"." in token or b"e" in token or b"E" in token:
        return len(token) > _MAX_DIGITS or orjson.dumps(float(token)) != token
    return token == b"-0" or len(token) > 20 or not _INT64[0] <= int(token) <= _INT64[1]


def _number_before(body: bytes, end: int) -> bytes | None:
    """The JSON number that ends at ``end`` in ``body`` as a value (after ``:``, ``,`` or
    ``[``), or None when the characters there are not one (text inside a string)."""
    start = end
    while start > 0 and body[start - 1] in b"0123456789.eE+-":
        start -= 1
    token = body[start:end]
    before = start
    while before > 0 and body[before - 1] in b" \t\r\n":
        before -= 1
    if _JSON_NUMBER.fullmatch(token) is None or (before > 0 and body[before - 1] not in b":,["):
        return None
    return token


def _has_long_integer(shapes: bytes) -> bool:
    """True if a run of 20+ digits in ``shapes`` is a whole JSON number (not in a string)."""
    at = shapes.find(_LONG_INTEGER)
    while at >= 0:
        end = at + len(_LONG_INTEGER)
        while end < len(shapes) and shapes[end] == 1:
            end += 1
        start = at
        while start > 0 and shapes[start - 1] in b" \t\r\n-":
            start -= 1
        if (start == 0 or shapes[start - 1] in b":,[") and _END_AT.match(shapes, end):
            return True
        at = shapes.find(_LONG_INTEGER, end)
    return False


def has_inexact_number(body: bytes) -> bool:
    """True if ``body`` (JSON) may hold a number a float would not give back as written.

    Never false for such a body; true for a few others (text inside a string that looks
    like a number at the end of a value), which then only take the slower exact parse.
    """
    if _NEGATIVE_ZERO.search(body) is not None:
        return True
    shapes = body.translate(_SHAPES)
    if _has_long_integer(shapes):
        return True
    for pattern in (_FRACTION, _EXPONENT):
        for match in pattern.finditer(shapes):
            token = _number_before(body, match.end())
            if token is not None and _inexact(token):
                return True
    return False


def _float(text: str) -> float:
    value = float(text)
    return value if orjson.dumps(value).decode() == text else ExactDecimal(text)


def _int(text: str) -> int | float:
    if text != "-0" and len(text) <= 20 and _INT64[0] <= (value := int(text)) <= _INT64[1]:
        return value
    return ExactDecimal(text)


def loads(body: bytes) -> Any:
    """Parse JSON as orjson does (raising ``orjson.JSONDecodeError``), keeping each number
    that a float would change as an ``ExactDecimal``."""
    value = orjson.loads(body)
    if has_inexact_number(body):
        # orjson has accepted the document: the standard parser reads it the same way.
        value = json.loads(body, parse_float=_float, parse_int=_int)
    return value


def _fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, ExactDecimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int = 0) -> bytes:
    """Serialise ``value`` with orjson, writing each ``ExactDecimal`` as its text."""
    return orjson.dumps(value, default=_fragment, option=option)

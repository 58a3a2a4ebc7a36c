"""Validity tests of FHIR R4 primitive values (https://hl7.org/fhir/R4/datatypes.html#primitive).

:func:`validators` gives one test per primitive type code: the JSON type, R4's regex (or an
equivalent, cheaper test), integer ranges, and dates that exist on the calendar. The structural
checker (:mod:`fhir_server.conformance.elements`) attaches them to its element records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date
from typing import Any

from fhir_server.decimals import ExactDecimal

__all__ = ["Valid", "always", "any_string", "never", "validators"]

#: A validity test of one JSON value.
Valid = Callable[[Any], bool]

_INTEGER_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
}
_CALENDAR_TYPES = frozenset({"date", "dateTime", "instant"})
#: Patterns used instead of R4's: the same language, cheaper to match. R4's base64Binary regex
#: ``(\s*([0-9a-zA-Z\+/=]){4}\s*)+`` backtracks exponentially on a long invalid value (two
#: adjacent ``\s*``).
_EQUIVALENT_PATTERNS = {"base64Binary": r"(?:\s*[0-9a-zA-Z+/=]{4})+\s*"}


def _is_string(value: Any) -> bool:
    r"""R4's string regex ``[ \r\n\t\S]+``, with ASCII classes: any non-blank string without
    form feed or vertical tab."""
    return (
        type(value) is str
        and value != ""
        and not value.isspace()
        and "\f" not in value
        and "\v" not in value
    )


def any_string(value: Any) -> bool:
    r"""markdown (R4's regex ``\s*(\S|\s)*`` matches everything) and xhtml: non-blank."""
    return type(value) is str and value != "" and not value.isspace()


#: Tests used instead of R4's regex, equivalent and cheaper.
_EQUIVALENT_TESTS: dict[str, Valid] = {"string": _is_string, "markdown": any_string}


def validators(regexes: dict[str, str]) -> dict[str, Valid]:
    """Return a validity test per primitive type code (regexes: R4's, per type)."""
    out: dict[str, Valid] = {"boolean": _is_boolean, "decimal": _is_decimal, **_EQUIVALENT_TESTS}
    for code, (low, high) in _INTEGER_RANGES.items():
        out[code] = _integer_test(low, high)
    for code, regex in regexes.items():
        if code in out:
            continue
        pattern = _EQUIVALENT_PATTERNS.get(code, regex)
        # XML Schema semantics: \s, \S and \d are the ASCII classes.
        out[code] = _string_test(re.compile(pattern, re.ASCII), code in _CALENDAR_TYPES)
    return out


def never(value: Any) -> bool:
    return False


def _is_boolean(value: Any) -> bool:
    return value is True or value is False


def _is_decimal(value: Any) -> bool:
    kind = type(value)
    return kind is int or ((kind is float or kind is ExactDecimal) and math.isfinite(value))


def _integer_test(low: int, high: int) -> Valid:
    def valid(value: Any) -> bool:
        return type(value) is int and low <= value <= high

    return valid


def always(value: Any) -> bool:
    return True


#: Valid values remembered per type (codes, systems, URLs, dates repeat from resource to
#: resource): at most this many, of at most ``_MEMO_CHARS`` characters, before starting over.
_MEMO_SIZE = 4096
_MEMO_CHARS = 256


def _string_test(pattern: re.Pattern[str], calendar: bool) -> Valid:
    """The test of a type given by its regex (and, for the date types, the calendar). The
    values found valid are remembered (a bounded set per type): the test is a pure function
    of the value, and a set lookup costs a fifth of the regex."""
    fullmatch = pattern.fullmatch
    known: set[str] = set()

    def valid(value: Any) -> bool:
        if type(value) is not str:
            return False
        if value in known:
            return True
        if not value or value.isspace() or fullmatch(value) is None:
            return False
        if calendar and len(value) >= 10 and not _real_date(value):
            return False
        if len(value) <= _MEMO_CHARS:
            if len(known) >= _MEMO_SIZE:
                known.clear()
            known.add(value)
        return True

    return valid


def _real_date(value: str) -> bool:
    """Reject the dates the regex lets through but the calendar lacks (2023-02-30)."""
    try:
        date.fromisoformat(value[:10])
    except ValueError:
        return False
    return True

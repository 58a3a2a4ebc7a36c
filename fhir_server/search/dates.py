"""FHIR date, dateTime and instant values as half-open UTC ranges in integer microseconds.

``date_range("1990")`` is the whole of 1990, ``[1990-01-01T00:00+07:00, 1991-01-01T00:00+07:00)``:
a partial value stands for its implicit precision range (R4 3.1.1.4.2), and a value without a
time zone is read in the server's zone, +07:00 (R4 leaves it to the server; Vietnam has one zone
and no daylight saving). Both search values and indexed values go through this one function.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

__all__ = [
    "MAX_MICROS",
    "MIN_MICROS",
    "SERVER_ZONE",
    "date_range",
    "instant_bound",
    "micros_to_instant",
]

SERVER_ZONE = timezone(timedelta(hours=7))
MIN_MICROS = -(2**62)
MAX_MICROS = 2**62
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATTERN = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,  # the FHIR date types' digits are 0-9
)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@lru_cache(maxsize=256)
def _zone(text: str | None) -> timezone:
    """The zone of a value's offset text (``+07:00``, ``Z``, None for none): remembered, since
    the date ranges of times (each value new) ask the same few zones."""
    if text is None:
        return SERVER_ZONE
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


@lru_cache(maxsize=1 << 16)
def date_range(text: str) -> tuple[int, int]:
    """Return the half-open range ``[low, high)`` in UTC microseconds that ``text`` denotes.

    Raises ``ValueError`` when ``text`` is not a FHIR date, dateTime or instant. Cached: dates
    repeat (birth dates, visit days), and parsing one costs several microseconds.
    """
    found = _PATTERN.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    part = found.groupdict()
    zone = _zone(part["zone"])
    year, month, day = int(part["year"]), int(part["month"] or 1), int(part["day"] or 1)
    if part["month"] is None:
        start, end = datetime(year, 1, 1, tzinfo=zone), datetime(year + 1, 1, 1, tzinfo=zone)
    elif part["day"] is None:
        start = datetime(year, month, 1, tzinfo=zone)
        end = datetime(*_next_month(year, month), 1, tzinfo=zone)
    elif part["hour"] is None:
        start = datetime(year, month, day, tzinfo=zone)
        end = start + timedelta(days=1)
    else:
        start, end = _time_range(part, datetime(year, month, day, tzinfo=zone))
    return _micros(start), _micros(end)


def _time_range(part: dict[str, str | None], day: datetime) -> tuple[datetime, datetime]:
    start = day.replace(hour=int(part["hour"] or 0), minute=int(part["minute"] or 0))
    if part["second"] is None:
        return start, start + timedelta(minutes=1)
    start = start.replace(second=int(part["second"]))
    fraction = part["fraction"]
    if fraction is None:
        return start, start + timedelta(seconds=1)
    digits = fraction[1:7]
    start = start.replace(microsecond=int(digits.ljust(6, "0")))
    return start, start + timedelta(microseconds=10 ** (6 - len(digits)))


def micros_to_instant(micros: int) -> str:
    """Return the UTC instant (``2026-11-23T10:50:54.123456+00:00``) of a microsecond count."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds")


def instant_bound(micros: float) -> str:
    """The text of a microsecond search bound, comparable with stored ``lastUpdated`` instants
    (fixed width, so they compare as text); beyond the years 1-9999, "0" or "A"."""
    clamped = int(min(max(micros, MIN_MICROS), MAX_MICROS))
    if clamped <= -62135596800000000:  # before year 1: smaller than any stored instant
        return "0"
    if clamped >= 253402300799000000:  # after 9999-12-31T23:59:59Z: greater than any
        return "A"
    return micros_to_instant(clamped)

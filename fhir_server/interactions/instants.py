"""Parsing of FHIR date/dateTime/instant parameter values into UTC instants.

Values without a time zone are read in the server's zone, Vietnam time (+07:00). A partial
value stands for its whole precision range; callers choose the start or the end.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from fhir_server.errors import BadRequest

__all__ = ["SERVER_ZONE", "instant_range", "to_storage_instant"]

SERVER_ZONE = timezone(timedelta(hours=7))
_PATTERN = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def to_storage_instant(moment: datetime) -> str:
    """Format ``moment`` like the store's ``last_updated`` column (fixed width, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _zone(text: str | None) -> timezone:
    if text is None:
        return SERVER_ZONE
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def instant_range(value: str, name: str) -> tuple[datetime, datetime]:
    """Return [start, end) of the period ``value`` denotes; raise ``BadRequest`` if invalid."""
    match = _PATTERN.match(value)
    if match is None:
        raise BadRequest(f"Parameter {name}: '{value}' is not a valid date or instant",
                         message_id="MSG_PARAM_INVALID", expression=(name,))
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        start = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                         int(minute or 0), int(second or 0),
                         int(float(fraction) * 1_000_000) if fraction else 0, _zone(zone))
    except ValueError:
        raise BadRequest(f"Parameter {name}: '{value}' is not a valid date or instant",
                         message_id="MSG_PARAM_INVALID", expression=(name,)) from None
    return start, start + _precision_step(start, month, day, minute, second, fraction)


def _precision_step(start: datetime, month: str | None, day: str | None, minute: str | None,
                    second: str | None, fraction: str | None) -> timedelta:
    if month is None:
        return datetime(start.year + 1, 1, 1, tzinfo=start.tzinfo) - start
    if day is None:
        following = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1,
                             tzinfo=start.tzinfo)
        return following - start
    if minute is None:
        return timedelta(days=1)
    if second is None:
        return timedelta(minutes=1)
    if fraction is None:
        return timedelta(seconds=1)
    return timedelta(microseconds=1)

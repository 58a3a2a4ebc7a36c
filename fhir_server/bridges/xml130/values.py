"""The value formats of XML 130 and their FHIR forms.

Dates are ``yyyyMMdd`` and times ``yyyyMMddHHmm`` in Vietnam's local time (+07:00, no daylight
saving); FHIR dateTimes are written with that offset. Amounts and quantities are decimals with
a dot; a JSON number keeps their value, not their trailing zeros, so numbers compare as numbers
(``canonical``). Lists inside one field are separated by ``;``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

__all__ = [
    "VIETNAM",
    "birth_from_xml",
    "birth_to_xml",
    "date_from_xml",
    "date_to_xml",
    "datetime_from_xml",
    "datetime_to_xml",
    "number_from_xml",
    "number_to_xml",
    "same_value",
    "split_list",
]

VIETNAM = timezone(timedelta(hours=7))
_DATE = re.compile(r"[0-9]{8}")
_DATETIME = re.compile(r"[0-9]{12}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def split_list(text: str) -> list[str]:
    """The items of a ``;``-separated field, without blanks."""
    return [item.strip() for item in text.split(";") if item.strip()]


def date_from_xml(text: str) -> str:
    """``yyyyMMdd`` -> FHIR date; raises ``ValueError`` for anything else."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"'{text}' is not yyyyMMdd")
    return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()


def datetime_from_xml(text: str) -> str:
    """``yyyyMMddHHmm`` (Vietnam time) -> FHIR dateTime with +07:00; ``ValueError`` if not."""
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"'{text}' is not yyyyMMddHHmm")
    datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
             int(text[10:]))  # a real day and time of day, else ValueError
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:]}:00+07:00"


def date_to_xml(value: str) -> str:
    """FHIR date (or the date part of a dateTime, read in Vietnam time) -> ``yyyyMMdd``."""
    if len(value) > 10:
        return datetime_to_xml(value)[:8]
    return value.replace("-", "")


def datetime_to_xml(value: str) -> str:
    """FHIR dateTime -> ``yyyyMMddHHmm`` in Vietnam time (a date alone gets 0000)."""
    if len(value) <= 10:
        return value.replace("-", "").ljust(8, "0") + "0000"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(VIETNAM)
    return moment.strftime("%Y%m%d%H%M")


def birth_from_xml(text: str) -> tuple[str, str | None]:
    """NGAY_SINH (``yyyyMMddHHmm``; ``0000`` for an unknown month and day or time) ->
    (FHIR birthDate, birth time as a dateTime or None)."""
    if not _DATETIME.fullmatch(text):
        raise ValueError(f"'{text}' is not yyyyMMddHHmm")
    year, month_day, clock = text[:4], text[4:8], text[8:]
    if month_day == "0000":
        return year, None
    day = date_from_xml(text[:8])
    return day, (datetime_from_xml(text) if clock != "0000" else None)


def birth_to_xml(birth_date: str, birth_time: str | None) -> str:
    """The inverse of ``birth_from_xml``."""
    if len(birth_date) == 4:
        return birth_date + "00000000"
    if birth_time:
        return datetime_to_xml(birth_time)
    return birth_date.replace("-", "")[:8].ljust(8, "0") + "0000"


def number_from_xml(text: str) -> int | float:
    """A decimal written with a dot -> a JSON number; ``ValueError`` if it is not one."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"'{text}' is not a number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"'{text}' is not a number") from None
    return int(value) if value == value.to_integral_value() and "." not in text else float(value)


def number_to_xml(value: object) -> str:
    """A JSON number -> its shortest decimal text (no exponent)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return str(value)
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def same_value(first: str, second: str) -> bool:
    """Round-trip equality of two field texts: equal, or the same number (``1.50`` = ``1.5``)."""
    if first == second:
        return True
    if not (_NUMBER.fullmatch(first) and _NUMBER.fullmatch(second)):
        return False
    return Decimal(first) == Decimal(second)

"""Vietnamese identifiers for synthetic data: CCCD, BHYT card number, MA_LK, and their systems.

Formats follow VIETNAM.md §2: the 12-digit CCCD (§2.1), the 15-character BHYT card number
(§2.3), the 5-character facility code (§2.4) and the XML 130 episode key MA_LK (§3.1).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import date

__all__ = [
    "BHYT_CATEGORIES",
    "cccd_number",
    "century_gender_digit",
    "health_insurance_number",
    "ma_lk",
    "ma_lk_system",
    "random_urn",
    "record_system",
    "unique",
]

# The 43 participant categories (mã đối tượng) accepted by VNeID, VIETNAM.md §2.3.
BHYT_CATEGORIES = (
    "DN", "HX", "CH", "NN", "TK", "HC", "XK", "HT", "TB", "NO", "CT", "XB", "TN", "CS", "QN",
    "CA", "CY", "XN", "MS", "CC", "CK", "CB", "KC", "HD", "TE", "BT", "HN", "DT", "DK", "XD",
    "TS", "TC", "TQ", "TA", "TY", "HG", "LS", "PV", "CN", "HS", "SV", "GB", "GD",
)  # fmt: skip


def random_urn(rng: random.Random) -> str:
    """A `urn:uuid:` drawn from `rng` (version 4 layout), so that output is reproducible."""
    return "urn:uuid:" + str(uuid.UUID(int=rng.getrandbits(128), version=4))


def century_gender_digit(birth_year: int, male: bool) -> int:
    """The 4th CCCD digit: 0/1 for 1900-1999, 2/3 for 2000-2099 ..., even for men."""
    return 2 * ((birth_year - 1900) // 100) + (0 if male else 1)


def cccd_number(rng: random.Random, prefix: str, birth_year: int, male: bool) -> str:
    """A CCCD: birth-registration province prefix, century+gender, year mod 100, 6 random."""
    digit = century_gender_digit(birth_year, male)
    return f"{prefix}{digit}{birth_year % 100:02d}{rng.randrange(1_000_000):06d}"


def health_insurance_number(rng: random.Random, category: str, level: int, province: str) -> str:
    """A BHYT card number: category, benefit level 1-5, province code, 10-digit BHXH number."""
    return f"{category}{level}{province}{rng.randrange(10_000_000_000):010d}"


def ma_lk(facility_code: str, day: date, serial: int) -> str:
    """The XML 130 episode key: facility code, visit date and a run-wide serial number."""
    return f"{facility_code}{day:%Y%m%d}{serial:07d}"


def ma_lk_system(facility_code: str) -> str:
    """MA_LK is unique within a facility, so its identifier system is per facility."""
    return f"https://fhir.sskdt.vn/sid/ma-lk/{facility_code}"


def record_system(facility_code: str) -> str:
    """The system of the business identifiers of a facility's other records of a visit."""
    return f"https://fhir.sskdt.vn/sid/record/{facility_code}"


def unique(draw: Callable[[], str], issued: set[str]) -> str:
    """Draw until the value is new, then record it.

    Two patients sharing a CCCD would be merged by the Patient conditional create, so numbers are
    never reused within a run (their random part has only 10^6 values per prefix, year and sex).
    """
    value = draw()
    while value in issued:
        value = draw()
    issued.add(value)
    return value

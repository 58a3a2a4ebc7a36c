"""A fixed pool of synthetic health facilities (Organizations) in the 34 provinces of 2025.

Each facility code is the 2-digit province code plus a 3-digit serial (VIETNAM.md §2.4):
001 is the provincial general hospital, 01x the regional health centres, 1xx the commune
stations. The pool depends only on the code tables, never on the seed, so the same facility
has the same code and urn in every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fhir_server.synthetic.identifiers import random_urn
from fhir_server.synthetic.systems import (
    FACILITY_SYSTEM,
    ORGANIZATION_TYPE_SYSTEM,
    PROVINCE_CODE_EXTENSION,
)
from fhir_server.synthetic.tables import Coded, CodeTables
from fhir_server.synthetic.transaction import SYNTHETIC_META

__all__ = ["Facility", "FacilityDirectory", "FacilityLevel", "facility_pool"]

Resource = dict[str, Any]

_CENTRES_PER_PROVINCE = 2
_STATION_NAMES = ("Tân Phú", "An Bình", "Hòa Bình", "Tân Thành", "Phú Lợi", "Bình Minh")
# A separate stream keeps the pool's urns independent of the caller's seed.
_POOL_SEED = 2025


class FacilityLevel(StrEnum):
    """Technical levels used to pick where a visit happens."""

    HOSPITAL = "hospital"
    CENTRE = "centre"
    STATION = "station"


@dataclass(frozen=True, slots=True)
class Facility:
    """A facility: its KBCB code, level, province and the Organization resource."""

    code: str
    level: FacilityLevel
    province_code: str
    urn: str
    resource: Resource


def _short_name(province: Coded) -> str:
    for prefix in ("Thành phố ", "Tỉnh "):
        if province.label.startswith(prefix):
            return province.label.removeprefix(prefix)
    return province.label


def _organization(code: str, name: str, province: Coded) -> Resource:
    code_extension = {"url": PROVINCE_CODE_EXTENSION, "valueCode": province.code}
    address = {"extension": [code_extension], "state": province.label, "country": "VN"}
    kind = {"coding": [{"system": ORGANIZATION_TYPE_SYSTEM, "code": "prov"}]}
    identifier = {"system": FACILITY_SYSTEM, "value": code}
    return {
        "resourceType": "Organization",
        "meta": SYNTHETIC_META,
        "identifier": [identifier],
        "active": True,
        "type": [kind],
        "name": name,
        "address": [address],
    }


def _province_facilities(rng: random.Random, province: Coded) -> list[Facility]:
    short = _short_name(province)
    rows = [("001", FacilityLevel.HOSPITAL, f"Bệnh viện Đa khoa {short}")]
    for n in range(1, _CENTRES_PER_PROVINCE + 1):
        rows.append((f"{10 + n:03d}", FacilityLevel.CENTRE, f"Trung tâm Y tế khu vực {n} {short}"))
    for n, commune in enumerate(_STATION_NAMES, start=101):
        rows.append((f"{n:03d}", FacilityLevel.STATION, f"Trạm Y tế {commune}, {short}"))
    return [
        Facility(code, level, province.code, random_urn(rng), _organization(code, name, province))
        for serial, level, name in rows
        for code in [province.code + serial]
    ]


def facility_pool(tables: CodeTables) -> tuple[Facility, ...]:
    """All facilities of all provinces, in province order."""
    rng = random.Random(_POOL_SEED)
    return tuple(f for p in tables.provinces for f in _province_facilities(rng, p))


class FacilityDirectory:
    """Facilities indexed by province and level, for choosing where a visit happens."""

    def __init__(self, facilities: tuple[Facility, ...]) -> None:
        self._by_place: dict[tuple[str, FacilityLevel], list[Facility]] = {}
        for facility in facilities:
            self._by_place.setdefault((facility.province_code, facility.level), []).append(facility)
        self._provinces = sorted({f.province_code for f in facilities})

    def pick(
        self, rng: random.Random, home_province: str, levels: tuple[FacilityLevel, ...]
    ) -> Facility:
        """A facility of one of `levels`, usually in the home province (9 visits in 10)."""
        province = home_province if rng.random() < 0.9 else rng.choice(self._provinces)
        return rng.choice(self._by_place[(province, rng.choice(levels))])

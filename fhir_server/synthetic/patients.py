"""Synthetic Vietnamese patients: demographics, CCCD and BHYT numbers, and the Patient resource.

The age pyramid, the gender split and the BHYT category per age band are rough approximations
of Vietnam's population; they only need to look plausible. Which category carries which benefit
level is [M] in VIETNAM.md §2.3, so the levels below are illustrative.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

from fhir_server.synthetic.identifiers import (
    BHYT_CATEGORIES,
    cccd_number,
    health_insurance_number,
    random_urn,
    unique,
)
from fhir_server.synthetic.names import PersonName, draw_name
from fhir_server.synthetic.systems import (
    ETHNIC_GROUP_SYSTEM,
    ETHNICITY_EXTENSION,
    IDENTIFIER_TYPE_SYSTEM,
    INSURANCE_SYSTEM,
    NATIONAL_ID_SYSTEM,
    PROVINCE_CODE_EXTENSION,
)
from fhir_server.synthetic.tables import Coded, CodeTables
from fhir_server.synthetic.transaction import SYNTHETIC_META
from fhir_server.synthetic.weighted import WeightedChoice

__all__ = [
    "TODAY",
    "PatientFacts",
    "draw_patient",
]

Resource = dict[str, Any]

TODAY = date(2026, 6, 30)

_AGE_BANDS = WeightedChoice.of([((0, 5), 8), ((6, 17), 14), ((18, 39), 30), ((40, 59), 26),
                                ((60, 79), 18), ((80, 96), 4)])  # fmt: skip
_GENDERS = WeightedChoice.of([("male", 49.0), ("female", 49.4), ("other", 0.8), ("unknown", 0.8)])
# Shares of the larger groups (census 2019, rounded); every other group shares the remainder.
_ETHNIC_SHARES = {"01": 85.3, "02": 1.9, "03": 1.9, "04": 0.8, "05": 1.4, "06": 1.5, "07": 1.1,
                  "08": 1.5, "09": 0.9, "10": 0.5, "12": 0.4}  # fmt: skip
_ADULT_CATEGORIES = WeightedChoice.of([("DN", 35), ("GD", 28), ("HN", 8), ("HC", 6), ("CN", 4),
                                       ("NO", 3), ("QN", 1), ("CA", 1), ("other", 14)])  # fmt: skip
_LEVELS = {"TE": 1, "CC": 1, "HN": 1, "CT": 2, "HT": 3, "CN": 3, "QN": 5, "CA": 5, "CY": 5}
_STREETS = ("Lê Lợi", "Trần Hưng Đạo", "Nguyễn Huệ", "Hai Bà Trưng", "Quang Trung",
            "Lý Thường Kiệt", "Nguyễn Trãi", "Hùng Vương", "Lê Duẩn", "Phan Chu Trinh")  # fmt: skip
_COMMUNES = ("Phường Tân Phú", "Phường An Bình", "Phường Hòa Bình", "Xã Tân Thành",
             "Xã Phú Lợi", "Xã Thạnh Mỹ", "Xã Quang Trung", "Phường Bình Minh")  # fmt: skip
_MOBILE_PREFIXES = (
    "032",
    "033",
    "035",
    "038",
    "070",
    "077",
    "081",
    "086",
    "090",
    "091",
    "096",
    "098",
)


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """What the visits of a patient need to know, plus the Patient resource itself."""

    urn: str
    cccd: str
    birth_date: date
    province: Coded
    resource: Resource


@cache
def _ethnic_choice(tables: CodeTables) -> WeightedChoice[Coded]:
    return WeightedChoice.of([(g, _ETHNIC_SHARES.get(g.code, 0.05)) for g in tables.ethnic_groups])


def _birth_date(rng: random.Random) -> date:
    low, high = _AGE_BANDS.draw(rng)
    return TODAY - timedelta(days=rng.randint(low * 365 + 1, high * 365 + 364))


def _insurance_category(rng: random.Random, age: int) -> str:
    if age < 6:
        return "TE"
    if age < 18:
        return "HS"
    if age >= 60:
        return rng.choice(("HT", "HT", "CT", "GD", "HN"))
    category = "SV" if age < 23 and rng.random() < 0.4 else _ADULT_CATEGORIES.draw(rng)
    return rng.choice(BHYT_CATEGORIES) if category == "other" else category


def _identifier(system: str, type_code: str, value: str) -> Resource:
    coding = {"system": IDENTIFIER_TYPE_SYSTEM, "code": type_code}
    return {"use": "official", "type": {"coding": [coding]}, "system": system, "value": value}


def _address(rng: random.Random, province: Coded) -> Resource:
    if rng.random() < 0.6:
        street = f"Số {rng.randint(1, 320)} đường {rng.choice(_STREETS)}"
    else:
        street = f"Thôn {rng.randint(1, 12)}"
    lines = [street, rng.choice(_COMMUNES)]
    return {
        "extension": [{"url": PROVINCE_CODE_EXTENSION, "valueCode": province.code}],
        "use": "home",
        "text": ", ".join([*lines, province.label]),
        "line": lines,
        "state": province.label,
        "country": "VN",
    }


def _cccd_prefix(rng: random.Random, tables: CodeTables, province: Coded) -> str:
    # Most people live in the province where their birth was registered.
    own = "0" + province.code
    if rng.random() < 0.75 and any(p.code == own for p in tables.cccd_prefixes):
        return own
    return rng.choice(tables.cccd_prefixes).code


def _patient_resource(
    name: PersonName, gender: str, birth: str, ids: list[Resource], extra: Resource
) -> Resource:
    return {
        "resourceType": "Patient",
        "meta": SYNTHETIC_META,
        "extension": extra["extension"],
        "identifier": ids,
        "active": True,
        "name": [
            {
                "use": "official",
                "text": name.text,
                "family": name.family,
                "given": [name.middle, name.given],
            }
        ],
        "telecom": extra["telecom"],
        "gender": gender,
        "birthDate": birth,
        "address": extra["address"],
    }


def draw_patient(rng: random.Random, tables: CodeTables, issued: set[str]) -> PatientFacts:
    """A patient with consistent CCCD, BHYT card, name, age, residence and ethnicity.

    `issued` holds the CCCD and BHYT numbers already given out in this run; new ones are added.
    """
    province = rng.choice(tables.provinces)
    gender = _GENDERS.draw(rng)
    # The CCCD digit encodes sex at birth; other/unknown administrative genders still carry one.
    male = gender == "male" or (gender not in ("male", "female") and rng.random() < 0.5)
    birth_date = _birth_date(rng)
    age = (TODAY - birth_date).days // 365
    prefix = _cccd_prefix(rng, tables, province)
    cccd = unique(lambda: cccd_number(rng, prefix, birth_date.year, male), issued)
    category = _insurance_category(rng, age)
    level = _LEVELS.get(category, 4)
    card = unique(lambda: health_insurance_number(rng, category, level, province.code), issued)
    # Older records often know only the birth year (XML 130 NGAY_SINH with "0000").
    year_only = age >= 50 and rng.random() < 0.15
    birth = str(birth_date.year) if year_only else birth_date.isoformat()
    ethnic = _ethnic_choice(tables).draw(rng)
    phone = f"{rng.choice(_MOBILE_PREFIXES)}{rng.randrange(10_000_000):07d}"
    extra = {
        "extension": [{"url": ETHNICITY_EXTENSION, "valueCoding": {
            "system": ETHNIC_GROUP_SYSTEM, "code": ethnic.code, "display": ethnic.label}}],
        "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
        "address": [_address(rng, province)],
    }  # fmt: skip
    ids = [_identifier(NATIONAL_ID_SYSTEM, "NI", cccd), _identifier(INSURANCE_SYSTEM, "SB", card)]
    name = draw_name(rng, male, province.code)
    resource = _patient_resource(name, gender, birth, ids, extra)
    return PatientFacts(random_urn(rng), cccd, birth_date, province, resource)

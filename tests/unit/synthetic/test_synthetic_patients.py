"""Generated patients and facilities: CCCD, BHYT, facility codes, provinces, names, ethnicity."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from fhir_server.synthetic.identifiers import BHYT_CATEGORIES, century_gender_digit
from fhir_server.synthetic.systems import (
    ETHNICITY_EXTENSION,
    FACILITY_SYSTEM,
    INSURANCE_SYSTEM,
    NATIONAL_ID_SYSTEM,
    PROVINCE_CODE_EXTENSION,
)
from fhir_server.synthetic.tables import load_tables

Resource = dict[str, Any]
BundleFactory = Callable[..., list[Resource]]

BHYT_PATTERN = re.compile(r"^[A-Z]{2}[1-5][0-9]{12}$")


def _patients(bundles: list[Resource]) -> list[Resource]:
    unique = {b["entry"][0]["fullUrl"]: b["entry"][0]["resource"] for b in bundles}
    return list(unique.values())


def _organizations(bundles: list[Resource]) -> list[Resource]:
    return [b["entry"][1]["resource"] for b in bundles]


def _identifier(resource: Resource, system: str) -> str:
    values = [i["value"] for i in resource["identifier"] if i["system"] == system]
    assert len(values) == 1, (system, resource["identifier"])
    return str(values[0])


@pytest.mark.parametrize(
    ("year", "male", "digit"),
    [(1950, True, 0), (1999, False, 1), (2000, True, 2), (2024, False, 3), (2100, True, 4)],
)
def test_cccd_fourth_digit_encodes_birth_century_and_gender(
    year: int, male: bool, digit: int
) -> None:
    assert century_gender_digit(year, male) == digit


def test_cccd_agrees_with_gender_birth_century_and_year(make_bundles: BundleFactory) -> None:
    checked = 0
    for patient in _patients(make_bundles(80)):
        cccd = _identifier(patient, NATIONAL_ID_SYSTEM)
        assert re.fullmatch(r"\d{12}", cccd)
        year = int(patient["birthDate"][:4])
        assert cccd[4:6] == f"{year % 100:02d}"
        if patient["gender"] in ("male", "female"):
            checked += 1
            male = patient["gender"] == "male"
            assert int(cccd[3]) == century_gender_digit(year, male)
    assert checked > 60


def test_cccd_prefix_is_a_tt07_birth_registration_code(make_bundles: BundleFactory) -> None:
    prefixes = {row.code for row in load_tables().cccd_prefixes}
    for patient in _patients(make_bundles(60)):
        assert _identifier(patient, NATIONAL_ID_SYSTEM)[:3] in prefixes


def test_bhyt_card_numbers_have_the_15_character_layout(make_bundles: BundleFactory) -> None:
    provinces = {row.code for row in load_tables().provinces}
    for patient in _patients(make_bundles(60)):
        card = _identifier(patient, INSURANCE_SYSTEM)
        assert BHYT_PATTERN.fullmatch(card), card
        assert card[:2] in BHYT_CATEGORIES
        assert card[3:5] in provinces


def test_patient_identifiers_are_typed_ni_and_sb(make_bundles: BundleFactory) -> None:
    patient = _patients(make_bundles(1))[0]
    types = {i["system"]: i["type"]["coding"][0]["code"] for i in patient["identifier"]}
    assert types == {NATIONAL_ID_SYSTEM: "NI", INSURANCE_SYSTEM: "SB"}


def test_facility_codes_are_a_2025_province_code_and_three_digits(
    make_bundles: BundleFactory,
) -> None:
    provinces = {row.code for row in load_tables().provinces}
    for organization in _organizations(make_bundles(40)):
        code = _identifier(organization, FACILITY_SYSTEM)
        assert re.fullmatch(r"\d{5}", code) and code[:2] in provinces
        assert organization["name"]


def test_addresses_name_one_of_the_34_provinces_of_2025(make_bundles: BundleFactory) -> None:
    names = {row.code: row.label for row in load_tables().provinces}
    assert len(names) == 34
    bundles = make_bundles(60)
    for resource in _patients(bundles) + _organizations(bundles):
        for address in resource["address"]:
            codes = [e["valueCode"] for e in address["extension"]
                     if e["url"] == PROVINCE_CODE_EXTENSION]  # fmt: skip
            assert len(codes) == 1 and names[codes[0]] == address["state"]
            assert "district" not in address


def test_names_are_vietnamese_with_diacritics(make_bundles: BundleFactory) -> None:
    patients = _patients(make_bundles(60))
    texts = [p["name"][0]["text"] for p in patients]
    decomposed = [unicodedata.normalize("NFD", text) for text in texts]
    with_marks = [t for t in decomposed if any(unicodedata.combining(c) for c in t)]
    assert len(with_marks) > 0.8 * len(texts)
    families = Counter(p["name"][0]["family"] for p in patients)
    assert families.most_common(1)[0][0] == "Nguyễn"
    for patient in patients:
        name = patient["name"][0]
        assert name["text"] == " ".join([name["family"], *name["given"]])


def test_ethnicity_codes_come_from_qd121_and_are_mostly_kinh(make_bundles: BundleFactory) -> None:
    known = {row.code for row in load_tables().ethnic_groups}
    codes = [
        e["valueCoding"]["code"]
        for p in _patients(make_bundles(100))
        for e in p["extension"]
        if e["url"] == ETHNICITY_EXTENSION
    ]
    assert len(codes) == 100 and set(codes) <= known
    assert codes.count("01") > 60


def test_some_birth_dates_are_year_only_and_all_are_before_now(
    make_bundles: BundleFactory,
) -> None:
    births = [p["birthDate"] for p in _patients(make_bundles(300))]
    assert any(len(b) == 4 for b in births) and any(len(b) == 10 for b in births)
    assert all("1900" < b < "2026-06-30" for b in births)


def test_no_two_patients_share_a_cccd_or_bhyt_number(make_bundles: BundleFactory) -> None:
    patients = _patients(make_bundles(400))
    for system in (NATIONAL_ID_SYSTEM, INSURANCE_SYSTEM):
        numbers = [_identifier(p, system) for p in patients]
        assert len(set(numbers)) == len(numbers) == 400

"""The administrative units of both eras and where the old ones lie today (geography.units)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from fhir_server.geography.units import REFORM, Units, default_units

ROOT = Path(__file__).resolve().parents[3]
BEFORE, AFTER = date(2025, 6, 30), REFORM


@pytest.fixture(scope="module")
def units() -> Units:
    return default_units()


def test_the_lists_hold_the_official_counts(units: Units) -> None:
    assert units.count("2025", "province") == 34
    assert units.count("2025", "commune") == 3321
    assert units.count("pre-2025", "province") == 63
    assert units.count("pre-2025", "district") == 696
    assert units.count("pre-2025", "commune") == 10051
    assert units.count("2025", "district") == 0


@pytest.mark.parametrize(("level", "code", "on", "name", "province"), [
    ("province", "01", AFTER, "Thành phố Hà Nội", "01"),
    ("province", "02", BEFORE, "Tỉnh Hà Giang", "02"),
    ("province", "08", AFTER, "Tỉnh Tuyên Quang", "08"),
    ("province", "74", BEFORE, "Tỉnh Bình Dương", "74"),
    ("district", "001", BEFORE, "Quận Ba Đình", "01"),
    ("district", "755", BEFORE, "Huyện Côn Đảo", "77"),
    ("commune", "00004", BEFORE, "Phường Trúc Bạch", "01"),
    ("commune", "00004", AFTER, "Phường Ba Đình", "01"),
    ("commune", "00715", BEFORE, "Xã Lũng Cú", "02"),
    ("commune", "26732", AFTER, "Đặc khu Côn Đảo", "79"),
    ("commune", "05443", AFTER, "Phường Phan Đình Phùng", "19"),
])  # fmt: skip
def test_known_codes_give_their_unit_on_a_date(
    units: Units, level: str, code: str, on: date, name: str, province: str
) -> None:
    unit = units.unit(level, code, on)  # type: ignore[arg-type]
    assert unit is not None and (unit.name, unit.province) == (name, province)
    assert unit.era == ("2025" if on >= REFORM else "pre-2025")


def test_a_unit_is_found_only_on_the_dates_of_its_list(units: Units) -> None:
    hagiang = units.province("02", BEFORE)
    assert hagiang is not None and hagiang.valid_to == BEFORE
    assert hagiang.valid_from == date(2008, 8, 1)
    assert units.province("02", AFTER) is None
    assert units.district("001", AFTER) is None
    assert units.commune("99999", BEFORE) is None and units.commune("99999", AFTER) is None
    commune = units.commune("00004", AFTER)
    assert commune is not None and commune.valid_from == REFORM and commune.valid_to is None


@pytest.mark.parametrize(("old", "new", "name"), [
    ("02", "08", "Tỉnh Tuyên Quang"), ("08", "08", "Tỉnh Tuyên Quang"),
    ("06", "19", "Tỉnh Thái Nguyên"), ("74", "79", "Thành phố Hồ Chí Minh"),
    ("77", "79", "Thành phố Hồ Chí Minh"), ("10", "15", "Tỉnh Lào Cai"),
    ("35", "37", "Tỉnh Ninh Bình"), ("01", "01", "Thành phố Hà Nội"),
])  # fmt: skip
def test_merged_provinces_map_to_todays(units: Units, old: str, new: str, name: str) -> None:
    today = units.today(old)
    assert today is not None
    assert (today.province.code, today.province.name) == (new, name)
    assert today.commune is None and not today.split


def test_every_old_province_lies_in_one_current_one_whose_code_it_may_share(units: Units) -> None:
    targets = {}
    for code in (f"{n:02d}" for n in range(1, 100)):
        if units.of_era("pre-2025", "province", code) is not None:
            today = units.today(code)
            assert today is not None
            targets[code] = today.province.code
    assert len(targets) == 63 and len(set(targets.values())) == 34
    # What makes a search by today's code exact: each current code is an old one lying in it.
    assert all(targets[new] == new for new in set(targets.values()))


@pytest.mark.parametrize(("province", "district", "commune", "new", "name"), [
    ("02", "026", "00715", "00715", "Xã Lũng Cú"),       # Hà Giang -> Tuyên Quang
    ("01", "001", "00001", "00097", "Phường Hồng Hà"),   # Phúc Xá merged with others
    ("01", "001", "00004", "00004", "Phường Ba Đình"),   # Trúc Bạch: same code, new unit
    ("77", "755", None, "26732", "Đặc khu Côn Đảo"),     # island district, no communes
])  # fmt: skip
def test_communes_merged_wholly_map_to_todays_commune(
    units: Units, province: str, district: str, commune: str | None, new: str, name: str
) -> None:
    today = units.today(province, district, commune)
    assert today is not None and today.commune is not None
    assert (today.commune.code, today.commune.name) == (new, name)
    assert today.commune.province == today.province.code and not today.split


def test_a_split_commune_is_reported_with_its_candidates_and_no_answer(units: Units) -> None:
    # Phường Ngọc Hà (Ba Đình, 00016) was divided between Phường Ba Đình and Phường Ngọc Hà.
    today = units.today("01", "001", "00016")
    assert today is not None and today.split and today.commune is None
    assert [(c.code, c.name) for c in today.candidates] == [
        ("00004", "Phường Ba Đình"), ("00008", "Phường Ngọc Hà")]
    assert today.province.code == "01"


def test_unknown_or_misplaced_codes_fall_back_to_the_province(units: Units) -> None:
    assert units.today("99") is None
    only_province = units.today("02", "001", "00001")  # Ba Đình codes are not in Hà Giang
    assert only_province is not None and only_province.province.code == "08"
    assert only_province.commune is None and only_province.candidates == ()


def _load(name: str) -> dict[str, object]:
    return dict(json.loads((ROOT / "terminology" / name).read_text("utf-8")))


def test_the_cccd_province_map_agrees_with_the_generated_one(units: Units) -> None:
    cccd = _load("ConceptMap-province-2016-to-2025.json")
    pairs = {(e["code"][1:], e["target"][0]["code"])  # type: ignore[index]
             for e in cccd["group"][0]["element"]}  # type: ignore[index]
    generated = {(code, today.province.code) for code, _ in pairs
                 if (today := units.today(code)) is not None}  # fmt: skip
    assert pairs == generated and len(pairs) == 63

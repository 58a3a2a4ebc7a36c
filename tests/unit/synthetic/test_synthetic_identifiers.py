"""Identifier builders: CCCD and BHYT layouts, MA_LK, and never reusing a number in a run."""

from __future__ import annotations

import random
from datetime import date

from fhir_server.synthetic.identifiers import (
    cccd_number,
    health_insurance_number,
    ma_lk,
    random_urn,
    unique,
)


def test_unique_redraws_until_the_value_was_not_issued() -> None:
    draws = iter(["001085000001", "001085000001", "001085000002"])
    issued: set[str] = set()
    assert unique(lambda: next(draws), issued) == "001085000001"
    assert unique(lambda: next(draws), issued) == "001085000002"
    assert issued == {"001085000001", "001085000002"}


def test_cccd_is_prefix_century_gender_year_and_six_digits() -> None:
    number = cccd_number(random.Random(1), "079", 2004, male=False)
    assert len(number) == 12 and number[:6] == "079304" and number.isdigit()


def test_bhyt_number_is_category_level_province_and_ten_digits() -> None:
    number = health_insurance_number(random.Random(1), "DN", 4, "01")
    assert len(number) == 15 and number[:5] == "DN401" and number[5:].isdigit()


def test_ma_lk_starts_with_facility_code_and_visit_date() -> None:
    assert ma_lk("79001", date(2024, 3, 15), 42) == "79001202403150000042"


def test_random_urn_depends_only_on_the_generator_state() -> None:
    assert random_urn(random.Random(3)) == random_urn(random.Random(3))
    assert random_urn(random.Random(3)) != random_urn(random.Random(4))

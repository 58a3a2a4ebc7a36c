"""The value formats of XML 130 and their FHIR forms."""

from __future__ import annotations

import pytest

from fhir_server.bridges.xml130 import values


@pytest.mark.parametrize(("text", "fhir"), [
    ("202101311307", "2021-01-31T13:07:00+07:00"),
    ("202012312359", "2020-12-31T23:59:00+07:00"),
])
def test_datetime_is_vietnam_time(text: str, fhir: str) -> None:
    assert values.datetime_from_xml(text) == fhir
    assert values.datetime_to_xml(fhir) == text


def test_datetime_in_another_zone_is_written_in_vietnam_time() -> None:
    assert values.datetime_to_xml("2021-01-31T06:07:00Z") == "202101311307"


@pytest.mark.parametrize("text", ["20210231", "2021013", "2021-01-31", "abcdefgh"])
def test_invalid_dates_raise(text: str) -> None:
    with pytest.raises(ValueError):
        values.date_from_xml(text)


@pytest.mark.parametrize(("text", "birth_date", "birth_time"), [
    ("198500000000", "1985", None),
    ("199005170000", "1990-05-17", None),
    ("201907021530", "2019-07-02", "2019-07-02T15:30:00+07:00"),
])
def test_birth_dates_keep_unknown_parts(text: str, birth_date: str,
                                        birth_time: str | None) -> None:
    assert values.birth_from_xml(text) == (birth_date, birth_time)
    assert values.birth_to_xml(birth_date, birth_time) == text


@pytest.mark.parametrize(("text", "number", "back"), [
    ("20", 20, "20"), ("62.5", 62.5, "62.5"), ("1.500", 1.5, "1.5"), ("-3", -3, "-3"),
])
def test_numbers_keep_their_value(text: str, number: float, back: str) -> None:
    assert values.number_from_xml(text) == number
    assert values.number_to_xml(values.number_from_xml(text)) == back


@pytest.mark.parametrize("text", ["1,5", "1e3", "", "12a"])
def test_non_numbers_raise(text: str) -> None:
    with pytest.raises(ValueError):
        values.number_from_xml(text)


def test_lists_split_on_semicolons() -> None:
    assert values.split_list(" J45.9 ; I10;;") == ["J45.9", "I10"]


@pytest.mark.parametrize("text", [
    "202102301200",  # 30 February
    "202101312400", "202101311260",  # no hour 24, no minute 60
    "000001011200",  # no year 0
    "2021013112", "20210131120a", "2021-01-31T1",
])
def test_invalid_times_raise(text: str) -> None:
    with pytest.raises(ValueError):
        values.datetime_from_xml(text)


# Python's ``\d`` and ``int()`` take every script's decimal digits: XML 130's are 0-9 only.
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULL_WIDTH])
def test_digits_of_other_scripts_are_not_dates_times_or_numbers(digits: dict[int, int]) -> None:
    with pytest.raises(ValueError):
        values.date_from_xml("20210131".translate(digits))
    with pytest.raises(ValueError):
        values.datetime_from_xml("202101311307".translate(digits))
    with pytest.raises(ValueError):
        values.birth_from_xml("198501010000".translate(digits))
    with pytest.raises(ValueError):
        values.number_from_xml("62.5".translate(digits))


@pytest.mark.parametrize("text", ["20210131\n", "20210131 "])
def test_a_date_with_anything_after_it_raises(text: str) -> None:
    with pytest.raises(ValueError):
        values.date_from_xml(text)

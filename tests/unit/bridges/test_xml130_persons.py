"""The kind of person identifier a SO_CCCD value is (CCCD, CMND, passport or VNeID code)."""

from __future__ import annotations

from fhir_server.bridges.xml130.persons import person_identifier

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _type(value: str, nationality: str = "000") -> str | None:
    kind = person_identifier(value, nationality).get("type")
    return None if kind is None else str(kind["coding"][0]["code"])


def test_ascii_digits_make_a_cccd_a_cmnd_or_a_passport() -> None:
    assert _type("001085012345") == "NI"
    assert _type("012345678") == "CZ"
    assert _type("B1234567") == "PPN"


def test_digits_of_another_script_make_no_cccd_cmnd_or_passport() -> None:
    assert _type("001085012345".translate(FULL_WIDTH)) is None
    assert _type("012345678".translate(FULL_WIDTH)) is None
    assert _type("B" + "1234567".translate(FULL_WIDTH)) is None

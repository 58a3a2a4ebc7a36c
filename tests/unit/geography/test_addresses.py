"""Addresses read at their date: checks by date and the current units (geography.addresses)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhir_server.geography.addresses import (
    COMMUNE,
    CURRENT,
    DISTRICT,
    PROVINCE,
    address_context,
    addresses_of,
    annotate,
    check,
    reading_date,
    today,
    visit_date,
)

Json = dict[str, Any]


def address(province: str | None = None, district: str | None = None,
            commune: str | None = None, **extra: Any) -> Json:  # fmt: skip
    codes = [(PROVINCE, province), (DISTRICT, district), (COMMUNE, commune)]
    out: Json = {"extension": [{"url": u, "valueCode": v} for u, v in codes if v], **extra}
    return out


def patient(*addresses: Json, **extra: Any) -> Json:
    return {"resourceType": "Patient", "address": list(addresses), **extra}


def ended(day: str) -> Json:
    return {"period": {"start": "2019-01-01", "end": day}}


HAGIANG = ("02", "026", "00715")  # Tỉnh Hà Giang, Huyện Đồng Văn, Xã Lũng Cú


def ids(problems: list[Any]) -> list[tuple[str, str, str]]:
    return [(p.severity, p.message_id, p.where) for p in problems]


def test_old_units_are_valid_on_the_last_day_before_the_reform() -> None:
    old = address(*HAGIANG, **ended("2025-06-30"))
    old["district"] = "Huyện Đồng Văn"
    assert check(old, patient(old)) == []


def test_old_units_on_the_first_day_after_are_refused_naming_unit_and_date() -> None:
    new = address(*HAGIANG, **ended("2025-07-01"))
    new["district"] = "Huyện Đồng Văn"
    problems = check(new, patient(new))
    assert ids(problems) == [
        ("error", "MSG_ADDRESS_DISTRICT", "district"),
        ("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE", "extension[0].value"),
        ("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE", "extension[1].value"),
        ("error", "MSG_ADDRESS_UNIT_MISMATCH", "extension[2].value"),
    ]
    province = problems[1].text
    assert "'02' (Tỉnh Hà Giang)" in province and "2025-07-01" in province
    assert "'08' (Tỉnh Tuyên Quang)" in province
    assert "Huyện Đồng Văn" in problems[2].text and "abolished" in problems[2].text


def test_the_visit_date_decides_when_the_address_has_no_period() -> None:
    old = address(*HAGIANG)
    with address_context(visit=date(2024, 3, 5)):
        assert check(old, patient(old)) == []
    with address_context(visit=date(2026, 3, 5)):
        problems = check(old, patient(old))
    assert [p.message_id for p in problems] == ["MSG_ADDRESS_UNIT_NOT_IN_FORCE"] * 2 + [
        "MSG_ADDRESS_UNIT_MISMATCH"]
    assert "2026-03-05" in problems[0].text


def test_without_any_date_an_address_is_read_today() -> None:
    old = address(*HAGIANG)
    assert reading_date(old, patient(old)) == (today(), False)
    assert check(old, patient(old))[0].message_id == "MSG_ADDRESS_UNIT_NOT_IN_FORCE"
    assert reading_date(address(**ended("2024")), {}) == (date(2024, 12, 31), True)


def test_a_deceased_patients_address_is_read_at_the_death() -> None:
    old = address(*HAGIANG)
    assert check(old, patient(old, deceasedDateTime="2023-11-02T10:00:00+07:00")) == []


def test_a_record_of_2024_may_carry_todays_address() -> None:
    # 00691 is Phường Hà Giang 2 of Tuyên Quang (08) today, but was Phường Trần Phú of Hà
    # Giang (02) before: the address fits only today's list and is read in it.
    current = address("08", None, "00691")
    with address_context(visit=date(2024, 3, 5)):
        assert check(current, patient(current)) == []
        record = patient(current)
        annotate(record)
    assert all(e["url"] != CURRENT for e in record["address"][0]["extension"])


def test_an_unknown_commune_is_an_error_or_a_warning_as_configured() -> None:
    unknown = address("08", None, "99999")
    problems = check(unknown, patient(unknown))
    assert ids(problems) == [("error", "MSG_ADDRESS_UNIT_UNKNOWN", "extension[1].value")]
    assert "'99999'" in problems[0].text
    with address_context(unknown="warning"):
        assert ids(check(unknown, patient(unknown)))[0][0] == "warning"


def test_known_communes_pass_and_must_lie_in_the_province() -> None:
    good = address("19", None, "05443")
    assert check(good, patient(good)) == []
    wrong = address("08", None, "00004")
    problems = check(wrong, patient(wrong))
    assert ids(problems) == [("error", "MSG_ADDRESS_UNIT_MISMATCH", "extension[1].value")]
    assert "'00004' (Phường Ba Đình)" in problems[0].text and "'01'" in problems[0].text


def test_an_old_commune_must_lie_in_the_district_named() -> None:
    wrong = address("01", "002", "00001", **ended("2024-01-01"))  # Phúc Xá is in Ba Đình (001)
    assert ids(check(wrong, patient(wrong))) == [
        ("error", "MSG_ADDRESS_UNIT_MISMATCH", "extension[2].value")]


def test_a_commune_dissolved_by_the_reform_is_not_in_force_after_it() -> None:
    gone = address("01", None, "00001", **ended("2026-01-01"))  # Phường Phúc Xá
    problems = check(gone, patient(gone))
    assert ids(problems) == [("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE", "extension[1].value")]
    assert "Phường Phúc Xá" in problems[0].text and "'00097' (Phường Hồng Hà)" in problems[0].text


def test_foreign_addresses_are_not_checked() -> None:
    abroad = address("99", None, "99999", country="FR")
    assert check(abroad, patient(abroad)) == []


def test_old_addresses_get_todays_units() -> None:
    record = patient(address(*HAGIANG, **ended("2024-05-01")))
    annotate(record)
    current = record["address"][0]["extension"][-1]
    assert current == {"url": CURRENT, "extension": [
        {"url": "province", "valueCoding": {"system": "https://fhir.sskdt.vn/CodeSystem/province",
                                            "code": "08", "display": "Tỉnh Tuyên Quang"}},
        {"url": "commune", "valueCoding": {"system": "https://fhir.sskdt.vn/CodeSystem/commune",
                                           "code": "00715", "display": "Xã Lũng Cú"}},
        {"url": "readOn", "valueDate": "2024-05-01"},
    ]}


def test_a_split_commune_gets_candidates_and_split_but_no_commune() -> None:
    record = patient(address("01", "001", "00016", **ended("2024-05-01")))
    annotate(record)
    parts = record["address"][0]["extension"][-1]["extension"]
    assert [p["url"] for p in parts] == ["province", "candidate", "candidate", "split", "readOn"]
    assert [p["valueCoding"]["code"] for p in parts[1:3]] == ["00004", "00008"]
    assert parts[3]["valueBoolean"] is True


def test_the_server_owns_the_current_units_extension() -> None:
    sent = {"url": CURRENT, "extension": [{"url": "province", "valueCoding": {"code": "01"}}]}
    current = address("08", None, "00715")
    current["extension"].append(sent)
    lone = {"extension": [sent], "country": "VN"}
    record = patient(current, lone)
    annotate(record)
    assert [e["url"] for e in record["address"][0]["extension"]] == [PROVINCE, COMMUNE]
    assert "extension" not in record["address"][1]
    again = patient(address(*HAGIANG, **ended("2024-05-01")))
    annotate(again)
    annotate(again)
    assert [e["url"] for e in again["address"][0]["extension"]].count(CURRENT) == 1


def test_addresses_are_found_at_every_address_path_of_the_type() -> None:
    home, contact = address("01"), address("48")
    found = addresses_of({"resourceType": "Patient", "address": [home],
                          "contact": [{"address": contact}]})
    assert found == [home, contact]
    assert addresses_of({"resourceType": "Location", "address": home}) == [home]
    assert addresses_of({"resourceType": "Observation"}) == []


@pytest.mark.parametrize(("entries", "expected"), [
    ([], None),
    ([{"resource": {"resourceType": "Encounter", "period": {"start": "2024-03-05T08:00:00+07:00"}}},
      {"resource": {"resourceType": "Encounter", "period": {"end": "2023-01-02"}}}],
     date(2023, 1, 2)),
    ([{"resource": {"resourceType": "Patient"}}, "junk"], None),
])  # fmt: skip
def test_the_visit_date_of_a_bundle_is_its_earliest_encounter(
    entries: list[Any], expected: date | None
) -> None:
    assert visit_date({"resourceType": "Bundle", "entry": entries}) == expected

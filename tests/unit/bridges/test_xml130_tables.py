"""The mapping tables as data: every field of every standard is accounted for."""

from __future__ import annotations

import pytest

from fhir_server.bridges.xml130 import tables
from fhir_server.bridges.xml130.tables import STANDARDS, TableError, load_standard


@pytest.mark.parametrize("name", STANDARDS)
def test_every_field_of_every_table_is_mapped_or_unmapped_with_a_reason(name: str) -> None:
    standard = load_standard(name)
    for table in standard.tables.values():
        for rule in table.rules.values():
            assert rule.mapped or rule.unmapped, f"{name}/{table.name}.{rule.name}"
            assert rule.unmapped is None or " / " in rule.unmapped  # Vietnamese / English


@pytest.mark.parametrize("name", STANDARDS)
def test_financial_t_fields_are_unmapped(name: str) -> None:
    for table in load_standard(name).tables.values():
        for rule in table.rules.values():
            if rule.name.startswith("T_"):
                assert rule.unmapped, f"{table.name}.{rule.name}"


def test_standards_differ_as_data() -> None:
    s130, s4750, s3176 = (load_standard(n) for n in ("130", "4750", "3176"))
    assert "XML13" not in s130.tables and "XML13" in s4750.tables
    assert "NHOM_MAU" in s3176.tables["XML1"].rules and "NHOM_MAU" not in s4750.tables["XML1"].rules
    assert s130.tables["XML1"].facts["MA_LOAI_KCB"].kind == "number"
    assert s4750.tables["XML1"].facts["MA_LOAI_KCB"].kind == "string"
    assert s4750.tables["XML1"].facts["MA_DOITUONG_KCB"].size == 4
    doctor_130 = s130.tables["XML2"].rules["MA_BAC_SI"].targets[0].option("system")
    doctor_4750 = s4750.tables["XML2"].rules["MA_BAC_SI"].targets[0].option("system")
    assert doctor_130.endswith("health-id") and doctor_4750.endswith("practice-license")


def test_imported_and_skipped_tables() -> None:
    standard = load_standard("4750")
    assert set(standard.shapes()) == {"XML1", "XML2", "XML3", "XML4", "XML5", "XML7", "XML8",
                                      "XML11", "XML13", "XML14"}
    assert set(standard.skipped()) == {"CHECKIN", "XML6", "XML9", "XML10", "XML12", "XML15"}


def test_a_table_without_a_rule_for_a_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tables._json

    def fewer(*parts: str):  # type: ignore[no-untyped-def]
        data = real(*parts)
        if parts == ("tables", "4750", "XML5.json"):
            data = {**data, "fields": {k: v for k, v in data["fields"].items() if k != "HOI_CHAN"}}
        return data

    monkeypatch.setattr(tables, "_json", fewer)
    with pytest.raises(TableError, match="HOI_CHAN"):
        tables._table("4750", "XML5", tables._json("fields.json")["tables"]["XML5"]["4750"])


def test_unknown_standard_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        load_standard("4210")

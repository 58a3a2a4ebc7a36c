"""The facility list CSV: good rows kept, each malformed row reported with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.conformance.terminology import default_terminology
from fhir_server.facilities.csv_rows import read_facility_rows

HEADER = "code,name,level,province,commune,address\n"


def rows_of(tmp_path: Path, text: str) -> tuple[list, list]:  # type: ignore[type-arg]
    path = tmp_path / "facilities.csv"
    path.write_text(text, encoding="utf-8")
    return read_facility_rows(path, default_terminology())


def test_good_rows_are_read_with_their_line_numbers(tmp_path: Path) -> None:
    good, bad = rows_of(tmp_path, HEADER + "01001,Bệnh viện A,3,01,00004,Số 1 Tràng Thi\n"
                                           "79088,Trạm Y tế B,1,79,,\n")
    assert bad == []
    assert [(r.line, r.code, r.name, r.commune, r.address) for r in good] == [
        (2, "01001", "Bệnh viện A", "00004", "Số 1 Tràng Thi"), (3, "79088", "Trạm Y tế B", "", "")]


def test_columns_may_come_in_any_order_after_a_byte_order_mark(tmp_path: Path) -> None:
    good, bad = rows_of(tmp_path, "\ufeffname,province,level,code\nBệnh viện A,01,3,01001\n")
    assert bad == [] and good[0].code == "01001" and good[0].address == ""


@pytest.mark.parametrize(("row", "reason"), [
    ("0100,Bệnh viện A,3,01,,", "code '0100' is not five characters"),
    ("01-01,Bệnh viện A,3,01,,", "code '01-01' is not five characters"),
    ("01001,,3,01,,", "facility 01001 has no name"),
    ("01001,Bệnh viện A,5,01,,", "level '5' of 01001 is not 1, 2 or 3"),
    ("01001,Bệnh viện A,3,02,,", "province '02' of 01001 is not a province code of 2025"),
    ("01001,Bệnh viện A,3,01,123,", "commune '123' of 01001 is not five digits"),
    ("01001,Bệnh viện A,3", "province '' of 01001"),
])
def test_a_malformed_row_is_rejected_with_its_line_number(
    tmp_path: Path, row: str, reason: str,
) -> None:
    good, bad = rows_of(tmp_path, HEADER + "79088,Trạm Y tế B,1,79,,\n" + row + "\n"
                                           "79089,Trạm Y tế C,1,79,,\n")
    assert [r.code for r in good] == ["79088", "79089"]
    assert len(bad) == 1 and bad[0].line == 3 and reason in bad[0].reason
    assert bad[0].describe().startswith("line 3: ")


def test_a_code_given_twice_is_rejected_on_its_second_line(tmp_path: Path) -> None:
    good, bad = rows_of(tmp_path, HEADER + "01001,A,3,01,,\n01001,B,3,01,,\n")
    assert [r.name for r in good] == ["A"]
    assert bad[0].line == 3 and "already given on line 2" in bad[0].reason


def test_a_header_without_a_required_column_rejects_the_file(tmp_path: Path) -> None:
    good, bad = rows_of(tmp_path, "code,name,province\n01001,A,01\n")
    assert good == [] and bad[0].line == 1 and "level" in bad[0].reason

"""The checks of a visit's fields against their standard: sizes, numbers, unknown fields."""

from __future__ import annotations

import pytest

from fhir_server.bridges.xml130.checks import check_visit
from fhir_server.bridges.xml130.envelope import decode_envelope, encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import load_standard
from tests import builders as b

STANDARD = load_standard("4750")


def _issues(**changes: str) -> list[tuple[str, str, str]]:
    """The issues of a visit whose drug row has ``changes`` (a name the standard does not
    have is written after the standard's fields)."""
    table = STANDARD.tables["XML2"]
    assert table.shape is not None
    order = [*table.facts, *(name for name in changes if name not in table.facts)]
    drugs = encode_table(table.shape, [b.xml2(1, **changes)], order)
    data = encode_envelope(b.FACILITY, "20210204", [[("XML1", b.table_xml("XML1", [b.xml1()])),
                                                     ("XML2", drugs)]])
    hoso = decode_envelope(data, STANDARD.shapes(), STANDARD.skipped()).visits[0]
    _, _, issues = check_visit(STANDARD, hoso)
    return [(i.message_id, i.expression[0], i.severity) for i in issues]


@pytest.mark.parametrize("changes", [
    {"TEN_THUOC": "x" * 1024}, {"SO_LUONG": "1234567890"}, {"SO_LUONG": "-2.5"},
    {"SO_LUONG": ""}, {"MA_BAC_SI": "y" * 255},
])
def test_fields_within_their_size_and_type_pass(changes: dict[str, str]) -> None:
    assert _issues(**changes) == []


@pytest.mark.parametrize(("changes", "message_id", "where", "severity"), [
    ({"TEN_THUOC": "x" * 1025}, "MSG_XML130_TOO_LONG", "XML2[1].TEN_THUOC", "error"),
    ({"SO_LUONG": "12345678901"}, "MSG_XML130_TOO_LONG", "XML2[1].SO_LUONG", "error"),
    ({"SO_LUONG": "1,5"}, "MSG_XML130_NOT_NUMBER", "XML2[1].SO_LUONG", "error"),
    ({"SO_LUONG": "1e3"}, "MSG_XML130_NOT_NUMBER", "XML2[1].SO_LUONG", "error"),
    ({"GHI_CHU_LA": "?"}, "MSG_XML130_FIELD_UNKNOWN", "XML2[1].GHI_CHU_LA", "warning"),
])
def test_each_field_problem_is_reported_at_its_field(changes: dict[str, str], message_id: str,
                                                     where: str, severity: str) -> None:
    assert _issues(**changes) == [(message_id, where, severity)]

"""Decoding the XML 130 envelope: visits, tables, and what a malformed one answers."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from fhir_server.bridges.xml130.envelope import decode_envelope, encode_envelope
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.errors import BadRequest
from tests import builders as b

STANDARD = load_standard("4750")


def _decode(data: bytes):  # type: ignore[no-untyped-def]
    return decode_envelope(data, STANDARD.shapes(), STANDARD.skipped())


def _raw(*files: tuple[str, bytes]) -> bytes:
    return encode_envelope(b.FACILITY, "20210204", [list(files)])


def test_envelope_gives_facility_date_visits_and_records() -> None:
    envelope = _decode(b.envelope(b.visit(), b.visit(XML1=[b.xml1(MA_LK="X2")], XML2=[],
                                                     XML4=[])))
    assert (envelope.facility, envelope.created, len(envelope.visits)) == ("01001", "20210204", 2)
    first = envelope.visits[0]
    assert [f.kind for f in first.files] == ["XML1", "XML2", "XML4"]
    assert first.tables("XML2")[0].records[0]["LIEU_DUNG"] == "2 viên/lần * 2 lần/ngày * 5 ngày"
    assert first.problems == ()


def test_bad_base64_is_a_problem_of_its_visit() -> None:
    data = _raw(("XML1", b.table_xml("XML1", [b.xml1()]))).replace(b"<NOIDUNGFILE>",
                                                                   b"<NOIDUNGFILE>!!", 1)
    problems = _decode(data).visits[0].problems
    assert [(p.message_id, p.expression) for p in problems] == [
        ("MSG_XML130_BASE64", ("XML1.NOIDUNGFILE",))]


def test_loaihoso_that_disagrees_with_the_inner_root_is_refused() -> None:
    data = _raw(("XML3", b.table_xml("XML4", [b.xml4()])))
    problem = _decode(data).visits[0].problems[0]
    assert problem.message_id == "MSG_XML130_ROOT_MISMATCH"
    assert "CHITIEU_CHITIET_DICHVUCANLAMSANG" in problem.diagnostics
    assert " / " in problem.diagnostics


@pytest.mark.parametrize(("kind", "message_id"), [("XML99", "MSG_XML130_TABLE_UNKNOWN"),
                                                  ("XML6", "MSG_XML130_TABLE_NOT_IMPORTED")])
def test_tables_not_imported_are_reported_not_dropped(kind: str, message_id: str) -> None:
    data = _raw(("XML1", b.table_xml("XML1", [b.xml1()])), (kind, b"<X/>"))
    visit = _decode(data).visits[0]
    assert [f.kind for f in visit.files] == ["XML1"]
    assert [(p.message_id, p.severity) for p in visit.problems] == [(message_id, "warning")]


@pytest.mark.parametrize("data", [
    b"not xml at all",
    b"<OTHER><THONGTINHOSO/></OTHER>",
    b"<GIAMDINHHS><THONGTINHOSO><DANHSACHHOSO/></THONGTINHOSO></GIAMDINHHS>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><GIAMDINHHS>&a;</GIAMDINHHS>',
])
def test_malformed_envelope_is_a_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        _decode(data)
    assert caught.value.message_id == "MSG_XML130_ENVELOPE"


def test_inner_table_that_is_not_xml_is_a_problem() -> None:
    data = _raw(("XML1", b"<TONG_HOP><MA_LK>"))
    assert _decode(data).visits[0].problems[0].message_id == "MSG_XML130_INNER_XML"


def test_inner_table_that_is_not_utf8_is_a_problem() -> None:
    latin = '<?xml version="1.0" encoding="latin-1"?><TONG_HOP><HO_TEN>Lê</HO_TEN></TONG_HOP>'
    data = _raw(("XML1", latin.encode("latin-1")))
    assert _decode(data).visits[0].problems[0].message_id == "MSG_XML130_INNER_XML"


def test_content_is_kept_as_decoded_bytes() -> None:
    table = b.table_xml("XML1", [b.xml1()])
    decoded = _decode(_raw(("XML1", table))).visits[0].files[0]
    assert decoded.content == table
    assert base64.b64encode(decoded.content)


def test_envelope_says_whether_it_has_a_signature_holder() -> None:
    """Only an envelope with ``CHUKYDONVI`` (even an empty one) has its signature checked."""
    data = b.envelope(b.visit())
    assert _decode(data).signed is False
    root = etree.fromstring(data)
    etree.SubElement(root, "CHUKYDONVI")
    assert _decode(etree.tostring(root)).signed is True

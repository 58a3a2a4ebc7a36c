"""The generated PDF: a well-formed one-page PDF whose cross-reference table is exact."""

from __future__ import annotations

import re

import pytest

from fhir_server.synthetic.documents import visit_pdf


def test_pdf_has_header_trailer_and_eof_marker() -> None:
    pdf = visit_pdf(["GIAY RA VIEN", "MA_LK: 79001202401010000001"])
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n")
    assert b"/Root 1 0 R" in pdf and len(pdf) < 1_000


def test_pdf_cross_reference_offsets_point_at_their_objects() -> None:
    pdf = visit_pdf(["TOM TAT KHAM BENH"])
    startxref = int(re.search(rb"startxref\n(\d+)\n", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[startxref:].startswith(b"xref\n")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", pdf)]
    assert len(offsets) == 5
    for number, offset in enumerate(offsets, start=1):
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number)


def test_pdf_stream_length_matches_its_content() -> None:
    pdf = visit_pdf(["A", "B"])
    match = re.search(rb"<< /Length (\d+) >>\nstream\n(.*?)\nendstream", pdf, re.S)
    assert match is not None and int(match.group(1)) == len(match.group(2))


@pytest.mark.parametrize(
    ("line", "shown"), [("a(b)c", rb"(a\(b\)c)"), ("back\\slash", rb"(back\\slash)")]
)
def test_pdf_text_escapes_parentheses_and_backslashes(line: str, shown: bytes) -> None:
    assert shown + b" Tj" in visit_pdf([line])

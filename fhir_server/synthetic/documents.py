"""The visit's document: a small generated PDF wrapped in a DocumentReference.

The PDF is one page with ASCII text (the standard Helvetica font has no Vietnamese glyphs) and a
correct cross-reference table. Attachment.hash is the base64 SHA-1 of the data, as FHIR R4
requires (https://hl7.org/fhir/R4/datatypes.html#Attachment).
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

from fhir_server.synthetic.identifiers import random_urn
from fhir_server.synthetic.systems import LOINC_SYSTEM
from fhir_server.synthetic.transaction import conditional_update
from fhir_server.synthetic.visit import Visit

__all__ = ["document_entry", "visit_pdf"]

Resource = dict[str, Any]

# (LOINC code, LOINC display, Vietnamese title, ASCII heading printed in the PDF)
_DISCHARGE = ("18842-5", "Discharge summary", "Giấy ra viện", "GIAY RA VIEN")
_SUMMARY = ("34133-9", "Summary of episode note", "Tóm tắt khám bệnh", "TOM TAT KHAM BENH")


def _pdf_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def visit_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF 1.4 showing the given ASCII lines."""
    shown = " 0 -18 Td ".join(f"({_pdf_text(line)}) Tj" for line in lines)
    stream = f"BT /F1 12 Tf 36 120 Td {shown} ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 160] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _attachment(visit: Visit, title: str, heading: str) -> Resource:
    lines = [
        heading,
        f"MA_LK: {visit.ma_lk}",
        f"Co so KBCB: {visit.facility.code}",
        f"Tu {visit.start:%Y-%m-%d %H:%M} den {visit.end:%Y-%m-%d %H:%M}",
    ]
    pdf = visit_pdf(lines)
    return {
        "contentType": "application/pdf",
        "language": "vi",
        "data": base64.b64encode(pdf).decode("ascii"),
        "size": len(pdf),
        "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii"),
        "title": title,
        "creation": visit.end.isoformat(),
    }


def document_entry(rng: random.Random, visit: Visit) -> Resource:
    """The discharge paper (inpatient) or visit summary (outpatient) of the visit."""
    code, display, title, heading = _DISCHARGE if visit.visit_type.inpatient else _SUMMARY
    organization = {"reference": visit.facility.urn}
    period = {"start": visit.start.isoformat(), "end": visit.end.isoformat()}
    coding = {"system": LOINC_SYSTEM, "code": code, "display": display}
    body = {
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [coding], "text": title},
        "subject": {"reference": visit.patient.urn},
        "date": visit.end.isoformat(),
        "author": [organization],
        "custodian": organization,
        "description": f"{title} {visit.ma_lk}",
        "content": [{"attachment": _attachment(visit, title, heading)}],
        "context": {"encounter": [{"reference": visit.encounter_urn}], "period": period},
    }
    key = visit.key("DocumentReference", 1)
    return conditional_update(random_urn(rng), "DocumentReference", key, body)

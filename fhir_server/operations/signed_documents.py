"""The part of the health book that says which records were signed, by whom, and whether the
signature verified: the server's proofs (``signatures.proof``) among the citizen's records,
as a section of ``$summary`` and ``$document`` and so of their HTML page.

Each row: what was signed (the visit, the paper, the document), the signer (the certificate's
name), when it was signed, the result in Vietnamese, and when the server checked it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.operations.narrative import Lookup, Markup, concept_text, table, vn_date
from fhir_server.signatures.proof import is_proof
from fhir_server.signatures.verification import Status, Verification, from_extension

__all__ = ["SECTION_SYSTEM", "common_name", "is_signature_record", "signature_table"]

SECTION_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/health-book-section"
RESULTS = {
    Status.VERIFIED: "Hợp lệ: chữ ký số đã được xác minh",
    Status.INVALID: "Không hợp lệ: nội dung đã thay đổi sau khi ký",
    Status.MALFORMED: "Không đọc được chữ ký số",
    Status.UNSUPPORTED: "Thuật toán ký không được chấp nhận",
    Status.UNTRUSTED: "Chứng thư số không thuộc danh sách tin cậy",
    Status.EXPIRED: "Chứng thư số đã hết hạn khi ký",
    Status.NOT_YET_VALID: "Chứng thư số chưa có hiệu lực khi ký",
    Status.REVOKED: "Chứng thư số đã bị thu hồi",
    Status.UNVERIFIABLE: "Không có nội dung đã ký để xác minh",
}
_KINDS = {"Encounter": "Lượt khám", "DocumentReference": "Giấy tờ", "Bundle": "Tài liệu",
          "Composition": "Tài liệu", "Binary": "Tệp", "Provenance": "Hồ sơ XML 130"}


def common_name(subject: str) -> str:
    """The ``CN`` of a certificate subject (RFC 4514 text), else the whole subject."""
    for part in subject.split(","):
        name, _, value = part.partition("=")
        if name.strip().upper() == "CN":
            return value.strip()
    return subject


def _signed(proof: dict[str, Any], lookup: Lookup) -> str:
    """What a proof is about, as the book reads it: the visit, else the paper, the
    document..."""
    keys = [str(t.get("reference", "")) for t in proof.get("target") or ()]
    ranked = sorted((k for k in keys if k.partition("/")[0] in _KINDS),
                    key=lambda k: list(_KINDS).index(k.partition("/")[0]))
    for key in ranked:
        kind = key.partition("/")[0]
        found = lookup.get(key) or {}
        if kind == "Encounter":
            start = vn_date((found.get("period") or {}).get("start"), with_time=False)
            where = lookup.name(found.get("serviceProvider"))
            return " — ".join(p for p in ("Lượt khám", start, where) if p)
        label = concept_text(found.get("type")) or found.get("title") or ""
        return " — ".join(p for p in (_KINDS.get(kind, kind), str(label)) if p)
    return "Hồ sơ"


def _verifications(proof: dict[str, Any]) -> list[Verification]:
    found = (from_extension(s) for s in proof.get("signature") or () if isinstance(s, dict))
    return [v for v in found if v is not None]


def signature_table(chosen: Sequence[dict[str, Any]], lookup: Lookup) -> Markup:
    """The signatures of the book's records, newest first."""
    rows = [[_signed(p, lookup), common_name(v.signer) or "Không rõ",
             vn_date(v.signing_time), RESULTS[v.status], vn_date(v.verified_at)]
            for p in chosen for v in _verifications(p)]  # fmt: skip
    return table(["Hồ sơ, tài liệu", "Người ký", "Thời điểm ký", "Kết quả kiểm tra",
                  "Kiểm tra lúc"], rows)



def is_signature_record(resource: dict[str, Any]) -> bool:
    """Whether a resource is the server's record of a signature it checked."""
    return resource.get("resourceType") == "Provenance" and is_proof(resource)

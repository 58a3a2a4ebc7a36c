"""The result of checking one signature, and how R4 data records it.

A ``Verification`` says what was checked (the kind of signature, its algorithm, the
canonicalization), who signed (the certificate's subject, issuer, serial number, the
certificate itself), when (the signing time the signature claims) and what came out
(``Status``, with a stable message id and a sentence). It is recorded on the ``Signature``
element it is about as the extension ``signature-verification`` (complex: one part per field
below), which belongs to the server: only Provenances the server writes carry it
(``proof.PROOF_SOURCE``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "EXTENSION",
    "Status",
    "Verification",
    "from_extension",
    "to_extension",
]

EXTENSION = "https://fhir.sskdt.vn/StructureDefinition/signature-verification"


class Status(StrEnum):
    """How a signature came out (the ``result`` part of the extension)."""

    VERIFIED = "verified"
    INVALID = "invalid"  # the signature does not match the content
    MALFORMED = "malformed"  # not a signature this server can read
    UNSUPPORTED = "unsupported"  # an algorithm or a format this server does not accept
    UNTRUSTED = "untrusted"  # no path to a trusted root
    EXPIRED = "expired"  # a certificate had expired at the signing time
    NOT_YET_VALID = "not-yet-valid"  # a certificate was not yet valid at the signing time
    REVOKED = "revoked"  # a certificate was revoked before the signature was received
    UNVERIFIABLE = "unverifiable"  # the signed content is not at hand


MESSAGE_IDS = {
    Status.VERIFIED: "MSG_SIGNATURE_VERIFIED",
    Status.INVALID: "MSG_SIGNATURE_INVALID",
    Status.MALFORMED: "MSG_SIGNATURE_MALFORMED",
    Status.UNSUPPORTED: "MSG_SIGNATURE_UNSUPPORTED",
    Status.UNTRUSTED: "MSG_SIGNATURE_UNTRUSTED",
    Status.EXPIRED: "MSG_SIGNATURE_CERT_EXPIRED",
    Status.NOT_YET_VALID: "MSG_SIGNATURE_CERT_NOT_YET_VALID",
    Status.REVOKED: "MSG_SIGNATURE_CERT_REVOKED",
    Status.UNVERIFIABLE: "MSG_SIGNATURE_CONTENT_ABSENT",
}


@dataclass(frozen=True)
class Verification:
    """One signature checked.

    ``kind`` is ``jws``, ``xmldsig`` or ``pdf``; ``signing_time`` the time the signature
    claims (ISO 8601), else the one recorded beside it; ``verified_at`` when the server
    checked it first (the proof that the content existed then: revocation is judged at that
    moment); ``certificate`` the signer's certificate (DER); ``anchor`` the trusted root's
    subject.
    """

    status: Status
    detail: str
    kind: str
    algorithm: str = ""
    canonicalization: str = ""
    signer: str = ""
    issuer: str = ""
    serial: str = ""
    certificate: bytes = b""
    anchor: str = ""
    signing_time: str = ""
    verified_at: str = ""

    @property
    def verified(self) -> bool:
        """Whether the signature verified and its certificate is trusted."""
        return self.status is Status.VERIFIED

    @property
    def message_id(self) -> str:
        """The stable message id of the result."""
        return MESSAGE_IDS[self.status]

    def failed(self, status: Status, detail: str) -> Verification:
        """This verification with another result."""
        return replace(self, status=status, detail=detail)


_PARTS: tuple[tuple[str, str, str], ...] = (
    ("result", "valueCode", "status"),
    ("messageId", "valueString", "message_id"),
    ("detail", "valueString", "detail"),
    ("kind", "valueCode", "kind"),
    ("algorithm", "valueString", "algorithm"),
    ("canonicalization", "valueUri", "canonicalization"),
    ("signer", "valueString", "signer"),
    ("issuer", "valueString", "issuer"),
    ("serialNumber", "valueString", "serial"),
    ("trustAnchor", "valueString", "anchor"),
    ("signingTime", "valueDateTime", "signing_time"),
    ("verifiedAt", "valueInstant", "verified_at"),
)


def to_extension(verification: Verification) -> dict[str, Any]:
    """The ``signature-verification`` extension recording ``verification``."""
    parts = [{"url": name, kind: str(getattr(verification, field))}
             for name, kind, field in _PARTS if getattr(verification, field)]
    if verification.certificate:
        parts.append({"url": "certificate",
                      "valueBase64Binary": base64.b64encode(verification.certificate).decode()})
    return {"url": EXTENSION, "extension": parts}


def from_extension(element: dict[str, Any]) -> Verification | None:
    """The verification recorded on a ``Signature`` element, or None when it has none."""
    found = next((e for e in element.get("extension") or () if isinstance(e, dict)
                  and e.get("url") == EXTENSION), None)  # fmt: skip
    if found is None:
        return None
    values = {p.get("url"): next((v for k, v in p.items() if k.startswith("value")), "")
              for p in found.get("extension") or () if isinstance(p, dict)}  # fmt: skip
    fields = {field: str(values.get(name, "")) for name, _, field in _PARTS
              if field not in ("status", "message_id")}  # fmt: skip
    try:
        status = Status(str(values.get("result")))
        certificate = base64.b64decode(str(values.get("certificate", "")))
    except ValueError:
        return None
    return Verification(status=status, certificate=certificate, **fields)

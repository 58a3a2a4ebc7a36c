"""Signatures inside a PDF (the signed discharge paper): each signature dictionary's CMS
signature over its byte range, read and checked by pyHanko.

For each embedded signature: the digest of the bytes it covers and the CMS signature over it
(pyHanko's integrity check), what it covers (the whole file; or its revision, followed only by
changes pyHanko's difference analysis allows, such as a later signature), and its signer's
certificate, with the certificates the CMS carries, judged by the trust list at the signing
time the signature reports (else at receipt). Not covered: document timestamps and
signature timestamp tokens are not used as proof of time, the revocation data a PDF embeds
(LTV, the DSS) is not read, and encrypted PDFs are refused as malformed.
"""

from __future__ import annotations

import io
import warnings
from datetime import datetime

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():  # pyHanko imports DSA, which cryptography deprecates
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY, ModificationLevel
    from pyhanko.sign.validation.generic_cms import validate_sig_integrity
    from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
    from pyhanko.sign.validation.status import SignatureCoverageLevel

from fhir_server.signatures.jws import certificate_facts, judged
from fhir_server.signatures.trust import TrustList
from fhir_server.signatures.verification import Status, Verification

__all__ = ["PDF", "is_pdf", "is_signed_pdf", "verify_pdf"]

PDF = "application/pdf"
_ALLOWED_CHANGES = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES,
                    ModificationLevel.FORM_FILLING)


def is_pdf(data: bytes) -> bool:
    """Whether ``data`` starts like a PDF file."""
    return data[:1024].lstrip().startswith(b"%PDF-")


def is_signed_pdf(data: bytes) -> bool:
    """Whether ``data`` is a PDF that holds, or held, a signature: a signature dictionary's
    ``/ByteRange`` or a ``/Sig`` name. A signature dictionary is always in the clear (the
    signed byte ranges must leave out its own ``/Contents``, so it is never compressed into an
    object stream). An unsigned PDF costs this search only."""
    return is_pdf(data) and (b"/ByteRange" in data or b"/Sig" in data)


def _covered(signature: EmbeddedPdfSignature) -> str | None:
    """Why the signature does not cover what it must (None when it does)."""
    coverage = signature.evaluate_signature_coverage()
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        return None
    if coverage < SignatureCoverageLevel.ENTIRE_REVISION:
        return "the signature covers only part of its revision of the file"
    changes = signature.evaluate_modifications(DEFAULT_DIFF_POLICY)
    level = getattr(changes, "modification_level", None)
    if level in _ALLOWED_CHANGES:
        return None
    return "the file was changed after it was signed"


def _checked(signature: EmbeddedPdfSignature, received: datetime) -> tuple[Verification,
                                                                           list[x509.Certificate]]:
    certificates = [x509.load_der_x509_certificate(c.dump())
                    for c in [signature.signer_cert, *signature.other_embedded_certs]]  # fmt: skip
    algorithm = f"{signature.md_algorithm}/" \
        f"{signature.signer_info['signature_algorithm']['algorithm'].native}"
    signed_at = signature.self_reported_timestamp or received
    result = Verification(Status.VERIFIED, "", "pdf", algorithm, signing_time=signed_at.isoformat(),
                          verified_at=received.isoformat(), **certificate_facts(certificates[0]))
    intact, valid = validate_sig_integrity(signature.signer_info, signature.signer_cert,
                                           "data", signature.compute_digest())
    if not (intact and valid):
        return result.failed(Status.INVALID, "the PDF signature does not match the file"), []
    problem = _covered(signature)
    if problem is not None:
        return result.failed(Status.INVALID, problem), []
    return result, certificates


def verify_pdf(data: bytes, trust: TrustList, received: datetime) -> list[Verification]:
    """Check every signature of the PDF ``data``; an empty list for a PDF without any."""
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = list(reader.embedded_signatures)
    except Exception as exc:  # hostile bytes in a third-party parser: never a 500
        return [Verification(Status.MALFORMED, f"the PDF cannot be read: {exc!r}", "pdf",
                             verified_at=received.isoformat())]
    if not signatures and b"/ByteRange" in data:
        return [Verification(Status.MALFORMED, "the PDF has a signature dictionary that cannot "
                             "be read", "pdf", verified_at=received.isoformat())]
    found = []
    for signature in signatures:
        try:
            result, chain = _checked(signature, received)
        except Exception as exc:  # as above
            found.append(Verification(Status.MALFORMED, f"the PDF signature cannot be read: "
                                      f"{exc!r}", "pdf", verified_at=received.isoformat()))
            continue
        found.append(judged(result, trust, chain, datetime.fromisoformat(result.signing_time),
                            received) if chain else result)
    return found

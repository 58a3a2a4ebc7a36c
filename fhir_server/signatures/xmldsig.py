"""The facility's XML signature on an XML 130 envelope (``CHUKYDONVI``): an enveloped W3C XML
signature over the whole ``GIAMDINHHS`` file.

``signxml`` checks the signature over the bytes as received (it parses them itself, applies the
enveloped-signature transform and the canonicalization the signature names, and compares the
digest and the signature value); the signer's certificate is the first ``X509Certificate`` of
its ``KeyInfo``, judged by the trust list like any other. The signing time is XAdES'
``SigningTime`` where the signature has one; otherwise the certificate must be valid when the
server receives the file (a ``SigningTime`` counts only inside the XAdES
``SignedProperties`` the signature covers). Only signatures that cover the whole document
(``Reference URI=""``) and the SHA-2 (and SHA-3) family of RSA and ECDSA algorithms are
accepted: SHA-1, DSA and HMAC are refused.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from datetime import datetime

from cryptography import x509
from lxml import etree
from signxml.algorithms import SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from fhir_server.signatures.jws import SignatureError, certificate_facts, judged, parse_instant
from fhir_server.signatures.trust import TrustList, load_certificates
from fhir_server.signatures.verification import Status, Verification

__all__ = ["DSIG", "XML_SIGNATURE", "signature_element", "verify_envelope"]

DSIG = "http://www.w3.org/2000/09/xmldsig#"
XML_SIGNATURE = "application/signature+xml"
_NS = {"ds": DSIG}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          remove_comments=False)
_ACCEPTED = SignatureConfiguration(
    expect_references=True,  # the document, and XAdES' signed properties when there are
    signature_methods=frozenset(m for m in SignatureMethod if not any(
        weak in m.value for weak in ("sha1", "hmac", "#dsa-"))),
)


def _holder(data: bytes) -> etree._Element | None:
    """The envelope's ``CHUKYDONVI`` when it holds anything; None for an unsigned file (or
    one that is not XML: its own checks report that)."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        return None
    holder = root.find("CHUKYDONVI")
    if holder is None or (len(holder) == 0 and not (holder.text or "").strip()):
        return None
    return holder


def signature_element(data: bytes) -> etree._Element | None:
    """The ``ds:Signature`` in the envelope's ``CHUKYDONVI``, None when it has none."""
    holder = _holder(data)
    return None if holder is None else holder.find("ds:Signature", _NS)


def _certificates(signature: etree._Element) -> list[x509.Certificate]:
    texts = [t.text or "" for t in signature.iterfind(".//ds:X509Certificate", _NS)]
    if not texts:
        raise SignatureError(Status.MALFORMED, "the XML signature carries no certificate")
    try:
        return [load_certificates(base64.b64decode("".join(t.split())))[0] for t in texts]
    except (binascii.Error, ValueError):
        raise SignatureError(Status.MALFORMED, "an X509Certificate of the XML signature is "
                             "not a certificate") from None


def _signing_time(signed: list[etree._Element], received: datetime) -> datetime:
    """XAdES' ``SigningTime`` in the signed properties, else the moment of receipt."""
    for element in signed:
        found = element.find(".//{*}SigningTime")
        if found is not None and (found.text or "").strip():
            return parse_instant((found.text or "").strip())
    return received


def _check(data: bytes, signer: x509.Certificate) -> list[etree._Element]:
    """What the signature covers (the document first); raises ``SignatureError``."""
    try:
        # The certificate's dates are the trust list's to judge (at the signing time):
        # signxml is asked at a moment the certificate is valid.
        config = replace(_ACCEPTED, verification_time=signer.not_valid_before_utc)
        result = XMLVerifier().verify(data, x509_cert=signer, expect_config=config,
                                      ignore_ambiguous_key_info=True)
    except (InvalidDigest, InvalidSignature) as exc:
        raise SignatureError(Status.INVALID, f"the XML signature does not match the file: "
                             f"{exc}") from None
    except (SignXMLException, ValueError, etree.LxmlError) as exc:
        status = Status.UNSUPPORTED if "not allowed" in str(exc).lower() else Status.MALFORMED
        raise SignatureError(status, f"the XML signature cannot be checked: {exc}") from None
    signed = [r.signed_xml for r in (result if isinstance(result, list) else [result])
              if r.signed_xml is not None]  # fmt: skip
    if not any(element.tag == "GIAMDINHHS" for element in signed):
        raise SignatureError(Status.INVALID, "the XML signature does not cover the whole file")
    return signed


def verify_envelope(data: bytes, trust: TrustList, received: datetime) -> Verification | None:
    """Check the signature in ``CHUKYDONVI`` of the envelope ``data`` (exactly as received);
    None when the file carries none."""
    holder = _holder(data)
    if holder is None:
        return None
    signature = holder.find("ds:Signature", _NS)
    if signature is None:
        return Verification(Status.MALFORMED, "CHUKYDONVI holds no XML signature (ds:Signature)",
                            "xmldsig", verified_at=received.isoformat())
    method = signature.find("ds:SignedInfo/ds:SignatureMethod", _NS)
    c14n = signature.find("ds:SignedInfo/ds:CanonicalizationMethod", _NS)
    result = Verification(Status.VERIFIED, "", "xmldsig",
                          "" if method is None else str(method.get("Algorithm", "")),
                          "" if c14n is None else str(c14n.get("Algorithm", "")),
                          verified_at=received.isoformat())
    try:
        chain = _certificates(signature)
        result = replace(result, **certificate_facts(chain[0]))
        signed_at = _signing_time(_check(data, chain[0]), received)
        result = replace(result, signing_time=signed_at.isoformat())
    except SignatureError as exc:
        return result.failed(exc.status, exc.detail)
    return judged(result, trust, chain, signed_at, received)

"""Unit tests of the signature checks: canonical forms, JWS, the trust list (chains, dates,
CRLs), the XML 130 envelope and PDFs; and the property that changing any single byte of what a
signature covers is detected."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_server.decimals import loads
from fhir_server.signatures.canonical import DEFAULT_BUNDLE_METHOD, JSON, canonical_json, method_of
from fhir_server.signatures.jws import sign_jws, verify_jws
from fhir_server.signatures.pdf import verify_pdf
from fhir_server.signatures.trust import TrustList, load_trust_list
from fhir_server.signatures.verification import Status, from_extension, to_extension
from fhir_server.signatures.xmldsig import verify_envelope
from tests import builders as b
from tests import pki as k

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> TrustList:
    return load_trust_list(k.pki().trust_list(tmp_path_factory.mktemp("trust")))


# -- canonical JSON ----------------------------------------------------------------------------


def test_document_canonicalization_leaves_out_id_meta_and_the_signature() -> None:
    bundle = loads(b'{"resourceType":"Bundle","id":"x","meta":{"versionId":"3"},'
                   b'"type":"document","signature":{"data":"AA=="},"timestamp":"2025",'
                   b'"entry":[{"resource":{"resourceType":"Observation","valueDecimal":1.50,'
                   b'"text":{"div":"\xc3\xa1"}}}]}')
    assert canonical_json(bundle, DEFAULT_BUNDLE_METHOD, omit="signature") == (
        '{"entry":[{"resource":{"resourceType":"Observation","text":{"div":"á"},'
        '"valueDecimal":1.50}}],"resourceType":"Bundle","timestamp":"2025","type":"document"}'
    ).encode()


@pytest.mark.parametrize("method, kept", [
    (JSON, {"id", "meta", "text", "status"}), (JSON + "#data", {"id", "meta", "status"}),
    (JSON + "#static", {"id", "status"}), (JSON + "#narrative", {"id", "text"}),
])
def test_canonicalization_methods_of_r4(method: str, kept: set[str]) -> None:
    resource = {"resourceType": "Observation", "id": "o", "meta": {"versionId": "1"},
                "text": {"status": "generated"}, "status": "final"}
    assert set(loads(canonical_json(resource, method))) - {"resourceType"} == kept


def test_target_format_names_the_canonicalization() -> None:
    assert method_of(f"application/fhir+json;canonicalization={JSON}#static", JSON) == \
        JSON + "#static"
    assert method_of("application/fhir+json", DEFAULT_BUNDLE_METHOD) == DEFAULT_BUNDLE_METHOD
    assert method_of("application/fhir+json;canonicalization=urn:other", JSON) is None


# -- JWS ----------------------------------------------------------------------------------------


CONTENT = k.canonical({"resourceType": "Bundle", "type": "transaction",
                       "entry": [{"resource": {"resourceType": "Patient", "name":
                                               [{"text": "Nguyễn Văn An"}]}}]})


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("algorithm", [None, "PS256", "PS512", "RS384"])
def test_jws_by_pyjwt_verifies(trust: TrustList, kind: str, algorithm: str | None) -> None:
    if kind == "ec" and algorithm is not None:
        algorithm = "ES256"
    signer = k.pki().signer(kind=kind)
    signature = k.signature(k.jws(CONTENT, signer, algorithm=algorithm))
    result = verify_jws(signature, CONTENT, trust, NOW)
    assert result.status is Status.VERIFIED, result.detail
    assert result.anchor.startswith("CN=Test Root RSA")
    assert from_extension({"extension": [to_extension(result)]}) == result


def test_jws_made_by_the_server_verifies(trust: TrustList) -> None:
    signer = k.pki().signer(kind="ec", under="ec-root")
    data = sign_jws(CONTENT, signer.key, signer.chain, NOW)
    assert verify_jws({"data": data}, CONTENT, trust, NOW).status is Status.VERIFIED


def test_signing_time_after_receipt_is_refused(trust: TrustList) -> None:
    signer = k.pki().signer()
    signature = k.signature(k.jws(CONTENT, signer, signed_at=NOW + dt.timedelta(hours=2)))
    assert verify_jws(signature, CONTENT, trust, NOW).status is Status.INVALID


def test_unknown_critical_header_is_refused(trust: TrustList) -> None:
    head = base64.urlsafe_b64encode(b'{"alg":"RS256","crit":["exp"]}').rstrip(b"=").decode()
    data = base64.b64encode(f"{head}..AAAA".encode()).decode()
    assert verify_jws({"data": data}, CONTENT, trust, NOW).status is Status.UNSUPPORTED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255),
       attached=st.booleans())
def test_changing_any_single_byte_of_the_signed_json_is_detected(
        position: int, value: int, attached: bool) -> None:
    signer = _signer()
    signature = k.signature(k.jws(CONTENT, signer, attached=attached))
    changed = bytearray(CONTENT)
    position %= len(changed)
    if changed[position] == value:
        value ^= 0x01
    changed[position] = value
    result = verify_jws(signature, bytes(changed), _trust(), NOW)
    assert result.status is Status.INVALID


_CACHE: dict[str, object] = {}


def _signer() -> k.Signer:
    if "signer" not in _CACHE:
        _CACHE["signer"] = k.pki().signer()
    signer = _CACHE["signer"]
    assert isinstance(signer, k.Signer)
    return signer


def _trust() -> TrustList:
    if "trust" not in _CACHE:
        _CACHE["trust"] = TrustList([k.pki().rsa_root, k.pki().ec_root])
    trust = _CACHE["trust"]
    assert isinstance(trust, TrustList)
    return trust


# -- the trust list -------------------------------------------------------------------------------


def test_without_a_trust_list_no_signer_is_trusted() -> None:
    signer = k.pki().signer()
    result = verify_jws(k.signature(k.jws(CONTENT, signer)), CONTENT, TrustList(), NOW)
    assert result.status is Status.UNTRUSTED


def test_chain_is_judged_at_the_signing_time_not_today(trust: TrustList) -> None:
    signer = k.pki().signer(start=NOW - 400 * k.DAY, end=NOW - 10 * k.DAY)
    while_valid = NOW - 100 * k.DAY
    signature = k.signature(k.jws(CONTENT, signer, signed_at=while_valid))
    assert verify_jws(signature, CONTENT, trust, NOW).status is Status.VERIFIED
    late = k.signature(k.jws(CONTENT, signer, signed_at=NOW - k.DAY))
    assert verify_jws(late, CONTENT, trust, NOW).status is Status.EXPIRED


def test_missing_intermediate_comes_from_the_trust_list(tmp_path: Path) -> None:
    signer = k.pki().signer()
    alone = k.Signer(signer.key, signer.chain[:1])
    signature = k.signature(k.jws(CONTENT, alone))
    roots = TrustList([k.pki().rsa_root])
    assert verify_jws(signature, CONTENT, roots, NOW).status is Status.UNTRUSTED
    with_intermediate = TrustList([k.pki().rsa_root], [k.pki().intermediate])
    assert verify_jws(signature, CONTENT, with_intermediate, NOW).status is Status.VERIFIED


def test_crl_of_another_issuer_or_forged_is_ignored(tmp_path: Path) -> None:
    signer = k.pki().signer()
    other = k.Pki()  # another intermediate, same name: its CRL's signature does not verify
    forged = other.crl((signer.certificate, NOW - k.DAY))
    trust = load_trust_list(k.pki().trust_list(tmp_path, forged))
    result = verify_jws(k.signature(k.jws(CONTENT, signer)), CONTENT, trust, NOW)
    assert result.status is Status.VERIFIED


def test_trust_list_is_read_again_when_a_crl_changes(tmp_path: Path) -> None:
    signer = k.pki().signer()
    path = k.pki().trust_list(tmp_path, k.pki().crl())
    signature = k.signature(k.jws(CONTENT, signer))
    assert verify_jws(signature, CONTENT, load_trust_list(path), NOW).verified
    crl = tmp_path / "crl-0.pem"
    crl.write_bytes(k.pki().crl((signer.certificate, NOW - k.DAY)))
    stamp = crl.stat().st_mtime_ns + 10**9
    os.utime(crl, ns=(stamp, stamp))
    assert verify_jws(signature, CONTENT, load_trust_list(path), NOW).status is Status.REVOKED


@pytest.mark.parametrize("responder", ["issuer", "delegated"])
def test_ocsp_response_of_the_issuer_revokes_from_its_time(tmp_path: Path,
                                                           responder: str) -> None:
    signer = k.pki().signer()
    answer = k.pki().ocsp(signer.certificate, NOW - k.DAY, responder=responder)
    trust = load_trust_list(k.pki().trust_list(tmp_path, ocsp=(answer,)))
    signature = k.signature(k.jws(CONTENT, signer, signed_at=NOW - 2 * k.DAY))
    result = verify_jws(signature, CONTENT, trust, NOW)
    assert result.status is Status.REVOKED and "OCSP" in result.detail
    before = verify_jws(signature, CONTENT, trust, NOW - 2 * k.DAY + dt.timedelta(minutes=1))
    assert before.status is Status.VERIFIED  # received before the revocation


def test_ocsp_good_forged_or_about_another_certificate_revokes_nothing(tmp_path: Path) -> None:
    signer, neighbour = k.pki().signer(), k.pki().signer()
    answers = (k.pki().ocsp(signer.certificate),  # good
               k.pki().ocsp(signer.certificate, NOW - k.DAY, responder="stranger"),
               k.Pki().ocsp(signer.certificate, NOW - k.DAY),  # another CA of the same name
               k.pki().ocsp(neighbour.certificate, NOW - k.DAY))
    trust = load_trust_list(k.pki().trust_list(tmp_path, ocsp=answers))
    result = verify_jws(k.signature(k.jws(CONTENT, signer)), CONTENT, trust, NOW)
    assert result.status is Status.VERIFIED
    assert verify_jws(k.signature(k.jws(CONTENT, neighbour)), CONTENT, trust,
                      NOW).status is Status.REVOKED


# -- the XML 130 envelope --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envelope() -> bytes:
    return k.sign_envelope(b.envelope(b.visit()), k.pki().signer(kind="ec"))


def test_signed_envelope_verifies(trust: TrustList, envelope: bytes) -> None:
    result = verify_envelope(envelope, trust, NOW)
    assert result is not None and result.status is Status.VERIFIED, result


def test_unsigned_envelope_has_no_signature(trust: TrustList) -> None:
    assert verify_envelope(b.envelope(b.visit()), trust, NOW) is None


def test_xades_signing_time_is_the_signing_time(trust: TrustList) -> None:
    signed_at = dt.datetime.now(dt.UTC)
    data = k.sign_envelope(b.envelope(b.visit()), k.pki().signer(), xades=True)
    result = verify_envelope(data, trust, signed_at + 30 * k.DAY)
    assert result is not None and result.status is Status.VERIFIED, result.detail
    assert abs(dt.datetime.fromisoformat(result.signing_time) - signed_at) < \
        dt.timedelta(minutes=1)


def test_without_a_signing_time_the_certificate_must_be_valid_at_receipt(
        trust: TrustList) -> None:
    signer = k.pki().signer(start=NOW - 400 * k.DAY, end=NOW - 10 * k.DAY)
    result = verify_envelope(k.sign_envelope(b.envelope(b.visit()), signer), trust, NOW)
    assert result is not None and result.status is Status.EXPIRED


def _signed_part(data: bytes) -> list[int]:
    """The positions of the bytes the enveloped signature covers (all but ds:Signature)."""
    opening = re.search(rb"<(\w+:)?Signature[ >]", data)
    closing = re.search(rb"</(\w+:)?Signature>", data)
    assert opening is not None and closing is not None
    start, end = opening.start(), closing.end()
    return [i for i in range(len(data)) if not start <= i < end]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(pick=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_changing_any_single_byte_of_the_signed_envelope_is_detected(
        envelope: bytes, pick: int, value: int) -> None:
    positions = _signed_part(envelope)
    position = positions[pick % len(positions)]
    changed = bytearray(envelope)
    changed[position] = value if value != changed[position] else value ^ 0x01
    result = verify_envelope(bytes(changed), _trust(), NOW)
    if result is None:  # no longer a signed envelope: it is no longer XML at all
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(bytes(changed))
    else:
        assert not result.verified, (position, value)


# -- PDF -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return k.sign_pdf(k.blank_pdf(), k.pki().signer())


def test_signed_pdf_verifies(trust: TrustList, pdf: bytes) -> None:
    [result] = verify_pdf(pdf, trust, dt.datetime.now(dt.UTC))  # the PDF says when it was signed
    assert result.status is Status.VERIFIED, result.detail


def test_pdf_changed_by_an_incremental_update_is_refused(trust: TrustList, pdf: bytes) -> None:
    appended = pdf + b"\n4 0 obj\n<< /Title (Sua) >>\nendobj\n"
    results = verify_pdf(appended, trust, dt.datetime.now(dt.UTC))
    assert results and not any(r.verified for r in results)


def _byte_range(data: bytes) -> list[int]:
    found = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", data)
    assert found is not None
    a, length, c, d = (int(x) for x in found.groups())
    return [*range(a, a + length), *range(c, c + d)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(pick=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_changing_any_single_byte_of_the_signed_pdf_is_detected(
        pdf: bytes, pick: int, value: int) -> None:
    positions = _byte_range(pdf)
    position = positions[pick % len(positions)]
    changed = bytearray(pdf)
    changed[position] = value if value != changed[position] else value ^ 0x01
    results = verify_pdf(bytes(changed), _trust(), dt.datetime.now(dt.UTC))
    if not results:  # no longer a signed PDF: the change took its signature's marks away
        assert b"/ByteRange" not in changed
    else:
        assert not any(r.verified for r in results), (position, value)

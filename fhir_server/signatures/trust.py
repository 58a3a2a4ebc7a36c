"""Whom the server trusts: the trust list an operator configures, and the checks of a
signer's certificate against it.

The trust list is a JSON file (docs/signatures.md, "Trust"): ``anchors``, the roots (the
national digital-signature root, the licensed providers' roots), ``intermediates`` (issuing
certificates a signature may leave out), ``crls``, certificate revocation lists, and ``ocsp``,
OCSP responses (RFC 6960, DER) the operator fetched from the providers' responders; each item
is a file (PEM with one or more certificates or CRLs, or DER), relative to the trust list, or
PEM text. A certificate is trusted when a path leads from it to an anchor, every certificate
on it valid at the signing time (RFC 5280 path validation by ``cryptography``: names,
signatures, validity, basic constraints, path length), and none revoked, by a CRL of its
issuer or an OCSP response signed by its issuer (or a responder its issuer delegated), at or
before the moment the server received the signature. The server itself makes no network call.
Without a trust list no signer is trusted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from fhir_server.signatures.verification import Status

__all__ = ["ChainOutcome", "TrustList", "load_certificates", "load_trust_list"]


@dataclass(frozen=True)
class ChainOutcome:
    """What the trust check found: ``status`` (VERIFIED when trusted), why, and the anchor."""

    status: Status
    detail: str
    anchor: str = ""


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of PEM (one or more) or DER bytes; raises ``ValueError``."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def _crls(data: bytes) -> list[x509.CertificateRevocationList]:
    if b"-----BEGIN" not in data:
        return [x509.load_der_x509_crl(data)]
    blocks = data.split(b"-----END X509 CRL-----")
    return [x509.load_pem_x509_crl(block + b"-----END X509 CRL-----")
            for block in blocks if b"-----BEGIN X509 CRL-----" in block]  # fmt: skip


def _is_ca(policy: Any, certificate: Any, value: x509.BasicConstraints | None) -> None:
    if value is None or not value.ca:
        raise ValueError("an issuing certificate must be a CA (basicConstraints)")


def _signs(policy: Any, certificate: Any, value: x509.KeyUsage | None) -> None:
    if value is not None and not (value.digital_signature or value.content_commitment):
        raise ValueError("the signer's key usage allows neither digitalSignature nor "
                         "nonRepudiation")


_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca)
_SIGNER_POLICY = ExtensionPolicy.permit_all().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _signs)


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


@dataclass
class TrustList:
    """The anchors, the extra intermediates and the CRLs the operator trusts."""

    anchors: list[x509.Certificate] = field(default_factory=list)
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    ocsp: list[ocsp.OCSPResponse] = field(default_factory=list)

    def check(self, signer: x509.Certificate, presented: Sequence[x509.Certificate],
              signed_at: datetime, received: datetime) -> ChainOutcome:
        """Judge ``signer`` (with the certificates the signature carried) at ``signed_at``;
        revocation at ``received``."""
        if not self.anchors:
            return ChainOutcome(Status.UNTRUSTED, "no trust list is configured")
        dated = _validity(signer, signed_at)
        if dated is not None:
            return dated
        try:
            chain = self._path(signer, presented, signed_at)
        except VerificationError as exc:
            for certificate in presented:
                if (dated := _validity(certificate, signed_at)) is not None:
                    return dated
            return ChainOutcome(Status.UNTRUSTED, f"no trusted path from {_subject(signer)} "
                                f"to a root of the trust list ({exc})")
        revoked = self._revoked(chain, received)
        return revoked or ChainOutcome(Status.VERIFIED, "trusted", _subject(chain[-1]))

    def _path(self, signer: x509.Certificate, presented: Sequence[x509.Certificate],
              signed_at: datetime) -> list[x509.Certificate]:
        verifier = (PolicyBuilder().store(Store(self.anchors)).time(signed_at)
                    .extension_policies(ca_policy=_CA_POLICY, ee_policy=_SIGNER_POLICY)
                    .build_client_verifier())
        extra = [c for c in presented if c != signer] + self.intermediates
        return list(verifier.verify(signer, extra).chain)

    def _revoked(self, chain: list[x509.Certificate], received: datetime) -> ChainOutcome | None:
        for certificate, issuer in itertools.pairwise(chain):
            answered = _ocsp_revoked(self.ocsp, certificate, issuer, received)
            if answered is not None:
                return answered
            for crl in self.crls:
                if crl.issuer != issuer.subject or not _crl_signed_by(crl, issuer):
                    continue
                entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
                if entry is not None and entry.revocation_date_utc <= received:
                    return ChainOutcome(
                        Status.REVOKED, f"{_subject(certificate)} was revoked on "
                        f"{entry.revocation_date_utc.isoformat()} ({_subject(issuer)}'s CRL)")
        return None


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (InvalidSignature, TypeError, ValueError):
        return False


def _signed(key: object, signature: bytes, data: bytes,
            algorithm: hashes.HashAlgorithm | None) -> bool:
    """Whether ``signature`` over ``data`` verifies with ``key`` (RSA PKCS#1 v1.5 or ECDSA)."""
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _delegated(responder: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``responder`` is an OCSP responder ``issuer`` delegated (RFC 6960 4.2.2.2)."""
    try:
        usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return (responder.issuer == issuer.subject and ExtendedKeyUsageOID.OCSP_SIGNING in usage
            and _signed(issuer.public_key(), responder.signature,
                        responder.tbs_certificate_bytes, responder.signature_hash_algorithm))


def _answered_by(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """Whether ``response`` is signed by ``issuer`` or by a responder it delegated."""
    keys = [issuer.public_key()] + [c.public_key() for c in response.certificates
                                    if _delegated(c, issuer)]  # fmt: skip
    return any(_signed(key, response.signature, response.tbs_response_bytes,
                       response.signature_hash_algorithm) for key in keys)


def _names(single: ocsp.OCSPSingleResponse, issuer: x509.Certificate,
           certificate: x509.Certificate) -> bool:
    digest = hashes.Hash(single.hash_algorithm)
    digest.update(issuer.subject.public_bytes())
    return (single.serial_number == certificate.serial_number
            and single.issuer_name_hash == digest.finalize())


def _ocsp_revoked(responses: Sequence[ocsp.OCSPResponse], certificate: x509.Certificate,
                  issuer: x509.Certificate, received: datetime) -> ChainOutcome | None:
    """REVOKED when an OCSP response of ``issuer`` says ``certificate`` was revoked at or
    before ``received``; responses of another issuer, or not signed by it, are ignored."""
    for response in responses:
        singles = [r for r in response.responses if _names(r, issuer, certificate)
                   and r.certificate_status == ocsp.OCSPCertStatus.REVOKED]  # fmt: skip
        if not singles or not _answered_by(response, issuer):
            continue
        for single in singles:
            when = single.revocation_time_utc
            if when is not None and when <= received:
                return ChainOutcome(Status.REVOKED, f"{_subject(certificate)} was revoked on "
                                    f"{when.isoformat()} ({_subject(issuer)}'s OCSP response)")
    return None


def _ocsp_responses(data: bytes) -> list[ocsp.OCSPResponse]:
    response = ocsp.load_der_ocsp_response(data)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return []  # an error answer says nothing about any certificate
    return [response]


def _validity(certificate: x509.Certificate, moment: datetime) -> ChainOutcome | None:
    if moment < certificate.not_valid_before_utc:
        return ChainOutcome(Status.NOT_YET_VALID, f"{_subject(certificate)} is valid from "
                            f"{certificate.not_valid_before_utc.isoformat()}, after the signing "
                            f"time {moment.isoformat()}")
    if moment > certificate.not_valid_after_utc:
        return ChainOutcome(Status.EXPIRED, f"{_subject(certificate)} expired on "
                            f"{certificate.not_valid_after_utc.isoformat()}, before the signing "
                            f"time {moment.isoformat()}")
    return None


def _item(base: Path, item: object, files: list[Path]) -> bytes:
    if not isinstance(item, str):
        raise ValueError(f"a trust list item is a file name or PEM text, not {item!r}")
    if item.lstrip().startswith("-----BEGIN"):
        return item.encode()
    files.append(base / item)
    return files[-1].read_bytes()


def _read(path: Path, files: list[Path]) -> TrustList:
    document = orjson.loads(path.read_bytes())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a trust list is a JSON object")

    def items(name: str) -> list[bytes]:
        return [_item(path.parent, item, files) for item in document.get(name) or []]

    return TrustList(
        anchors=[c for data in items("anchors") for c in load_certificates(data)],
        intermediates=[c for data in items("intermediates") for c in load_certificates(data)],
        crls=[crl for data in items("crls") for crl in _crls(data)],
        ocsp=[r for data in items("ocsp") for r in _ocsp_responses(data)],
    )


#: The trust lists read, with the modification times of the files they were read from.
_LOADED: dict[Path, tuple[tuple[tuple[Path, int], ...], TrustList]] = {}


def _stamps(files: Sequence[Path]) -> tuple[tuple[Path, int], ...]:
    return tuple((f, f.stat().st_mtime_ns) for f in files)


def load_trust_list(path: Path | None) -> TrustList:
    """The trust list in ``path``, read again when it or a file it names changes (a CRL
    replaced); an empty one for None. Raises ``OSError`` or ``ValueError`` for a file that
    cannot be read."""
    if path is None:
        return TrustList()
    found = _LOADED.get(path)
    if found is not None and _stamps([f for f, _ in found[0]]) == found[0]:
        return found[1]
    files = [path]
    trust = _read(path, files)
    _LOADED[path] = (_stamps(files), trust)
    return trust

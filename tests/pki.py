"""A test PKI made in the test set-up, and signers that use it the way facilities would.

Two roots (RSA and EC), an intermediate (EC, under the RSA root) that issues the facilities'
certificates, CRLs and OCSP responses of the intermediate (signed by it or by a responder it
delegated), and a trust list file naming them. Signatures are made
with independent tools: PyJWT's JWS encoder (detached payloads: RFC 7515 appendix F, and RFC
7797's unencoded form), the standard library's ``json`` for the canonical form, signxml for the
XML 130 envelope, pyHanko for PDFs. Nothing here is a real certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.api_jws import PyJWS
from lxml import etree
from signxml import methods
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner
from signxml.xades import XAdESSigner

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.writer import PdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.signers.pdf_signer import PdfSignatureMetadata
    from pyhanko_certvalidator.registry import SimpleCertificateStore

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
DOCUMENT = "http://hl7.org/fhir/canonicalization/json#document"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test PKI"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=not ca,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def certificate(subject: str, key: Key, issuer: x509.Name, issuer_key: Key, *, ca: bool,
                start: dt.datetime, end: dt.datetime,
                usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    """A certificate of ``key`` signed by ``issuer_key`` (SHA-256), with the extended key
    usage ``usage`` if given."""
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(_usage(ca), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@dataclass(frozen=True)
class Signer:
    """A facility's key and certificate chain (its certificate first, no root)."""

    key: Key
    chain: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def x5c(self) -> list[str]:
        return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in self.chain]

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


@dataclass
class Pki:
    """The test roots, the intermediate and the signers issued under them."""

    rsa_root_key: rsa.RSAPrivateKey = field(default_factory=rsa_key)
    ec_root_key: ec.EllipticCurvePrivateKey = field(default_factory=ec_key)
    intermediate_key: ec.EllipticCurvePrivateKey = field(default_factory=ec_key)

    def __post_init__(self) -> None:
        self.rsa_root = certificate("Test Root RSA", self.rsa_root_key, _name("Test Root RSA"),
                                    self.rsa_root_key, ca=True, start=NOW - 3650 * DAY,
                                    end=NOW + 3650 * DAY)
        self.ec_root = certificate("Test Root EC", self.ec_root_key, _name("Test Root EC"),
                                   self.ec_root_key, ca=True, start=NOW - 3650 * DAY,
                                   end=NOW + 3650 * DAY)
        self.intermediate = certificate("Test Issuing CA", self.intermediate_key,
                                        self.rsa_root.subject, self.rsa_root_key, ca=True,
                                        start=NOW - 1000 * DAY, end=NOW + 1000 * DAY)

    def signer(self, name: str = "Bệnh viện Thử nghiệm", kind: str = "rsa", *,
               start: dt.datetime | None = None, end: dt.datetime | None = None,
               under: str = "intermediate") -> Signer:
        """A facility certificate (RSA or EC key) issued by the intermediate, or directly by
        the EC root (``under="ec-root"``)."""
        key: Key = rsa_key() if kind == "rsa" else ec_key()
        start, end = start or NOW - 30 * DAY, end or NOW + 365 * DAY
        if under == "ec-root":
            leaf = certificate(name, key, self.ec_root.subject, self.ec_root_key, ca=False,
                               start=start, end=end)
            return Signer(key, (leaf,))
        leaf = certificate(name, key, self.intermediate.subject, self.intermediate_key,
                           ca=False, start=start, end=end)
        return Signer(key, (leaf, self.intermediate))

    def crl(self, *revoked: tuple[x509.Certificate, dt.datetime]) -> bytes:
        """A CRL of the intermediate (PEM) revoking each certificate from its moment."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.intermediate.subject)
                   .last_update(NOW - DAY).next_update(NOW + 7 * DAY))
        for cert, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(when).build())
        return builder.sign(self.intermediate_key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM)

    def ocsp(self, cert: x509.Certificate, revoked: dt.datetime | None = None, *,
             responder: str = "issuer") -> bytes:
        """An OCSP response (DER) of the intermediate about ``cert``: good, or revoked at
        ``revoked``; signed by the intermediate, by a ``delegated`` responder (its certificate
        in the response), or by a ``stranger`` that claims the intermediate's name."""
        status = ocsp.OCSPCertStatus.GOOD if revoked is None else ocsp.OCSPCertStatus.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=self.intermediate, algorithm=hashes.SHA256(), cert_status=status,
            this_update=NOW - DAY, next_update=NOW + DAY, revocation_time=revoked,
            revocation_reason=None if revoked is None else x509.ReasonFlags.key_compromise)
        key: Key = self.intermediate_key
        signer = self.intermediate
        if responder != "issuer":
            key = ec_key()
            issuer_key: Key = self.intermediate_key if responder == "delegated" else ec_key()
            signer = certificate("OCSP responder", key, self.intermediate.subject, issuer_key,
                                 ca=False, start=NOW - DAY, end=NOW + DAY,
                                 usage=ExtendedKeyUsageOID.OCSP_SIGNING)
            builder = builder.certificates([signer])
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def trust_list(self, directory: Path, *crls: bytes, ocsp: tuple[bytes, ...] = ()) -> Path:
        """A trust list file naming both roots (and the CRLs, the OCSP responses) in
        ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "roots.pem").write_bytes(pem(self.rsa_root, self.ec_root))
        names = []
        for n, crl in enumerate(crls):
            (directory / f"crl-{n}.pem").write_bytes(crl)
            names.append(f"crl-{n}.pem")
        answers = []
        for n, answer in enumerate(ocsp):
            (directory / f"ocsp-{n}.der").write_bytes(answer)
            answers.append(f"ocsp-{n}.der")
        path = directory / "trust-list.json"
        path.write_text(json.dumps({"anchors": ["roots.pem"], "crls": names, "ocsp": answers}))
        return path


@cache
def pki() -> Pki:
    """The test PKI of this test run."""
    return Pki()


# -- signing, as a facility would ------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """FHIR canonical JSON by the standard library (keys sorted, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def signed_content(bundle: dict[str, Any]) -> bytes:
    """What a Bundle signature covers (``#document``: no id, meta nor signature)."""
    return canonical({k: v for k, v in bundle.items() if k not in ("id", "meta", "signature")})


def jws(content: bytes, signer: Signer, *, algorithm: str | None = None,
        signed_at: dt.datetime | None = None, unencoded: bool = False,
        attached: bool = False) -> str:
    """``Signature.data``: the base64 of a JWS over ``content`` made by PyJWT."""
    algorithm = algorithm or ("RS256" if isinstance(signer.key, rsa.RSAPrivateKey) else "ES256")
    headers = {"x5c": signer.x5c(), "sigT": (signed_at or NOW).isoformat()}
    if unencoded:
        token = PyJWS().encode(content, signer.key, algorithm=algorithm, headers=headers,
                               is_payload_detached=True)
    else:
        head, payload, value = PyJWS().encode(content, signer.key, algorithm=algorithm,
                                              headers=headers).split(".")
        token = f"{head}.{payload if attached else ''}.{value}"
    return base64.b64encode(token.encode()).decode()


def signature(data: str, method: str = DOCUMENT, who: str = "Organization/facility"
              ) -> dict[str, Any]:
    """A FHIR Signature element carrying the JWS ``data``."""
    return {"type": [{"system": "urn:iso-astm:E1762-95:2013",
                      "code": "1.2.840.10065.1.12.1.1"}],
            "when": NOW.isoformat(), "who": {"display": who},
            "targetFormat": f"application/fhir+json;canonicalization={method}",
            "sigFormat": "application/jose", "data": data}


def sign_bundle(bundle: dict[str, Any], signer: Signer, **options: Any) -> dict[str, Any]:
    """``bundle`` with a ``Bundle.signature`` over its ``#document`` canonical form."""
    bundle.pop("signature", None)
    bundle["signature"] = signature(jws(signed_content(bundle), signer, **options))
    return bundle


def sign_envelope(data: bytes, signer: Signer, xades: bool = False) -> bytes:
    """The envelope with the facility's enveloped XML signature in ``CHUKYDONVI`` (a XAdES
    one, with its signed SigningTime, when asked)."""
    root = etree.fromstring(data)
    holder = etree.SubElement(root, "CHUKYDONVI")
    etree.SubElement(holder, "{http://www.w3.org/2000/09/xmldsig#}Signature", Id="placeholder")
    method = SignatureMethod.RSA_SHA256 if isinstance(signer.key, rsa.RSAPrivateKey) \
        else SignatureMethod.ECDSA_SHA256
    kind = XAdESSigner if xades else XMLSigner
    xml_signer = kind(method=methods.enveloped, signature_algorithm=method,
                      digest_algorithm=DigestAlgorithm.SHA256)
    signed = xml_signer.sign(root, key=signer.key,
                             cert=[pem(c).decode() for c in signer.chain])
    return bytes(etree.tostring(signed))


def blank_pdf() -> bytes:
    """A one-page PDF."""
    writer = PdfFileWriter()
    size = [generic.NumberObject(0), generic.NumberObject(0), generic.NumberObject(595),
            generic.NumberObject(842)]
    writer.insert_page(generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Page"),
        generic.NameObject("/MediaBox"): generic.ArrayObject(size)}))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sign_pdf(data: bytes, signer: Signer) -> bytes:
    """``data`` signed by ``signer`` (a CMS signature over the whole file, by pyHanko)."""
    der = serialization.Encoding.DER
    cms = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(signer.certificate.public_bytes(der)),
        signing_key=asn1_keys.PrivateKeyInfo.load(signer.key.private_bytes(
            der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore.from_certs(
            [asn1_x509.Certificate.load(c.public_bytes(der)) for c in signer.chain[1:]]))
    def sign() -> bytes:  # pyHanko runs its own event loop: not inside the test's
        out = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(data)),
                               PdfSignatureMetadata(field_name="GiayRaVien"), signer=cms)
        return bytes(out.getvalue())

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(sign).result()

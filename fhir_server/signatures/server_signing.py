"""The server's own signature on what it produces: ``$summary`` and ``$document`` Bundles
signed with the operator's key (``signature_key_file`` and ``signature_certificate_file``), so
a citizen can hand a document to a third party that checks it without asking the server.

The signature is a detached JWS (ES256/384/512 for an EC key, RS256 for RSA) over the
``#document`` canonical form of the Bundle without its signature, with the certificate chain
in ``x5c`` and the signing time in ``sigT``: exactly what the server checks on what it
receives (docs/signatures.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_server.errors import FhirError
from fhir_server.settings import Settings
from fhir_server.signatures.canonical import DEFAULT_BUNDLE_METHOD, canonical_json
from fhir_server.signatures.jws import JOSE, PrivateKey, sign_jws
from fhir_server.signatures.trust import load_certificates

__all__ = ["sign_document"]

_SOURCE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.14",
           "display": "Source Signature"}
_LOADED: dict[tuple[Path, int, Path, int], tuple[PrivateKey, list[x509.Certificate]]] = {}


def _signer(key_file: Path, certificate_file: Path) -> tuple[PrivateKey, list[x509.Certificate]]:
    stamp = (key_file, key_file.stat().st_mtime_ns, certificate_file,
             certificate_file.stat().st_mtime_ns)
    if stamp not in _LOADED:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key must be an RSA or EC key")
        _LOADED.clear()
        _LOADED[stamp] = (key, load_certificates(certificate_file.read_bytes()))
    return _LOADED[stamp]


def sign_document(settings: Settings, bundle: dict[str, Any], who: dict[str, Any]
                  ) -> dict[str, Any]:
    """``bundle`` with ``Bundle.signature`` by the server's key (``who``: the signer's
    Reference); ``bundle`` unchanged when no key is configured. A key or certificate that
    cannot be read is a 500 (``MSG_SIGNING_KEY``)."""
    if settings.signature_key_file is None or settings.signature_certificate_file is None:
        return bundle
    try:
        key, chain = _signer(settings.signature_key_file, settings.signature_certificate_file)
    except (OSError, ValueError, TypeError) as exc:
        raise FhirError(f"The server's signing key cannot be used: {exc}",
                        message_id="MSG_SIGNING_KEY") from None
    now = datetime.now(UTC)
    content = canonical_json(bundle, DEFAULT_BUNDLE_METHOD, omit="signature")
    bundle["signature"] = {
        "type": [_SOURCE], "when": now.isoformat(), "who": who,
        "targetFormat": f"application/fhir+json;canonicalization={DEFAULT_BUNDLE_METHOD}",
        "sigFormat": JOSE, "data": sign_jws(content, key, chain, now),
    }
    return bundle

"""The signature check of every write, in the write's prepare phase (outside the write lock),
as the deployment's ``signature_verification`` setting says: ``off``, ``record`` (check and
keep the proof) or ``enforce`` (also refuse, 422, content whose signature does not verify).

What is checked, and over what (docs/signatures.md):

- ``Bundle.signature`` (a transaction, a document, any Bundle): a JWS over the canonical JSON
  of the Bundle without its ``signature`` (``#document`` unless ``targetFormat`` names another
  canonicalization: the root ``id`` and ``meta`` are left out, so a stored document still
  verifies);
- ``Provenance.signature`` as a JWS: over the canonical JSON of its target (a JSON array of its
  targets when it has several) as sent in the same transaction Bundle; as an XML signature:
  over the XML 130 envelope its ``entity`` names (in the Bundle, or just checked by the bridge);
  a signed Provenance whose signed content is not at hand is ``unverifiable``;
- a PDF in ``DocumentReference.content.attachment.data`` or in a ``Binary`` (``application/pdf``).

:func:`check_written` is called for each resource written, :func:`checked_transaction` around
the preparation of a transaction's entries (it checks ``Bundle.signature`` and, from the
entries as they were received, the signed Provenances among them), :func:`check_envelope` by
the XML 130 bridge. The proofs go with the writes (``proof.keep``). Each signature checked
is counted once, by kind and result (``fhir_signature_checks_total`` on ``/metrics``; an
envelope checked lately and recorded again on its visits' Provenances is not checked again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from fhir_server.decimals import loads
from fhir_server.errors import Issue, Unprocessable
from fhir_server.interactions.context import Services
from fhir_server.metrics.catalogue import count_signature_check
from fhir_server.signatures.canonical import (
    DEFAULT_BUNDLE_METHOD,
    DEFAULT_RESOURCE_METHOD,
    canonical_json,
    method_of,
)
from fhir_server.signatures.jws import JOSE, verify_jws
from fhir_server.signatures.pdf import PDF, is_signed_pdf, verify_pdf
from fhir_server.signatures.proof import SELF, Proof, SignedBy, is_proof
from fhir_server.signatures.recheck import check_kept
from fhir_server.signatures.trust import TrustList, load_trust_list
from fhir_server.signatures.verification import Status, Verification
from fhir_server.signatures.xmldsig import XML_SIGNATURE, signature_element, verify_envelope

__all__ = [
    "check_envelope",
    "check_written",
    "checked_transaction",
    "envelope_signature",
    "refusal",
    "refuses",
    "verify_file",
]

Json = dict[str, Any]
#: The proofs of the signed Provenances of the transaction being prepared, by object.
_PENDING: ContextVar[dict[int, tuple[Proof, ...]] | None] = ContextVar("signed_provenances",
                                                                       default=None)
#: Envelopes checked lately: by SHA-256 of their bytes, and by the Binary that holds them.
_ENVELOPES: OrderedDict[str, Verification] = OrderedDict()
_ENVELOPE_LIMIT = 64


def _now() -> datetime:
    return datetime.now(UTC)


def _trust(services: Services) -> TrustList:
    return load_trust_list(services.settings.signature_trust_list)


def _off(services: Services) -> bool:
    return services.settings.signature_verification == "off"


def refusal(services: Services, proofs: tuple[Proof, ...], where: str) -> Unprocessable | None:
    """The 422 refusing ``proofs`` in ``enforce`` mode when a signature did not verify."""
    failed = [s for proof in proofs for s in proof.failures]
    if services.settings.signature_verification != "enforce" or not failed:
        return None
    issues = [Issue("error", "security", s.verification.message_id,
                    f"The signature does not verify ({s.verification.status}): "
                    f"{s.verification.detail}", (where,)) for s in failed]
    return Unprocessable(issues[0].diagnostics, message_id=issues[0].message_id, issues=issues)


def refuses(services: Services, verification: Verification) -> bool:
    """Whether the deployment refuses content whose signature came out so."""
    return services.settings.signature_verification == "enforce" and not verification.verified


def _decide(services: Services, proofs: tuple[Proof, ...], where: str) -> tuple[Proof, ...]:
    refused = refusal(services, proofs, where)
    if refused is not None:
        raise refused
    return proofs


# -- what each kind of content signs -------------------------------------------------------------


def _counted(verification: Verification) -> Verification:
    """``verification``, counted on ``/metrics``."""
    count_signature_check(verification.kind, verification.status.value)
    return verification


def _unchecked(status: Status, detail: str, kind: str = "jws") -> Verification:
    return _counted(Verification(status, detail, kind, verified_at=_now().isoformat()))


def _jws(signature: Json, content: Any, method: str | None, trust: TrustList,
         omit: str | None = None) -> tuple[Verification, bytes]:
    """The verification of a JWS ``signature`` over ``content`` (without its element
    ``omit``), and the canonical bytes it was checked over."""
    if signature.get("sigFormat") != JOSE:
        return _unchecked(Status.UNSUPPORTED, f"sigFormat {signature.get('sigFormat')!r} is "
                          f"not {JOSE} (a JWS)"), b""
    if method is None:
        return _unchecked(Status.UNSUPPORTED, "targetFormat names a canonicalization this "
                          "server does not know"), b""
    signed = canonical_json(content, method, omit)
    return _counted(verify_jws(signature, signed, trust, _now(), method)), signed


def _bundle_proof(bundle: Json, trust: TrustList) -> Proof | None:
    signature = bundle.get("signature")
    if not isinstance(signature, dict):
        return None
    method = method_of(signature.get("targetFormat"), DEFAULT_BUNDLE_METHOD)
    verification, content = _jws(signature, bundle, method, trust, omit="signature")
    return Proof((SignedBy(signature, verification),), content)


def _envelope_bytes(entity: Json, entries: Mapping[str, Json]) -> tuple[bytes | None, str]:
    """The bytes of the envelope a Provenance entity names (in the Bundle), and the Binary."""
    reference = str((entity.get("what") or {}).get("reference", ""))
    binary = entries.get(reference)
    if binary is None or binary.get("resourceType") != "Binary":
        return None, reference
    try:
        return base64.b64decode(str(binary.get("data", ""))), f"Binary/{binary.get('id')}"
    except binascii.Error:
        return None, reference


def _xml_proof(provenance: Json, signature: Json, entries: Mapping[str, Json],
               trust: TrustList) -> Proof:
    sources = [e for e in provenance.get("entity") or () if isinstance(e, dict)
               and e.get("role") == "source"]  # fmt: skip
    for entity in sources:
        data, reference = _envelope_bytes(entity, entries)
        found = _envelope(data, reference, trust) if data is not None else \
            _ENVELOPES.get(reference)
        if found is not None:
            return Proof((SignedBy(signature, found),), source=reference)
    absent = _unchecked(Status.UNVERIFIABLE, "the envelope the XML signature covers is neither "
                        "in the Bundle nor just checked", "xmldsig")
    return Proof((SignedBy(signature, absent),), source=SELF)


def _targets(provenance: Json, entries: Mapping[str, Json]) -> list[Json] | None:
    found = [entries.get(str((t or {}).get("reference", "")))
             for t in provenance.get("target") or ()]  # fmt: skip
    resources = [r for r in found if r is not None]
    return resources if resources and len(resources) == len(found) else None


def _kept_proof(provenance: Json, entries: Mapping[str, Json], trust: TrustList
                ) -> tuple[Proof, ...]:
    """A proof the server wrote, written again (a store loaded from an export): its
    signatures over the bytes its entity names, which must be in the same Bundle."""
    source = ((provenance.get("entity") or [{}])[0].get("what") or {}).get("reference", "")
    binary = entries.get(str(source))
    try:
        content = base64.b64decode(str((binary or {}).get("data", ""))) if binary else None
    except binascii.Error:
        content = None
    signed = []
    for element in provenance.get("signature") or ():
        verification = _counted(check_kept(element, content, trust, _now())) \
            if content is not None \
            else _unchecked(Status.UNVERIFIABLE, "the bytes the proof kept are not in the same "
                            "transaction Bundle")
        signed.append(SignedBy(element, verification))
    return (Proof(tuple(signed), source=SELF),) if signed else ()


def _provenance_proofs(provenance: Json, entries: Mapping[str, Json],
                       trust: TrustList) -> tuple[Proof, ...]:
    if is_proof(provenance):
        return _kept_proof(provenance, entries, trust)
    proofs = []
    signed = None
    targets = _targets(provenance, entries)
    if targets is not None:
        signed = targets[0] if len(targets) == 1 else targets
    for signature in provenance.get("signature") or ():
        if not isinstance(signature, dict):
            continue
        if signature.get("sigFormat") == XML_SIGNATURE:
            proofs.append(_xml_proof(provenance, signature, entries, trust))
            continue
        method = method_of(signature.get("targetFormat"), DEFAULT_RESOURCE_METHOD)
        if signed is None:
            absent = _unchecked(Status.UNVERIFIABLE, "the resources the signature covers "
                                "(Provenance.target) are not in the same transaction Bundle")
            proofs.append(Proof((SignedBy(signature, absent),), source=SELF))
            continue
        verification, content = _jws(signature, signed, method, trust)
        proofs.append(Proof((SignedBy(signature, verification),), content))
    return tuple(proofs)


def _pdf_proof(data: str, trust: TrustList, source: str | None) -> Proof | None:
    try:
        content = base64.b64decode(data)
    except (binascii.Error, ValueError):
        return None
    if not is_signed_pdf(content):
        return None
    signed = [SignedBy({"sigFormat": PDF, "targetFormat": PDF}, _counted(v))
              for v in verify_pdf(content, trust, _now())]
    if not signed:
        return None
    return Proof(tuple(signed), b"" if source else content, PDF, source)


def _pdf_proofs(resource: Json, trust: TrustList) -> tuple[Proof, ...]:
    kind = resource.get("resourceType")
    if kind == "Binary" and str(resource.get("contentType", "")).startswith(PDF):
        found = _pdf_proof(str(resource.get("data", "")), trust, SELF)
        return (found,) if found else ()
    if kind != "DocumentReference":
        return ()
    attachments = [(c or {}).get("attachment") or {} for c in resource.get("content") or ()]
    proofs = [_pdf_proof(str(a.get("data", "")), trust, None) for a in attachments
              if str(a.get("contentType", "")).startswith(PDF) and a.get("data")]
    return tuple(p for p in proofs if p is not None)


# -- the hook ------------------------------------------------------------------------------------


def check_written(services: Services, resource: Json) -> tuple[Proof, ...]:
    """Check the signatures ``resource`` carries (as it is about to be written, before the
    server changes anything in it); return the proofs to keep with it. Raises
    ``Unprocessable`` (422) in ``enforce`` mode for a signature that does not verify."""
    if _off(services):
        return ()
    kind = str(resource.get("resourceType"))
    proofs: tuple[Proof, ...] = ()
    if kind == "Bundle":
        found = _bundle_proof(resource, _trust(services))
        proofs = (found,) if found else ()
    elif kind == "Provenance" and resource.get("signature"):
        pending = (_PENDING.get() or {}).get(id(resource))
        proofs = pending if pending is not None else \
            _provenance_proofs(resource, {}, _trust(services))
    elif kind in ("DocumentReference", "Binary"):
        proofs = _pdf_proofs(resource, _trust(services))
    return _decide(services, proofs, f"{kind}.signature")


def _entry_map(bundle: Json) -> dict[str, Json]:
    """The resources of a Bundle's entries by ``fullUrl`` and by ``Type/id``."""
    found: dict[str, Json] = {}
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if isinstance(entry.get("fullUrl"), str):
            found[entry["fullUrl"]] = resource
        if isinstance(resource.get("id"), str):
            found[f"{resource.get('resourceType')}/{resource['id']}"] = resource
    return found


def _signed_provenances(bundle: Json) -> list[Json]:
    return [e["resource"] for e in bundle.get("entry") or () if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "Provenance"
            and e["resource"].get("signature")]  # fmt: skip


@contextmanager
def checked_transaction(services: Services, bundle: Json) -> Iterator[Proof | None]:
    """Around the preparation of a transaction's entries: check ``Bundle.signature`` (yield
    its proof, None when unsigned) and the signed Provenances among the entries, from the
    entries as received. Raises ``Unprocessable`` in ``enforce`` mode for
    ``Bundle.signature``; a Provenance's refusal comes at its entry."""
    if _off(services):
        yield None
        return
    trust = _trust(services)
    proof = _bundle_proof(bundle, trust)
    if proof is not None:
        _decide(services, (proof,), "Bundle.signature")
    provenances = _signed_provenances(bundle)
    entries = _entry_map(bundle) if provenances else {}
    token = _PENDING.set({id(p): _provenance_proofs(p, entries, trust) for p in provenances})
    try:
        yield proof
    finally:
        _PENDING.reset(token)


def _envelope(data: bytes, reference: str, trust: TrustList) -> Verification | None:
    key = hashlib.sha256(data).hexdigest()
    found = _ENVELOPES.get(key)
    if found is None:
        found = verify_envelope(data, trust, _now())
        if found is None:
            return None
        _counted(found)
    for name in (key, reference):
        _ENVELOPES[name] = found
        _ENVELOPES.move_to_end(name)
    while len(_ENVELOPES) > _ENVELOPE_LIMIT:
        _ENVELOPES.popitem(last=False)
    return found


def check_envelope(services: Services, data: bytes, reference: str) -> Verification | None:
    """Check the signature of an XML 130 envelope (its exact bytes), to be kept as the Binary
    ``reference``; None when it is unsigned or checking is off."""
    if _off(services):
        return None
    return _envelope(data, reference, _trust(services))


def envelope_signature(data: bytes, verification: Verification) -> Json:
    """The ``Signature`` element recording an envelope's XML signature on a Provenance."""
    element = signature_element(data)
    signed = b"" if element is None else etree.tostring(element)
    return {"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                      "display": "Author's Signature"}],
            "when": verification.signing_time or verification.verified_at,
            "who": {"display": verification.signer or "unknown signer"},
            "targetFormat": "application/xml", "sigFormat": XML_SIGNATURE,
            "data": base64.b64encode(signed).decode()}  # fmt: skip


def verify_file(data: bytes, trust: TrustList) -> list[Verification] | None:
    """The signatures of a file as a verifier outside the server sees them: a FHIR JSON
    resource (a Bundle's signature and the signed Provenances among its entries, a PDF in a
    DocumentReference or Binary), an XML 130 envelope or a PDF; None when the file is none of
    these. The server's proofs a document holds are records of signatures checked, not
    signatures over the document: ``verify --stored`` checks them with the bytes kept."""
    if is_signed_pdf(data):
        return verify_pdf(data, trust, _now())
    if data.lstrip()[:1] == b"<":
        found = verify_envelope(data, trust, _now())
        return [found] if found else []
    try:
        resource = loads(data)
    except ValueError:
        return None
    if not isinstance(resource, dict):
        return None
    proofs = list(_pdf_proofs(resource, trust))
    if resource.get("resourceType") == "Bundle":
        proofs += [p for p in [_bundle_proof(resource, trust)] if p is not None]
        entries = _entry_map(resource)
        proofs += [p for provenance in _signed_provenances(resource) if not is_proof(provenance)
                   for p in _provenance_proofs(provenance, entries, trust)]
    elif resource.get("resourceType") == "Provenance":
        proofs += _provenance_proofs(resource, {}, trust)
    return [s.verification for proof in proofs for s in proof.signatures]

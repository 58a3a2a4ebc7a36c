"""Checking again, later, a signature the server kept the proof of (``$verify-signature``,
``fhir-server verify``).

For a resource the caller may read: a Bundle carrying ``Bundle.signature`` is checked over its
stored content (the canonicalization leaves out what storage changes: ``id``, ``meta``); a
PDF (a Binary, or a DocumentReference's attachment) over its bytes; anything else through the
proofs whose target it is (``proof``: the server's Provenances), each checked again over the
bytes it kept. Revocation is judged at the moment the server first received the signature
(the proof's ``recorded``), the certificate's validity at the signing time, with the trust
list of today. The kept bytes are read as the server: the answer says whether they verify,
never what they are.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fhir_server.interactions.context import Services
from fhir_server.interactions.read import read
from fhir_server.search.model import SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.security.policy import Access
from fhir_server.signatures.canonical import DEFAULT_BUNDLE_METHOD, canonical_json, method_of
from fhir_server.signatures.jws import JOSE, SignatureError, parse_instant, verify_jws
from fhir_server.signatures.pdf import PDF, is_signed_pdf, verify_pdf
from fhir_server.signatures.proof import is_proof
from fhir_server.signatures.trust import TrustList, load_trust_list
from fhir_server.signatures.verification import Status, Verification, from_extension
from fhir_server.signatures.xmldsig import XML_SIGNATURE, verify_envelope

__all__ = ["Found", "check_kept", "recheck", "report"]

Json = dict[str, Any]


@dataclass(frozen=True)
class Found:
    """One signature checked again: its verification, the proof it came from (``Type/id``,
    None for a signature checked where it is) and whether the resource asked about changed
    after the proof was made."""

    verification: Verification
    proof: str | None = None
    changed_since: bool = False


def _moment(value: object) -> datetime:
    try:
        return parse_instant(value)
    except SignatureError:  # a proof without a usable time: judged at today
        return datetime.now(UTC)


async def _proofs(services: Services, reference: str) -> list[Json]:
    """The server's proofs about ``reference``, a resource the caller has been allowed to
    read (``recheck`` reads it first): found with the server's sight, since a proof is the
    server's record of a check, which Consent does not share with a clinician or facility
    the way it shares the record itself (the verdict says no more than the record does)."""
    clauses = parse_search("Provenance", [("target", reference)], services.registry,
                           strict=True).query.clauses
    found = await services.search(SearchQuery("Provenance", clauses=clauses, count=100))
    return [s.resource() for s in found.matches if is_proof(s.resource())]


async def _bytes(services: Services, reference: str) -> bytes | None:
    kind, _, id = reference.partition("/")
    stored = await services.store.read(kind, id)
    if stored is None or stored.deleted:
        return None
    resource = stored.resource()
    if kind == "Binary":
        data = resource.get("data", "")
    else:  # a DocumentReference holding the PDF
        data = next((str((c.get("attachment") or {}).get("data", ""))
                     for c in resource.get("content") or () if (c.get("attachment") or {})
                     .get("contentType", "").startswith(PDF)), "")  # fmt: skip
    try:
        return base64.b64decode(str(data))
    except binascii.Error:
        return None


def check_kept(element: Json, content: bytes, trust: TrustList,
               received: datetime) -> Verification:
    """The signature ``element`` of a proof checked again over the bytes the proof kept."""
    recorded = from_extension(element)
    fmt = element.get("sigFormat")
    if fmt == JOSE:
        method = recorded.canonicalization if recorded else ""
        return verify_jws(element, content, trust, received, method)
    if fmt == XML_SIGNATURE:
        found = verify_envelope(content, trust, received)
    elif fmt == PDF:
        found = next((v for v in verify_pdf(content, trust, received)
                      if recorded is None or v.signer == recorded.signer), None)  # fmt: skip
    else:
        found = None
    return found or Verification(Status.UNVERIFIABLE, "the kept bytes carry no such signature",
                                 str(fmt), verified_at=received.isoformat())


async def _from_proof(services: Services, proof: Json, trust: TrustList,
                      updated: str) -> list[Found]:
    source = str(((proof.get("entity") or [{}])[0].get("what") or {}).get("reference", ""))
    content = await _bytes(services, source)
    received = _moment(proof.get("recorded"))
    changed = bool(updated) and _moment(updated) > received
    found = []
    for element in proof.get("signature") or ():
        verification = check_kept(element, content, trust, received) if content is not None \
            else \
            Verification(Status.UNVERIFIABLE, f"{source} is gone", "", verified_at="")
        if verification.status is not Status.UNVERIFIABLE and not verification.verified_at:
            verification = replace(verification, verified_at=received.isoformat())
        found.append(Found(verification, f"Provenance/{proof['id']}", changed))
    return found


async def _first_seen(services: Services, access: Access, reference: str) -> datetime:
    times = [_moment(p.get("recorded")) for p in await _proofs(services, reference)]
    return min(times) if times else datetime.now(UTC)


async def _in_place(services: Services, access: Access, resource: Json,
                    trust: TrustList) -> list[Found]:
    """The signatures a Bundle or a PDF carries, checked where they are."""
    reference = f"{resource['resourceType']}/{resource['id']}"
    received = await _first_seen(services, access, reference)
    signature = resource.get("signature")
    if resource["resourceType"] == "Bundle" and isinstance(signature, dict):
        method = method_of(signature.get("targetFormat"), DEFAULT_BUNDLE_METHOD) or ""
        content = canonical_json(resource, method, omit="signature") if method else b""
        return [Found(verify_jws(signature, content, trust, received, method))]
    data = await _bytes(services, reference) if resource["resourceType"] in (
        "Binary", "DocumentReference") else None
    if data is None or not is_signed_pdf(data):
        return []
    return [Found(v) for v in verify_pdf(data, trust, received)]


async def recheck(services: Services, access: Access, resource_type: str, id: str,
                  trust: TrustList | None = None) -> list[Found]:
    """Check again every signature about ``resource_type/id`` (which the caller must be able
    to read: 404 otherwise)."""
    trust = trust or load_trust_list(services.settings.signature_trust_list)
    resource = (await read(services, access, resource_type, id)).stored
    assert resource is not None
    content = resource.resource()
    if resource_type == "Provenance" and is_proof(content):
        return await _from_proof(services, content, trust, "")
    found = await _in_place(services, access, content, trust)
    if found:
        return found
    updated = str((content.get("meta") or {}).get("lastUpdated", ""))
    for proof in await _proofs(services, f"{resource_type}/{id}"):
        found += await _from_proof(services, proof, trust, updated)
    return found


def _part(found: Found) -> Json:
    v = found.verification
    parts: list[Json] = [{"name": "result", "valueCode": str(v.status)},
                         {"name": "messageId", "valueString": v.message_id},
                         {"name": "detail", "valueString": v.detail or str(v.status)},
                         {"name": "kind", "valueCode": v.kind or "unknown"}]
    for name, value in (("signer", v.signer), ("issuer", v.issuer),
                        ("signingTime", v.signing_time), ("trustAnchor", v.anchor)):
        if value:
            kind = "valueDateTime" if name == "signingTime" else "valueString"
            parts.append({"name": name, kind: value})
    if found.proof:
        parts.append({"name": "proof", "valueReference": {"reference": found.proof}})
        parts.append({"name": "changedSince", "valueBoolean": found.changed_since})
    return {"name": "signature", "part": parts}


def report(found: list[Found]) -> Json:
    """The ``Parameters`` answer: ``verified`` (there are signatures and all verify), then one
    ``signature`` part each."""
    verified = bool(found) and all(f.verification.verified for f in found)
    return {"resourceType": "Parameters",
            "parameter": [{"name": "verified", "valueBoolean": verified},
                          *(_part(f) for f in found)]}

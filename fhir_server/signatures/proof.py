"""The proof the server keeps of a signature it checked, written with what was signed.

A ``Proof`` is the signed bytes (kept as a ``Binary``, unless they are stored as one already:
an XML 130 envelope, a signed PDF sent as a Binary) and the signatures checked over them, each
with its ``Verification``. :func:`keep` writes, inside the transaction of the write it
belongs to, the Binary and one ``Provenance`` (the server's record, ``meta.source``
``PROOF_SOURCE``):

- ``target``: what was written (and, for a signed Provenance, what it names), and the
  patients of those resources, so the proof is in their compartments;
- ``occurredDateTime``: the signing time; ``recorded``: when the server checked it;
- ``agent``: the signer (``attester``, named by its certificate's subject) and the server
  (``verifier``);
- ``entity``: the signed bytes (``source``);
- ``signature``: the signature as received (its ``who`` named by the certificate's subject),
  carrying the ``signature-verification`` extension.

Its id and the Binary's come from the signed bytes and the signature, so a Bundle sent again
unchanged keeps the first proof (the earliest moment the server saw it).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.interactions.context import Services
from fhir_server.interactions.references import local_target
from fhir_server.search.indexing import compartment_patients
from fhir_server.security.audit import AuditNote
from fhir_server.signatures.verification import Verification, to_extension
from fhir_server.storage.port import StoreTransaction

__all__ = ["PROOF_SOURCE", "SELF", "Proof", "SignedBy", "is_proof", "keep"]

PROOF_SOURCE = "urn:fhir-server:signature-verification"
_ASTM = "urn:iso-astm:E1762-95:2013"
_AUTHOR = {"system": _ASTM, "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
#: ``Proof.source`` of bytes held by the written resource itself (a signed PDF's Binary).
SELF = "#self"


@dataclass(frozen=True)
class SignedBy:
    """One signature over a proof's bytes: the ``Signature`` element as received (or as
    built for an XML or PDF signature) and its verification."""

    element: dict[str, Any]
    verification: Verification


@dataclass(frozen=True)
class Proof:
    """Signed bytes and the signatures checked over them.

    ``content`` is kept as a Binary of ``content_type``; or ``source`` names the Binary that
    holds the bytes already (``content`` is then empty).
    """

    signatures: tuple[SignedBy, ...]
    content: bytes = b""
    content_type: str = "application/fhir+json"
    source: str | None = None

    @property
    def failures(self) -> list[SignedBy]:
        """The signatures that did not verify."""
        return [s for s in self.signatures if not s.verification.verified]


def is_proof(resource: dict[str, Any]) -> bool:
    """Whether a Provenance is one the server wrote to record a verification."""
    return (resource.get("meta") or {}).get("source") == PROOF_SOURCE


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"|".join(parts)).hexdigest()[:48]


def _targets(services: Services, written: Sequence[dict[str, Any]]) -> list[str]:
    found: dict[str, None] = {}
    for resource in written:
        found[f"{resource['resourceType']}/{resource['id']}"] = None
        if resource.get("resourceType") == "Provenance":
            for item in resource.get("target") or ():
                target = local_target(str((item or {}).get("reference", "")), services.base_url)
                if target is not None:
                    found["/".join(target)] = None
    for resource in written:
        for patient in sorted(compartment_patients(resource, services.registry)):
            found[f"Patient/{patient}"] = None
    return list(found)


def _signature(signed: SignedBy) -> dict[str, Any]:
    element = {k: v for k, v in signed.element.items() if k not in ("who", "extension")}
    verification = signed.verification
    element.setdefault("type", [_AUTHOR])
    element.setdefault("when", verification.signing_time or verification.verified_at)
    element["who"] = {"display": verification.signer or "unknown signer"}
    element["extension"] = [to_extension(verification)]
    return element


def _provenance(proof: Proof, id: str, source: str, targets: list[str]) -> dict[str, Any]:
    first = proof.signatures[0].verification
    provenance: dict[str, Any] = {
        "resourceType": "Provenance", "id": id, "meta": {"source": PROOF_SOURCE},
        "target": [{"reference": t} for t in targets],
        "recorded": first.verified_at,
        "agent": [
            {"type": {"coding": [{"system": _PARTICIPANT, "code": "attester"}]},
             "who": {"display": first.signer or "unknown signer"}},
            {"type": {"coding": [{"system": _PARTICIPANT, "code": "verifier"}]},
             "who": {"display": "fhir-server"}},
        ],
        "entity": [{"role": "source", "what": {"reference": source}}],
        "signature": [_signature(s) for s in proof.signatures],
    }  # fmt: skip
    if first.signing_time:
        provenance["occurredDateTime"] = first.signing_time
    return provenance


async def _create_absent(tx: StoreTransaction, services: Services, resource: dict[str, Any],
                         note: AuditNote) -> None:
    current = await tx.read(resource["resourceType"], resource["id"])
    if current is not None and not current.deleted:
        return
    stored = await tx.update(resource, services.index(resource))
    note.wrote(f"{resource['resourceType']}/{resource['id']}/_history/{stored.stored.version}",
               compartment_patients(resource, services.registry))


async def keep(tx: StoreTransaction, services: Services, proof: Proof,
               written: Sequence[dict[str, Any]], note: AuditNote) -> None:
    """Write the proof of ``proof`` about the ``written`` resources (as stored) in ``tx``."""
    if not proof.signatures:
        return
    targets = _targets(services, written)
    signatures = b"|".join(str(s.element.get("data", "")).encode() for s in proof.signatures)
    source = proof.source
    if source == SELF:
        source = f"{written[0]['resourceType']}/{written[0]['id']}"
    if source is None:
        binary_id = "sig-" + _digest(proof.content)
        patient = next((t for t in targets if t.startswith("Patient/")), targets[0])
        await _create_absent(tx, services, {
            "resourceType": "Binary", "id": binary_id, "contentType": proof.content_type,
            "securityContext": {"reference": patient},
            "data": base64.b64encode(proof.content).decode()}, note)
        source = f"Binary/{binary_id}"
    id = "sig-" + _digest(source.encode(), signatures, "|".join(targets).encode())
    await _create_absent(tx, services, _provenance(proof, id, source, targets), note)

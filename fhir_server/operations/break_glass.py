"""``Patient/[id]/$break-glass``: a clinician's or facility's emergency access to one
patient's record, without the patient's Consent (docs/consent.md, "Break-the-glass").

Vietnamese law lets health data be processed without consent in an emergency that threatens
the person's life or health (Decree 13/2023 Art. 17, Law 91/2025 Art. 19(1)); the controller
must be able to show it. So the access is asked for explicitly, with a reason (``POST`` with
a Parameters ``reason``, a string), and it is recorded as an emergency Consent the server
writes: ``active``, category v3 ActReason ``BTG``, the caller as the one actor, a period of
``break_glass_minutes`` (one hour by default) from now, and a permit for each sensitive label
(in an emergency the HIV status matters). Its id starts with ``btg-``. Until the period ends
the caller reads the patient's record as if the patient had consented; each of those reads is
audited with purpose ``BTG`` and names this Consent (``security.policy``), and the citizen's
access log (``$access-log``) marks them as emergency access. The request's own AuditEvent has
purpose ``BTG`` with the reason as its text. Written through the write path, the emergency
Consent fires the citizen's subscriptions to the ``emergency-access`` topic (in its
transaction, like any change).

The answer is the emergency Consent (201). Only a caller governed by Consent (a clinician, a
facility) breaks the glass: 403 for others, who read the record anyway or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.errors import BadRequest, Forbidden, NotFound
from fhir_server.interactions.context import Outcome, Services, new_id
from fhir_server.interactions.update import prepare_update
from fhir_server.interactions.write import run_write
from fhir_server.operations.parameters import OperationInput
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import SERVER, Caller
from fhir_server.security.policy import EMERGENCY_PREFIX, Access
from fhir_server.storage.port import StoredResource

__all__ = ["MAX_REASON_CHARS", "break_glass", "emergency_consent"]

MAX_REASON_CHARS = 500
_REASONS = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_SCOPES = "http://terminology.hl7.org/CodeSystem/consentscope"


async def break_glass(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Open the patient's record to the caller for ``break_glass_minutes``; answer the
    emergency Consent."""
    if access.consent is None:
        raise Forbidden("Break-the-glass is for clinicians and facilities, whose reading "
                        "Consent governs", message_id="MSG_BREAK_GLASS_NOT_NEEDED")
    reason = (call.value("reason") or "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise BadRequest(f"Break-the-glass needs a reason (1 to {MAX_REASON_CHARS} characters)",
                         message_id="MSG_BREAK_GLASS_REASON", expression=("reason",))
    patient = str(call.id)
    await _check_patient(services, patient)
    now = datetime.now(UTC)
    consent = emergency_consent(access.caller, patient, reason, now,
                                now + timedelta(minutes=services.sharing.break_glass_minutes),
                                sorted(services.sharing.sensitive))
    stored = await _record(services, consent)
    access.reason = reason  # for the request's AuditEvent, with the purpose BTG
    return Outcome(201, stored, body=stored.resource())


async def _check_patient(services: Services, patient: str) -> None:
    """404 unless the Patient exists (its record is what the caller asks for)."""
    try:
        await services.store.read("Patient", patient)
    except NotFound:
        raise NotFound(f"Patient/{patient} is not known", message_id="MSG_NO_EXIST") from None


async def _record(services: Services, consent: dict[str, Any]) -> StoredResource:
    """Store the emergency Consent as the server itself, audited as the server's write: the
    one place this module writes (to be sent through the router's door when jobs are)."""
    access = Access(SERVER, services.registry, sharing=services.sharing)
    write = prepare_update(services, access, "Consent", consent["id"], consent, None)
    outcome = await run_write(services, write, AuditNote("create"))
    assert outcome.stored is not None
    return outcome.stored


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _actor(caller: Caller) -> dict[str, Any]:
    """The caller as a Consent names it: its user, else its facility, else its client."""
    literal = caller.fhir_user or caller.organization
    if literal:
        return {"reference": literal}
    return {"identifier": {"system": "urn:fhir-server:client", "value": caller.client_id or
                           caller.subject}}


def emergency_consent(caller: Caller, patient: str, reason: str, start: datetime,
                      end: datetime, sensitive: list[str]) -> dict[str, Any]:
    """The emergency Consent of a break-the-glass by ``caller`` on ``patient``."""
    btg = {"system": _REASONS, "code": "BTG", "display": "break the glass"}
    labels = [dict(zip(("system", "code"), label.split("|", 1), strict=True))
              for label in sensitive]
    return {
        "resourceType": "Consent",
        "id": EMERGENCY_PREFIX + new_id(),
        "status": "active",
        "scope": {"coding": [{"system": _SCOPES, "code": "patient-privacy"}]},
        "category": [{"coding": [btg], "text": "Truy cập khẩn cấp (break-the-glass)"}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": _instant(start),
        "performer": [_actor(caller)],
        "policyRule": {"text": f"Emergency access: {reason}"},
        "provision": {
            "type": "permit",
            "period": {"start": _instant(start), "end": _instant(end)},
            "actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP"}]}, "reference": _actor(caller)}],
            "provision": [{"type": "permit", "securityLabel": [label]} for label in labels],
        },
    }

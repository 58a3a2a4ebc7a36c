"""``Patient/[id]/$access-log``: who saw or changed the citizen's record, in the form a
citizen app shows (docs/consent.md, "The access log").

Vietnamese law gives the person the right to know who processed their data (Law 91/2025
Art. 4); the audit log already holds one AuditEvent per access to each patient
(``AuditEvent?patient=Patient/[id]``). This operation reads those events, newest first, and
answers a ``Parameters`` with one ``access`` per event:

- ``when`` (instant), ``action`` (the interaction: ``read``, ``search-type``,
  ``$everything``, ``create``...), ``outcome`` (0 done, 4 refused);
- who: ``who`` (the user: a Practitioner, the citizen's Patient, or the token's subject as an
  identifier), ``facility`` (the Organization it acted for), ``app`` (the client id);
- ``what``: each resource it read or wrote;
- why: ``why`` (v3 ActReason: ``TREAT`` treatment, ``BTG`` emergency access with the reason
  as its display, ``PATRQT`` the citizen themself), ``emergency`` (true for break-the-glass),
  ``consent`` (each Consent that allowed it);
- ``event``: the AuditEvent.

``_count`` (default 50, at most 500) and ``_cursor`` (the ``next`` value of the previous
page) page through it. Views of the access log itself are left out. Only the citizen (a
token bound to the patient) and operators read it: a clinician or facility is answered 403.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Forbidden
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.history import parse_count
from fhir_server.interactions.read import read_resource
from fhir_server.operations.parameters import OperationInput
from fhir_server.search.model import (
    Clause,
    Modifier,
    ParamType,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
)
from fhir_server.security.policy import Access

__all__ = ["access_log"]

_OPERATION_SYSTEM = "urn:fhir-server:operation"
_OWN = "$access-log"
_PATIENT_ROLE = "1"
_QUERY_ROLE = "24"


async def access_log(services: Services, access: Access, call: OperationInput) -> Outcome:
    """One page of the accesses to the patient's record, newest first."""
    if access.consent is not None:
        raise Forbidden("The access log is the citizen's: only their own token or an operator "
                        "reads it", message_id="MSG_ACCESS_LOG_CITIZEN")
    patient = str(call.id)
    await read_resource(services, access, "Patient", patient)
    count = parse_count(call.value("_count"), 50, 500)
    result = await services.search(SearchQuery(
        "AuditEvent", clauses=(
            Clause("patient", ParamType.REFERENCE, (ReferenceValue("Patient", patient),)),
            Clause("subtype", ParamType.TOKEN, (TokenValue(_OPERATION_SYSTEM, _OWN),),
                   Modifier.NOT)),
        sort=(SortKey("date", descending=True),), count=count, cursor=call.value("_cursor")))
    parameters = [{"name": "access", "part": _parts(stored.resource())}
                  for stored in result.matches]
    if result.next_cursor:
        parameters.append({"name": "next", "valueString": result.next_cursor})
    return Outcome(200, body={"resourceType": "Parameters", "parameter": parameters})


def _parts(event: dict[str, Any]) -> list[dict[str, Any]]:
    agents = [a for a in event.get("agent") or () if isinstance(a, dict)]
    requestor = next((a for a in agents if a.get("requestor")), {})
    parts: list[dict[str, Any]] = [{"name": "when", "valueInstant": event.get("recorded")}]
    parts += [{"name": "action", "valueCode": c["code"]} for c in event.get("subtype") or ()
              if c.get("system") != _OPERATION_SYSTEM][:1] or [
        {"name": "action", "valueCode": str(event.get("action", "E"))}]
    parts.append({"name": "outcome", "valueCode": str(event.get("outcome", "0"))})
    if isinstance(requestor.get("who"), dict):
        parts.append({"name": "who", "valueReference": requestor["who"]})
    parts += [{"name": "facility", "valueReference": a["who"]} for a in agents
              if not a.get("requestor") and isinstance(a.get("who"), dict)]
    if requestor.get("altId"):
        parts.append({"name": "app", "valueString": requestor["altId"]})
    parts += [{"name": "what", "valueReference": e["what"]} for e in event.get("entity") or ()
              if isinstance(e.get("what"), dict)
              and (e.get("role") or {}).get("code") not in (_PATIENT_ROLE, _QUERY_ROLE)]
    parts += _why(event, requestor)
    parts.append({"name": "event", "valueReference": {
        "reference": f"AuditEvent/{event.get('id')}"}})
    return parts


def _why(event: dict[str, Any], requestor: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for purpose in event.get("purposeOfEvent") or ():
        for coding in purpose.get("coding") or ():
            why = dict(coding) | ({"display": purpose["text"]} if purpose.get("text") else {})
            parts.append({"name": "why", "valueCoding": why})
            parts.append({"name": "emergency", "valueBoolean": coding.get("code") == "BTG"})
    parts += [{"name": "consent", "valueReference": {"reference": policy}}
              for policy in requestor.get("policy") or ()]
    return parts

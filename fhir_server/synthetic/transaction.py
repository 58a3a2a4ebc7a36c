"""Transaction Bundle entries that follow the hospital push contract, so re-pushing is a no-op.

Patient and Organization are conditional creates on their national identifiers; the Encounter
and every other record of a visit are conditional updates on a stable business identifier.
See the FHIR R4 transaction rules: https://hl7.org/fhir/R4/http.html#trules
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SYNTHETIC_META", "RecordKey", "conditional_create", "conditional_update"]

Resource = dict[str, Any]

# HL7's marker for test data, so that synthetic records can never pass for real ones.
SYNTHETIC_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}
SYNTHETIC_META = {"tag": [SYNTHETIC_TAG]}


@dataclass(frozen=True, slots=True)
class RecordKey:
    """A business identifier: the system and value a conditional update matches on."""

    system: str
    value: str

    @property
    def identifier(self) -> Resource:
        """The key as a FHIR Identifier."""
        return {"system": self.system, "value": self.value}


def conditional_create(urn: str, resource: Resource, system: str, value: str) -> Resource:
    """`POST <type>` with `ifNoneExist: identifier=<system>|<value>`."""
    request = {
        "method": "POST",
        "url": resource["resourceType"],
        "ifNoneExist": f"identifier={system}|{value}",
    }
    return {"fullUrl": urn, "resource": resource, "request": request}


def conditional_update(urn: str, resource_type: str, key: RecordKey, body: Resource) -> Resource:
    """`PUT <type>?identifier=<system>|<value>`; the resource carries the same identifier."""
    resource: Resource = {"resourceType": resource_type, "meta": SYNTHETIC_META}
    resource["identifier"] = [key.identifier]
    resource.update(body)
    url = f"{resource_type}?identifier={key.system}|{key.value}"
    return {"fullUrl": urn, "resource": resource, "request": {"method": "PUT", "url": url}}

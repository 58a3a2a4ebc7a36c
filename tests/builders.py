"""Test data builders: the one place tests get FHIR resources from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.search.model import SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "valid"


@cache
def _registry() -> SearchParameterRegistry:
    return SearchParameterRegistry.load()


def criteria(resource_type: str, params: Sequence[tuple[str, str]]) -> SearchQuery:
    """The parsed search a conditional interaction would run (``StoreTransaction.find``)."""
    return parse_search(resource_type, list(params), _registry(), strict=True).query


def valid_example(resource_type: str) -> dict[str, Any]:
    """Return the project's valid example of ``resource_type`` (without id), as a new dict."""
    path = next(EXAMPLES.glob(f"{resource_type}-vn-*.json"))
    resource: dict[str, Any] = json.loads(path.read_text())
    resource.pop("id", None)
    return resource

CCCD_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/national_id"
BHYT_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/insurance_number"


def patient(
    cccd: str = "001090012345",
    family: str = "Nguyễn",
    given: str = "Văn An",
    gender: str = "male",
    birth_date: str = "1990-05-17",
    **extra: Any,
) -> dict[str, Any]:
    """Return a Vietnamese Patient with a CCCD identifier."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": CCCD_SYSTEM, "value": cccd}],
        "name": [{"family": family, "given": given.split(), "text": f"{family} {given}"}],
        "gender": gender,
        "birthDate": birth_date,
    }
    resource.update(extra)
    return resource


def observation(patient_ref: str = "Patient/p1", code: str = "8867-4",
                value: float = 72.0) -> dict[str, Any]:
    """Return a vital-sign Observation for ``patient_ref``."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": "2026-03-01T08:30:00+07:00",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }


_MINIMAL: dict[str, dict[str, Any]] = {
    "Patient": patient(),
    "Encounter": {"resourceType": "Encounter", "status": "finished",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "AMB"},
                  "subject": {"reference": "Patient/p1"},
                  "period": {"start": "2026-03-01T08:00:00+07:00"}},
    "DocumentReference": {"resourceType": "DocumentReference", "status": "current",
                          "content": [{"attachment": {"contentType": "application/pdf",
                                                      "data": "JVBERi0xLjQK"}}]},
    "Condition": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                       "code": "J06.9"}]}},
    "Observation": observation(),
    "MedicationRequest": {"resourceType": "MedicationRequest", "status": "active",
                          "intent": "order", "subject": {"reference": "Patient/p1"},
                          "medicationCodeableConcept": {"text": "Paracetamol 500mg"}},
    "Immunization": {"resourceType": "Immunization", "status": "completed",
                     "vaccineCode": {"text": "BCG"}, "patient": {"reference": "Patient/p1"},
                     "occurrenceDateTime": "2020-01-01"},
    "AllergyIntolerance": {"resourceType": "AllergyIntolerance",
                           "clinicalStatus": {"coding": [{
                               "system": "http://terminology.hl7.org/CodeSystem/"
                                         "allergyintolerance-clinical", "code": "active"}]},
                           "patient": {"reference": "Patient/p1"}, "code": {"text": "Penicillin"}},
    "Procedure": {"resourceType": "Procedure", "status": "completed",
                  "subject": {"reference": "Patient/p1"}},
    "DiagnosticReport": {"resourceType": "DiagnosticReport", "status": "final",
                         "code": {"text": "Công thức máu"}},
    "Organization": {"resourceType": "Organization", "name": "Bệnh viện Bạch Mai",
                     "identifier": [{"system": "http://fhir.ehealth.gov.vn/core/sid/provider-code",
                                     "value": "01929"}]},
    "Practitioner": {"resourceType": "Practitioner", "name": [{"text": "BS. Trần Thị Bình"}]},
    "PractitionerRole": {"resourceType": "PractitionerRole", "active": True},
    "Location": {"resourceType": "Location", "name": "Khoa Nội"},
    "Coverage": {"resourceType": "Coverage", "status": "active",
                 "beneficiary": {"reference": "Patient/p1"},
                 "payor": [{"display": "BHXH Việt Nam"}]},
    "Appointment": {"resourceType": "Appointment", "status": "booked",
                    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]},
    "Composition": {"resourceType": "Composition", "status": "final",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
                    "date": "2026-03-01", "author": [{"display": "fhir-server"}],
                    "title": "Sổ sức khỏe điện tử"},
    "Provenance": {"resourceType": "Provenance", "target": [{"reference": "Patient/p1"}],
                   "recorded": "2026-03-01T08:00:00+07:00",
                   "agent": [{"who": {"display": "Bệnh viện"}}]},
    "Consent": {"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system":
                                      "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"text": "privacy"}],
                "policyRule": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "OPTIN"}]}},
    "AuditEvent": {"resourceType": "AuditEvent",
                   "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110110"},
                   "recorded": "2026-03-01T08:00:00+07:00",
                   "agent": [{"requestor": True, "who": {"display": "app"}}],
                   "source": {"observer": {"display": "fhir-server"}}},
    "Binary": {"resourceType": "Binary", "contentType": "application/pdf",
               "data": "JVBERi0xLjQK"},
}


#: One valid resource of each type of the health book (Vietnamese examples where profiled).
HEALTH_BOOK_RESOURCES: dict[str, dict[str, Any]] = {
    name: (valid_example(name) if any(EXAMPLES.glob(f"{name}-vn-*.json")) else minimal)
    for name, minimal in _MINIMAL.items()
}

"""A visit as one FHIR transaction Bundle: Patient, Organization, Encounter and its records.

Entry order: Patient, Organization, Encounter, Conditions, Observations, MedicationRequests,
DocumentReference. References between entries use the entries' `urn:uuid:` fullUrls.
"""

from __future__ import annotations

import random
from typing import Any

from fhir_server.synthetic.clinical import (
    condition_entries,
    draw_diagnoses,
    medication_entries,
    observation_entries,
)
from fhir_server.synthetic.documents import document_entry
from fhir_server.synthetic.identifiers import ma_lk_system
from fhir_server.synthetic.systems import (
    DISCHARGE_TYPE_SYSTEM,
    FACILITY_SYSTEM,
    NATIONAL_ID_SYSTEM,
    V3_ACT_CODE_SYSTEM,
    VISIT_TYPE_SYSTEM,
)
from fhir_server.synthetic.transaction import RecordKey, conditional_create, conditional_update
from fhir_server.synthetic.visit import Visit
from fhir_server.synthetic.weighted import WeightedChoice

__all__ = ["visit_bundle"]

Resource = dict[str, Any]

_ACT_DISPLAY = {"AMB": "ambulatory", "IMP": "inpatient encounter"}
# MA_LOAI_RV (VIETNAM.md §3.2); most inpatients are simply discharged.
_DISCHARGE = WeightedChoice.of([
    (("1", "Ra viện"), 85), (("2", "Chuyển tuyến theo yêu cầu chuyên môn"), 5),
    (("3", "Trốn viện"), 1), (("4", "Xin ra viện"), 7),
    (("5", "Chuyển tuyến theo yêu cầu người bệnh"), 2),
])  # fmt: skip


def _encounter(rng: random.Random, visit: Visit, condition_urns: list[str]) -> Resource:
    kind = visit.visit_type
    body: Resource = {
        "status": "finished",
        "class": {"system": V3_ACT_CODE_SYSTEM, "code": kind.act_code,
                  "display": _ACT_DISPLAY[kind.act_code]},
        "type": [{"coding": [{"system": VISIT_TYPE_SYSTEM, "code": kind.code,
                              "display": kind.display}]}],
        "subject": {"reference": visit.patient.urn},
        "period": {"start": visit.start.isoformat(), "end": visit.end.isoformat()},
        "diagnosis": [{"condition": {"reference": urn}, "rank": rank}
                      for rank, urn in enumerate(condition_urns, start=1)],
        "serviceProvider": {"reference": visit.facility.urn},
    }  # fmt: skip
    if kind.inpatient:
        code, display = _DISCHARGE.draw(rng)
        disposition = {"system": DISCHARGE_TYPE_SYSTEM, "code": code, "display": display}
        body["hospitalization"] = {"dischargeDisposition": {"coding": [disposition]}}
    key = RecordKey(ma_lk_system(visit.facility.code), visit.ma_lk)
    return conditional_update(visit.encounter_urn, "Encounter", key, body)


def visit_bundle(rng: random.Random, visit: Visit) -> Resource:
    """The transaction Bundle that pushes one visit; pushing it twice changes nothing."""
    patient, facility = visit.patient, visit.facility
    diagnoses = draw_diagnoses(rng)
    conditions = condition_entries(rng, visit, diagnoses)
    condition_urns = [entry["fullUrl"] for entry in conditions]
    entries = [
        conditional_create(patient.urn, patient.resource, NATIONAL_ID_SYSTEM, patient.cccd),
        conditional_create(facility.urn, facility.resource, FACILITY_SYSTEM, facility.code),
        _encounter(rng, visit, condition_urns),
        *conditions,
        *observation_entries(rng, visit),
        *medication_entries(rng, visit, diagnoses, condition_urns),
        document_entry(rng, visit),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

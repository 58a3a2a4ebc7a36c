"""``Encounter/[id]/$document``: the document Bundle of one visit (the per-visit download).

The Composition (LOINC 34133-9, summary of an episode) is about the visit's Patient, names
the Encounter, and has sections for the visit itself, its diagnoses, prescriptions, results,
measurements, procedures and papers. The Bundle holds everything that refers to the Encounter
(found in the Patient's compartment, set-wise), the Patient, the facility and the doctors.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read
from fhir_server.operations.everything import (
    compartment_resources,
    display_resources,
    references_of,
)
from fhir_server.operations.narrative import Lookup, problem_table, vn_date
from fhir_server.operations.parameters import OperationInput
from fhir_server.operations.summary import (
    SECTIONS,
    Section,
    build_sections,
    composition,
    document_bundle,
    signed,
)
from fhir_server.security.policy import Access

__all__ = ["VISIT_SECTIONS", "encounter_document"]

VISIT_TYPE = ("34133-9", "Summary of episode note")
_FROM_SUMMARY = ("medications", "results", "vital-signs", "procedures", "documents",
                 "signatures")
VISIT_SECTIONS: tuple[Section, ...] = (
    Section("visit", "46240-8", "History of Hospitalizations+Outpatient visits Narrative",
            "Thông tin lượt khám", lambda r: r.get("resourceType") == "Encounter",
            SECTIONS[1].render),
    Section("diagnoses", "29548-5", "Diagnosis Narrative", "Chẩn đoán",
            lambda r: r.get("resourceType") == "Condition", problem_table),
    *(s for s in SECTIONS if s.key in _FROM_SUMMARY),
)  # fmt: skip


def _patient_id(encounter: dict[str, Any]) -> str:
    reference = str((encounter.get("subject") or {}).get("reference", ""))
    kind, _, id = reference.partition("/")
    if kind != "Patient" or not id:
        raise NotFound(
            "The visit has no Patient",
            message_id="MSG_ENCOUNTER_NO_PATIENT",
            expression=("Encounter.subject",),
        )
    return id


async def encounter_document(
    services: Services, access: Access, call: OperationInput
) -> Outcome:
    """Run ``$document`` on an Encounter: the visit's document Bundle (of what the caller may
    see)."""
    found = (await read(services, access, "Encounter", str(call.id))).stored
    assert found is not None
    encounter = found.resource()
    key = ("Encounter", encounter["id"])
    stored = await compartment_resources(services, access, _patient_id(encounter))
    part = [s for s in stored if (s.resource_type == "Encounter" and s.id == encounter["id"])
            or key in set(references_of(s.resource()))]  # fmt: skip
    patients = [s for s in stored if s.resource_type == "Patient"]
    part += await display_resources(services, access, part)
    resources = [s.resource() for s in [*part, *patients]]
    lookup = Lookup(services.base_url, resources)
    patient = lookup.get(f"Patient/{_patient_id(encounter)}") or {}
    sections = [
        s
        for s in build_sections(resources, lookup, VISIT_SECTIONS)
        if "entry" in s or s["code"]["coding"][0]["code"] == "46240-8"
    ]
    doc = composition(patient, lookup, VISIT_TYPE, _title(encounter, lookup), sections)
    doc["encounter"] = {"reference": lookup.url(encounter)}
    cited = [patient, *(r for s in sections for e in s.get("entry", [])
                        if (r := lookup.by_url(e["reference"])))]  # fmt: skip
    bundle = document_bundle(doc, cited + lookup.referenced(cited), lookup)
    return Outcome(200, body=signed(services, bundle))


def _title(encounter: dict[str, Any], lookup: Lookup) -> str:
    start = vn_date((encounter.get("period") or {}).get("start"), with_time=False)
    facility = lookup.name(encounter.get("serviceProvider"))
    return " — ".join(p for p in ("Tóm tắt lượt khám", start, facility) if p)

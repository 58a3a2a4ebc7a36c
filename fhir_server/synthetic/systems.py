"""Canonical URLs used by the generated resources: identifier systems, code systems, extensions.

The `https://fhir.sskdt.vn/...` ones are this project's; the `http://fhir.ehealth.gov.vn/...`
ones follow the MoH IG (VIETNAM.md §1.1); the rest are HL7's.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE_INGREDIENT_SYSTEM",
    "CONDITION_CATEGORY_SYSTEM",
    "CONDITION_CLINICAL_SYSTEM",
    "CONDITION_VERIFICATION_SYSTEM",
    "DISCHARGE_TYPE_SYSTEM",
    "ETHNICITY_EXTENSION",
    "ETHNIC_GROUP_SYSTEM",
    "FACILITY_SYSTEM",
    "ICD10_SYSTEM",
    "IDENTIFIER_TYPE_SYSTEM",
    "INSURANCE_SYSTEM",
    "LOINC_SYSTEM",
    "NATIONAL_ID_SYSTEM",
    "OBSERVATION_CATEGORY_SYSTEM",
    "ORGANIZATION_TYPE_SYSTEM",
    "PROVINCE_CODE_EXTENSION",
    "UCUM_SYSTEM",
    "V3_ACT_CODE_SYSTEM",
    "VISIT_TYPE_SYSTEM",
]

NATIONAL_ID_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/national_id"
INSURANCE_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/insurance_number"
FACILITY_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"

ETHNICITY_EXTENSION = "https://fhir.sskdt.vn/StructureDefinition/patient-ethnicity"
PROVINCE_CODE_EXTENSION = "https://fhir.sskdt.vn/StructureDefinition/address-province-code"
ETHNIC_GROUP_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/ethnic-group"
VISIT_TYPE_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/visit-type"
DISCHARGE_TYPE_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/discharge-type"
ACTIVE_INGREDIENT_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/active-ingredient"

ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
ORGANIZATION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/organization-type"
V3_ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"

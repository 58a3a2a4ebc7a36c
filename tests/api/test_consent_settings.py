"""The deployment's Consent switches (docs/consent.md): its own labelling rules, Consent
off, and national operators that read only under a research Consent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.api.two_patients import FHIR, privacy_consent
from tests.conftest import token_for

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


async def test_a_deployment_configures_labels_and_consent(
    client_with: Any, tmp_path: Path, settings: Any
) -> None:
    rules = {"elements": ["code"], "labels": [{
        "label": {"system": V3, "code": "ETH", "display": "substance abuse"},
        "codes": [{"system": "http://hl7.org/fhir/sid/icd-10", "prefixes": ["F10"]}]}]}
    (tmp_path / "labels.json").write_text(json.dumps(rules))
    http = await client_with(consent_labels_file=tmp_path / "labels.json",
                             referential_integrity=False)
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                 "category": [{"coding": [{
                     "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                     "code": "encounter-diagnosis"}]}],
                 "code": {"coding": [{"system": ICD10, "code": "F10.2"}]}}
    stored = await http.post("/fhir/Condition", json=condition, headers=FHIR)
    assert stored.status_code == 201, stored.text
    assert [s["code"] for s in stored.json()["meta"]["security"]] == ["ETH"]
    doctor = {"Authorization": "Bearer " + token_for(
        settings, "user/*.rs", organization="Organization/elsewhere")}
    path = f"/fhir/Condition/{stored.json()['id']}"
    assert (await http.get(path, headers=doctor)).status_code == 404
    open_http = await client_with(consent_enforced=False, referential_integrity=False)
    copied = await open_http.post("/fhir/Condition", json=condition, headers=FHIR)
    copied_path = f"/fhir/Condition/{copied.json()['id']}"
    assert (await open_http.get(copied_path, headers=doctor)).status_code == 200


async def test_an_operator_named_for_secondary_use_reads_under_a_research_consent(
    client_with: Any, settings: Any
) -> None:
    http = await client_with(consent_secondary_use_clients=["thong-ke"],
                             referential_integrity=False, validation="off")
    research = {"Authorization": "Bearer " + token_for(settings, "system/*.rs",
                                                        client_id="thong-ke")}
    lab = {"resourceType": "Observation", "status": "final",
           "subject": {"reference": "Patient/p9"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}}
    stored = (await http.post("/fhir/Observation", json=lab, headers=FHIR)).json()
    path = f"/fhir/Observation/{stored['id']}"
    assert (await http.get(path, headers=research)).status_code == 404
    consent = privacy_consent("Patient/p9", None)
    consent["scope"]["coding"][0]["code"] = "research"
    assert (await http.post("/fhir/Consent", json=consent, headers=FHIR)).status_code == 201
    assert (await http.get(path, headers=research)).status_code == 200
    privacy = privacy_consent("Patient/p9", None)  # a privacy Consent is not for research
    other = (await http.post("/fhir/Observation", json={
        **lab, "subject": {"reference": "Patient/p8"}}, headers=FHIR)).json()
    await http.post("/fhir/Consent", json={**privacy, "patient": {"reference": "Patient/p8"}},
                    headers=FHIR)
    other_path = f"/fhir/Observation/{other['id']}"
    assert (await http.get(other_path, headers=research)).status_code == 404

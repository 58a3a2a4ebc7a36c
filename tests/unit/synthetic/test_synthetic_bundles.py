"""Each visit Bundle: the push contract, references, R4B validity, and clinical content."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhir_server.synthetic.systems import FACILITY_SYSTEM, NATIONAL_ID_SYSTEM

Resource = dict[str, Any]
BundleFactory = Callable[..., list[Resource]]

UUID_URN = re.compile(
    r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
LOCAL_TIME = re.compile(r"^20(2[0-6])-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00$")
MINISTRY_DOSAGE = re.compile(r"^\d+ [^ /]+/lần \* \d+ lần/ngày \* \d+ ngày$")


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference":
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _entries(bundle: Resource, resource_type: str) -> list[Resource]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _ma_lk(bundle: Resource) -> tuple[str, str]:
    identifier = _entries(bundle, "Encounter")[0]["resource"]["identifier"][0]
    return identifier["system"], identifier["value"]


def test_every_bundle_is_a_transaction_in_the_documented_entry_order(
    make_bundles: BundleFactory,
) -> None:
    order = ["Patient", "Organization", "Encounter", "Condition", "Observation",
             "MedicationRequest", "DocumentReference"]  # fmt: skip
    for bundle in make_bundles():
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        types = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert types == sorted(types, key=order.index)
        singles = ("Patient", "Organization", "Encounter", "DocumentReference")
        assert all(types.count(t) == 1 for t in singles)
        assert 1 <= types.count("Condition") <= 3 and 2 <= types.count("Observation") <= 5
        assert 1 <= types.count("MedicationRequest") <= 3


def test_patient_entry_is_a_conditional_create_on_the_cccd(make_bundles: BundleFactory) -> None:
    for bundle in make_bundles():
        entry = bundle["entry"][0]
        identifiers = entry["resource"]["identifier"]
        cccd = next(i["value"] for i in identifiers if i["system"] == NATIONAL_ID_SYSTEM)
        assert entry["request"] == {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier={NATIONAL_ID_SYSTEM}|{cccd}",
        }


def test_organization_entry_is_a_conditional_create_on_the_facility_code(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles():
        entry = bundle["entry"][1]
        code = entry["resource"]["identifier"][0]["value"]
        assert entry["request"] == {
            "method": "POST",
            "url": "Organization",
            "ifNoneExist": f"identifier={FACILITY_SYSTEM}|{code}",
        }


def test_encounter_entry_is_a_conditional_update_on_ma_lk(make_bundles: BundleFactory) -> None:
    seen: set[str] = set()
    for bundle in make_bundles(60):
        facility = bundle["entry"][1]["resource"]["identifier"][0]["value"]
        entry = _entries(bundle, "Encounter")[0]
        system, value = _ma_lk(bundle)
        assert system == f"https://fhir.sskdt.vn/sid/ma-lk/{facility}"
        assert value.startswith(facility) and value not in seen
        seen.add(value)
        url = f"Encounter?identifier={system}|{value}"
        assert entry["request"] == {"method": "PUT", "url": url}


def test_other_records_are_conditional_updates_on_numbered_record_identifiers(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles():
        facility = bundle["entry"][1]["resource"]["identifier"][0]["value"]
        _, ma_lk = _ma_lk(bundle)
        for entry in bundle["entry"][3:]:
            resource_type = entry["resource"]["resourceType"]
            number = _entries(bundle, resource_type).index(entry) + 1
            identifier = entry["resource"]["identifier"]
            system = f"https://fhir.sskdt.vn/sid/record/{facility}"
            value = f"{ma_lk}/{resource_type}/{number}"
            assert identifier == [{"system": system, "value": value}]
            url = f"{resource_type}?identifier={system}|{value}"
            assert entry["request"] == {"method": "PUT", "url": url}


def test_full_urls_are_uuid_urns_and_every_reference_resolves_inside_the_bundle(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles():
        full_urls = [e["fullUrl"] for e in bundle["entry"]]
        assert len(set(full_urls)) == len(full_urls)
        assert all(UUID_URN.match(url) for url in full_urls)
        references = list(_references(bundle["entry"]))
        assert references and set(references) <= set(full_urls)


def test_bundles_and_every_resource_validate_with_the_r4b_models(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles(15):
        get_fhir_model_class("Bundle").model_validate(bundle)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_encounter_has_visit_type_class_period_and_ranked_diagnoses(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles(40):
        encounter = _entries(bundle, "Encounter")[0]["resource"]
        visit_type = encounter["type"][0]["coding"][0]
        assert visit_type["system"] == "https://fhir.sskdt.vn/CodeSystem/visit-type"
        assert re.fullmatch(r"0[1-9]|10", visit_type["code"])
        inpatient = encounter["class"]["code"] == "IMP"
        assert encounter["class"]["code"] in ("AMB", "IMP") and encounter["status"] == "finished"
        assert ("hospitalization" in encounter) == inpatient
        if inpatient:
            disposition = encounter["hospitalization"]["dischargeDisposition"]["coding"][0]
            assert disposition["system"] == "https://fhir.sskdt.vn/CodeSystem/discharge-type"
            assert disposition["code"] in {"1", "2", "3", "4", "5"}
        conditions = [e["fullUrl"] for e in _entries(bundle, "Condition")]
        ranked = [(d["condition"]["reference"], d["rank"]) for d in encounter["diagnosis"]]
        assert ranked == [(urn, rank) for rank, urn in enumerate(conditions, start=1)]
        assert encounter["serviceProvider"]["reference"] == bundle["entry"][1]["fullUrl"]


def test_times_lie_between_2020_and_now_in_vietnam_time(make_bundles: BundleFactory) -> None:
    for bundle in make_bundles(40):
        period = _entries(bundle, "Encounter")[0]["resource"]["period"]
        assert LOCAL_TIME.match(period["start"]) and LOCAL_TIME.match(period["end"])
        assert "2020-01-01" <= period["start"] < period["end"] < "2026-06-30"
        for entry in _entries(bundle, "Observation"):
            assert period["start"] <= entry["resource"]["effectiveDateTime"] <= period["end"]


def test_conditions_are_icd10_encounter_diagnoses(make_bundles: BundleFactory) -> None:
    for bundle in make_bundles():
        for entry in _entries(bundle, "Condition"):
            condition = entry["resource"]
            coding = condition["code"]["coding"][0]
            assert coding["system"] == "http://hl7.org/fhir/sid/icd-10"
            assert re.fullmatch(r"[A-Z]\d\d(\.\d{1,2})?", coding["code"]) and coding["display"]
            assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"


def test_observations_are_vital_signs_or_laboratory_with_ucum_quantities(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles():
        for entry in _entries(bundle, "Observation"):
            observation = entry["resource"]
            category = observation["category"][0]["coding"][0]["code"]
            assert category in ("vital-signs", "laboratory")
            quantities = [c["valueQuantity"] for c in observation.get("component", [])]
            quantities += [observation["valueQuantity"]] if "valueQuantity" in observation else []
            assert quantities and all(
                q["system"] == "http://unitsofmeasure.org" and q["value"] > 0 for q in quantities
            )


def test_medication_requests_use_the_ministry_dosage_wording(make_bundles: BundleFactory) -> None:
    for bundle in make_bundles():
        for entry in _entries(bundle, "MedicationRequest"):
            request = entry["resource"]
            assert request["intent"] == "order" and request["status"] in ("active", "completed")
            coding = request["medicationCodeableConcept"]["coding"][0]
            assert coding["system"] == "https://fhir.sskdt.vn/CodeSystem/active-ingredient"
            assert MINISTRY_DOSAGE.match(request["dosageInstruction"][0]["text"])


def test_document_is_a_pdf_whose_size_and_hash_match_its_data(
    make_bundles: BundleFactory,
) -> None:
    for bundle in make_bundles():
        document = _entries(bundle, "DocumentReference")[0]["resource"]
        assert document["type"]["coding"][0]["code"] in ("18842-5", "34133-9")
        attachment = document["content"][0]["attachment"]
        data = base64.b64decode(attachment["data"])
        assert attachment["contentType"] == "application/pdf" and data.startswith(b"%PDF-")
        assert attachment["size"] == len(data)
        assert base64.b64decode(attachment["hash"]) == hashlib.sha1(data).digest()
        assert _ma_lk(bundle)[1].encode() in data

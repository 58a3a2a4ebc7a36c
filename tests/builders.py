"""Test data builders: the one place tests get FHIR resources (and XML 130 envelopes) from."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.bridges.xml130.envelope import encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import load_standard
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


_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


def _noted_observation(patient_ref: str, category: str, code: str, marker: str,
                       **extra: Any) -> dict[str, Any]:
    resource = observation(patient_ref, code=code)
    resource["category"] = [{"coding": [{"system": _CATEGORY, "code": category}]}]
    resource["note"] = [{"text": marker}]
    resource.update(extra)
    return resource


def _without(resource: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in names}


def _discharge_paper(subject: dict[str, str], refs: dict[str, str],
                     identifier: list[dict[str, str]], marker: str) -> dict[str, Any]:
    paper = copy.deepcopy(HEALTH_BOOK_RESOURCES["DocumentReference"])
    facility = {"reference": refs["org"]}
    paper.update(subject=subject, author=[facility], custodian=facility, description=marker,
                 identifier=identifier)
    paper["context"]["encounter"] = [{"reference": refs["encounter"]}]
    paper["content"][0]["attachment"]["url"] = refs["binary"]
    return paper


def patient_record(patient_ref: str, refs: dict[str, str], visit: str,
                   marker: str) -> dict[str, dict[str, Any]]:
    """Return one patient's record by role, without ids: a visit (``encounter``) at the facility
    ``refs["org"]`` with the doctor ``refs["dr"]``, a ``lab`` and a ``vital`` Observation, a
    ``condition``, a ``medication``, a discharge paper (``document``) whose PDF is the ``binary``
    (``securityContext``: the patient), and ``gone``, an Observation meant to be deleted.

    ``refs`` also names the ``encounter`` and ``binary`` references. Identifiers are
    ``visit``-based (the visit id ``ma-lk`` and the facility's record numbers); every resource
    carries ``marker`` in free text, so a test can tell whether any of it left the server.
    """
    record = "https://fhir.sskdt.vn/sid/record/01929"

    def ident(system: str, value: str) -> list[dict[str, str]]:
        return [{"system": system, "value": value}]

    subject, visit_ref = {"reference": patient_ref}, {"reference": refs["encounter"]}
    doctor = {"reference": refs["dr"]}
    return {
        "encounter": {**_MINIMAL["Encounter"], "subject": subject, "type": [{"coding": [{
                          "system": "https://fhir.sskdt.vn/CodeSystem/visit-type",
                          "code": "01", "display": "Khám bệnh"}]}],
                      "identifier": ident("https://fhir.sskdt.vn/sid/ma-lk/01929", visit),
                      "serviceProvider": {"reference": refs["org"]},
                      "participant": [{"individual": doctor}], "reasonCode": [{"text": marker}]},
        "lab": _noted_observation(patient_ref, "laboratory", "718-7", marker,
                                  identifier=ident(record, f"{visit}/Observation/1"),
                                  encounter=visit_ref, performer=[doctor]),
        "vital": _noted_observation(patient_ref, "vital-signs", "8867-4", marker,
                                    identifier=ident(record, f"{visit}/Observation/2"),
                                    encounter=visit_ref),
        "condition": {**_MINIMAL["Condition"], "subject": subject, "encounter": visit_ref,
                      "category": [{"coding": [{"system": _CONDITION_CATEGORY,
                                                "code": "encounter-diagnosis"}]}],
                      "identifier": ident(record, f"{visit}/Condition/1"),
                      "note": [{"text": marker}]},
        "medication": {**_without(HEALTH_BOOK_RESOURCES["MedicationRequest"],
                                  "reasonReference"),
                       "subject": subject, "encounter": visit_ref, "requester": doctor,
                       "identifier": ident(record, f"{visit}/MedicationRequest/1"),
                       "note": [{"text": marker}]},
        "document": _discharge_paper(subject, refs, ident(record, f"{visit}/DocumentReference/1"),
                                     marker),
        "binary": {**_MINIMAL["Binary"], "securityContext": subject,
                   "data": base64.b64encode(f"%PDF-1.4 {marker}".encode()).decode()},
        "gone": _noted_observation(patient_ref, "vital-signs", "8310-5", marker,
                                   identifier=ident(record, f"{visit}/Observation/3")),
    }


# -- XML 130: one small visit of facility 01001 ---------------------------------------------

MA_LK = "01001202101310000001"
FACILITY = "01001"


def xml1(**changes: str) -> dict[str, str]:
    """An inpatient visit summary (XML1) of facility 01001."""
    record = {
        "MA_LK": MA_LK, "STT": "1", "MA_BN": "BN001", "HO_TEN": "Nguyễn Văn An",
        "SO_CCCD": "001090012345", "NGAY_SINH": "199005170000", "GIOI_TINH": "1",
        "MA_QUOCTICH": "000", "MA_DANTOC": "01", "MA_NGHE_NGHIEP": "00000",
        "DIA_CHI": "Số 1 Lê Lợi, Phường Hoàn Kiếm, Thành phố Hà Nội", "MATINH_CU_TRU": "01",
        "MAXA_CU_TRU": "00070", "DIEN_THOAI": "0912345678", "MA_THE_BHYT": "DN4010123456789",
        "MA_DKBD": "01001", "GT_THE_TU": "20210101", "GT_THE_DEN": "20211231",
        "LY_DO_VV": "Sốt cao, ho", "CHAN_DOAN_VAO": "Viêm phổi", "CHAN_DOAN_RV": "Viêm phổi",
        "MA_BENH_CHINH": "J18.9", "MA_BENH_KT": "I10", "MA_DOITUONG_KCB": "1.1",
        "NGAY_VAO": "202101310800", "NGAY_VAO_NOI_TRU": "202101310900",
        "NGAY_RA": "202102031000", "SO_NGAY_DTRI": "4", "PP_DIEU_TRI": "Kháng sinh",
        "KET_QUA_DTRI": "1", "MA_LOAI_RV": "1", "GHI_CHU": "Tái khám sau 1 tuần",
        "T_THUOC": "125000", "T_TONGCHI_BV": "525000", "NAM_QT": "2021", "THANG_QT": "2",
        "MA_LOAI_KCB": "03", "MA_KHOA": "K01", "MA_CSKCB": FACILITY, "MA_KHUVUC": "",
        "CAN_NANG": "62.5", "NGAY_TAI_KHAM": "20210210", "MA_HSBA": "HS0001",
        "MA_TTDV": "0101234567",
    }
    record.update(changes)
    return record


def xml2(stt: int = 1, **changes: str) -> dict[str, str]:
    """One drug row (XML2)."""
    record = {
        "MA_LK": MA_LK, "STT": str(stt), "MA_THUOC": "2.12", "MA_NHOM": "4",
        "TEN_THUOC": "Paracetamol", "DON_VI_TINH": "viên", "HAM_LUONG": "500mg",
        "DUONG_DUNG": "1.01", "LIEU_DUNG": "2 viên/lần * 2 lần/ngày * 5 ngày",
        "SO_LUONG": "20", "DON_GIA": "500", "THANH_TIEN_BV": "10000",
        "MA_BAC_SI": "000123/HNO-CCHN", "NGAY_YL": "202101310830",
    }
    record.update(changes)
    return record


def xml4(stt: int = 1, **changes: str) -> dict[str, str]:
    """One result row (XML4)."""
    record = {"MA_LK": MA_LK, "STT": str(stt), "MA_DICH_VU": "23.0075", "MA_CHI_SO": "GLU",
              "TEN_CHI_SO": "Glucose", "GIA_TRI": "5.6", "DON_VI_DO": "mmol/L",
              "NGAY_KQ": "202101310930", "MA_BS_DOC_KQ": "0101000001"}
    record.update(changes)
    return record


def table_xml(table: str, records: list[dict[str, str]], standard: str = "4750") -> bytes:
    """The XML of one table."""
    definition = load_standard(standard).tables[table]
    assert definition.shape is not None
    return encode_table(definition.shape, records, list(definition.facts))


def envelope(*visits: dict[str, Any], facility: str = FACILITY, standard: str = "4750",
             created: str = "20210204") -> bytes:
    """An unsigned envelope; each visit maps table names to lists of records."""
    return encode_envelope(facility, created, [
        [(name, table_xml(name, rows, standard)) for name, rows in visit.items()]
        for visit in visits
    ])


def visit(**tables: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """The tables of one visit: XML1 by default, with any others given."""
    return {"XML1": [xml1()], "XML2": [xml2()], "XML4": [xml4()], **tables}

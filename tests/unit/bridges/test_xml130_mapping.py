"""Mapping unit tests per table and per standard: XML -> FHIR, and back for every field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhir_server.bridges.xml130.engine import Mapped, map_tables, unmap_tables
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.bridges.xml130.transaction import VisitKeys, _urn
from tests import builders as b

MA_LK, FACILITY = b.MA_LK, b.FACILITY


def _map(tables: dict[str, list[dict[str, str]]], standard: str = "4750") -> Mapped:
    return map_tables(load_standard(standard), tables, FACILITY)


def _one(mapped: Mapped, role: str) -> dict[str, Any]:
    found = [i.resource for i in mapped.instances if i.role == role]
    assert len(found) == 1, role
    return found[0]


def _round_trip(tables: dict[str, list[dict[str, str]]], standard: str = "4750") -> None:
    definition = load_standard(standard)
    mapped = _map(tables, standard)
    assert [i for i in mapped.issues if i.severity == "error"] == []
    back = unmap_tables(definition, mapped.instances, MA_LK, FACILITY)
    for name, rows in tables.items():
        for sent, got in zip(rows, back[name], strict=True):
            for field, value in sent.items():
                if definition.tables[name].rules[field].mapped:
                    assert got[field] == value, f"{name}.{field}"


def test_xml1_makes_patient_encounter_coverage_conditions() -> None:
    mapped = _map({"XML1": [b.xml1(MA_BENH_KT="I10;E11.9", MA_BENH_YHCT="U50.1;U51.2;U52.3")]})
    patient, encounter = _one(mapped, "patient"), _one(mapped, "encounter")
    assert patient["gender"] == "male" and patient["birthDate"] == "1990-05-17"
    assert {"system": "http://fhir.ehealth.gov.vn/core/sid/national_id",
            "value": "001090012345"}.items() <= patient["identifier"][1].items()
    assert patient["name"][0] == {"use": "official", "text": "Nguyễn Văn An",
                                  "family": "Nguyễn", "given": ["Văn", "An"]}
    assert encounter["type"][0]["coding"][0]["code"] == "03"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["period"] == {"start": "2021-01-31T08:00:00+07:00",
                                   "end": "2021-02-03T10:00:00+07:00"}
    assert encounter["classHistory"][0]["period"]["start"] == "2021-01-31T09:00:00+07:00"
    assert encounter["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "1"
    coverage = _one(mapped, "coverage")
    assert coverage["subscriberId"] == "DN4010123456789"
    assert coverage["period"] == {"start": "2021-01-01", "end": "2021-12-31"}
    conditions = [i.resource for i in mapped.instances if i.resource["resourceType"] == "Condition"]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["J18.9", "I10", "E11.9"]
    assert [c["code"]["coding"][1]["code"] for c in conditions] == ["U50.1", "U51.2", "U52.3"]


def test_xml1_round_trip_with_several_cards_and_codes() -> None:
    _round_trip({"XML1": [b.xml1(MA_THE_BHYT="DN4010123456789;GD4010123456780",
                                 MA_DKBD="01001;01002", GT_THE_TU="20210101;20210601",
                                 GT_THE_DEN="20210531;20211231", MA_BENH_KT="I10;E11.9",
                                 MA_BENH_YHCT="U50.1;U51.2", MA_KHOA="K01;K02",
                                 NGAY_TAI_KHAM="20210210;20210301", MA_TAI_NAN="1",
                                 MA_NOI_DI="01101", MA_NOI_DEN="79001", GIAY_CHUYEN_TUYEN="12/GCT",
                                 MAHUYEN_CU_TRU="001", CAN_NANG_CON="3200;3100",
                                 MA_PTTT_QT="96.04")]})


def test_financial_fields_leave_no_trace() -> None:
    mapped = _map({"XML1": [b.xml1(T_THUOC="987654321")]})
    assert "987654321" not in repr([i.resource for i in mapped.instances])


def test_xml2_is_a_medication_request_with_its_dosage() -> None:
    request = _one(_map({"XML1": [b.xml1()], "XML2": [b.xml2()]}), "medication")
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "2.12"
    assert request["dosageInstruction"][0]["text"] == "2 viên/lần * 2 lần/ngày * 5 ngày"
    assert request["dispenseRequest"]["quantity"] == {"unit": "viên", "value": 20}
    assert request["authoredOn"] == "2021-01-31T08:30:00+07:00"
    assert request["requester"]["identifier"]["value"] == "000123/HNO-CCHN"
    assert {"text": "Hàm lượng: 500mg"} in request["note"]


def test_xml3_is_a_procedure_with_performers_and_reasons() -> None:
    row = {"MA_LK": MA_LK, "STT": "1", "MA_DICH_VU": "02.1896", "TEN_DICH_VU": "Khám bệnh",
           "MA_PTTT_QT": "89.03;89.04", "MA_VAT_TU": "N03.01", "TEN_VAT_TU": "Bơm tiêm",
           "MA_NHOM": "13", "MA_KHOA": "K01", "MA_BAC_SI": "A1;A2", "NGUOI_THUC_HIEN": "B1",
           "MA_BENH": "J18.9;I10", "MA_BENH_YHCT": "U50.1", "NGAY_TH_YL": "202101310810",
           "NGAY_KQ": "202101310820", "VI_TRI_TH_DVKT": "101"}
    procedure = _one(_map({"XML1": [b.xml1()], "XML3": [row]}), "procedure")
    assert [p["actor"]["identifier"]["value"] for p in procedure["performer"]] == ["A1", "A2", "B1"]
    assert procedure["performedPeriod"]["end"] == "2021-01-31T08:20:00+07:00"
    _round_trip({"XML1": [b.xml1()], "XML3": [row]})


def test_xml4_numeric_value_is_a_quantity_and_text_a_string() -> None:
    rows = [b.xml4(), b.xml4(2, GIA_TRI="Âm tính", DON_VI_DO="", KET_LUAN="Bình thường"),
            b.xml4(3, GIA_TRI="", NGAY_KQ="", MO_TA="Chờ kết quả")]
    mapped = _map({"XML1": [b.xml1()], "XML4": rows})
    first, second, third = (i.resource for i in mapped.instances if i.role == "result")
    assert first["valueQuantity"] == {"value": 5.6, "unit": "mmol/L"}
    assert second["valueString"] == "Âm tính"
    assert third["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert third["effectiveDateTime"] == "2021-01-31T08:00:00+07:00"  # XML1.NGAY_VAO
    _round_trip({"XML1": [b.xml1()], "XML4": rows})


def test_xml5_is_a_clinical_impression() -> None:
    row = {"MA_LK": MA_LK, "STT": "1", "DIEN_BIEN_LS": "Sốt 39 độ", "GIAI_DOAN_BENH": "Cấp",
           "HOI_CHAN": "Tiếp tục điều trị", "PHAU_THUAT": "Không",
           "THOI_DIEM_DBLS": "202101311000", "NGUOI_THUC_HIEN": "0101000002"}
    impression = _one(_map({"XML1": [b.xml1()], "XML5": [row]}), "progress")
    assert impression["description"] == "Sốt 39 độ"
    _round_trip({"XML1": [b.xml1()], "XML5": [row]})


@pytest.mark.parametrize("table", ["XML7", "XML8", "XML11"])
def test_papers_are_a_composition_and_a_document_reference(table: str) -> None:
    record = {"MA_LK": MA_LK, "CHAN_DOAN_RV": "Viêm phổi <nặng> & sốt", "NGAY_CT": "20210203",
              "MA_TTDV": "0101234567", "PP_DIEUTRI": "Kháng sinh"}
    mapped = _map({"XML1": [b.xml1()], table: [record]})
    paper = _one(mapped, "paper")
    assert paper["resourceType"] == "Composition" and paper["date"] == "2021-02-03"
    assert paper["attester"][0]["party"]["identifier"]["value"] == "0101234567"
    assert _one(mapped, "paper_original")["resourceType"] == "DocumentReference"
    _round_trip({"XML1": [b.xml1()], table: [record]})


def test_xml13_is_a_referral_and_xml14_an_appointment() -> None:
    referral = {"MA_LK": MA_LK, "GIAY_CHUYEN_TUYEN": "9/CT", "MA_NOI_DEN": "79001",
                "MA_LYDO_CT": "2", "DAU_HIEU_LS": "Sốt", "MA_BAC_SI": "000123/HNO-CCHN"}
    slip = {"MA_LK": MA_LK, "SO_GIAYHEN_KL": "77/GH", "NGAY_HEN_KL": "202102100800",
            "MA_BAC_SI": "000123/HNO-CCHN", "NGAY_CT": "20210203", "MA_TTDV": "0101234567"}
    tables = {"XML1": [b.xml1()], "XML13": [referral], "XML14": [slip]}
    mapped = _map(tables)
    assert _one(mapped, "referral")["performer"][0]["identifier"]["value"] == "79001"
    appointment = _one(mapped, "reexam")
    assert appointment["start"] == appointment["end"] == "2021-02-10T08:00:00+07:00"
    _round_trip(tables)


def test_copies_of_xml1_that_differ_are_warned_about() -> None:
    record = {"MA_LK": MA_LK, "NGAY_VAO": "202101300000"}
    issues = _map({"XML1": [b.xml1()], "XML7": [record]}).issues
    assert [(i.message_id, i.expression[0], i.severity) for i in issues] == [
        ("MSG_XML130_COPY_DIFFERS", "XML7.NGAY_VAO", "warning")]


@pytest.mark.parametrize(("value", "system_suffix"), [
    ("001090012345", "national_id"), ("012345678", "citizen_id"),
    ("C1234567", "passport_number"), ("ZXCV-42", "vneid-account"),
])
def test_so_cccd_is_classified_by_its_shape(value: str, system_suffix: str) -> None:
    patient = _one(_map({"XML1": [b.xml1(SO_CCCD=value)]}), "patient")
    systems = [i["system"] for i in patient["identifier"] if i.get("value") == value]
    assert systems[0].endswith(system_suffix)
    _round_trip({"XML1": [b.xml1(SO_CCCD=value)]})


def test_foreigners_nine_digits_are_a_passport() -> None:
    patient = _one(_map({"XML1": [b.xml1(SO_CCCD="123456789", MA_QUOCTICH="840")]}), "patient")
    assert any(i["system"].endswith("passport_number") for i in patient["identifier"])


def test_an_old_province_code_is_kept_as_the_claim_wrote_it() -> None:
    """Old claims carry the codes of their day (docs/geography.md: the write path reads them
    at the visit's date and adds where the address lies today)."""
    patient = _one(_map({"XML1": [b.xml1(MATINH_CU_TRU="02")]}), "patient")
    codes = {e["url"].rsplit("/", 1)[1]: e.get("valueCode")
             for e in patient["address"][0]["extension"]}
    assert codes["address-province-code"] == "02"  # Hà Giang, a province before July 2025
    _round_trip({"XML1": [b.xml1(MATINH_CU_TRU="02")]})


@pytest.mark.parametrize(("changes", "where", "message_id"), [
    ({"NGAY_VAO": "202113310800"}, "XML1.NGAY_VAO", "MSG_XML130_VALUE"),
    ({"GIOI_TINH": "7"}, "XML1.GIOI_TINH", "MSG_XML130_VALUE"),
    ({"MATINH_CU_TRU": "99"}, "XML1.MATINH_CU_TRU", "MSG_XML130_VALUE"),
    ({"MA_BENH_CHINH": "", "MA_BENH_KT": "", "MA_BENH_YHCT": "U50.1"}, "XML1.MA_BENH_YHCT",
     "MSG_XML130_VALUE"),
])
def test_bad_values_are_errors_at_their_field(changes: dict[str, str], where: str,
                                              message_id: str) -> None:
    issues = _map({"XML1": [b.xml1(**changes)]}).issues
    assert [(i.message_id, i.expression[0]) for i in issues] == [(message_id, where)]
    assert " / " in issues[0].diagnostics


def test_standard_130_pads_numeric_codes_back_and_forth() -> None:
    record = b.xml1(MA_LOAI_KCB="3", MA_DANTOC="1", MA_QUOCTICH="0", MA_NGHE_NGHIEP="0")
    mapped = _map({"XML1": [record]}, "130")
    assert _one(mapped, "encounter")["type"][0]["coding"][0]["code"] == "03"
    del record["MAXA_CU_TRU"]
    _round_trip({"XML1": [record]}, "130")


def test_standard_3176_maps_the_blood_group() -> None:
    mapped = _map({"XML1": [b.xml1(NHOM_MAU="O+")]}, "3176")
    assert _one(mapped, "blood_group")["valueString"] == "O+"
    assert not [i for i in _map({"XML1": [b.xml1(NHOM_MAU="O+")]}).instances
                if i.role == "blood_group"]


def test_a_field_cut_to_its_first_code_is_warned_about_once() -> None:
    mapped = _map({"XML1": [b.xml1()], "XML2": [b.xml2(1, MA_BAC_SI="D1;D2;D3"),
                                               b.xml2(2, MA_BAC_SI="D4")]})
    assert [(i.message_id, i.expression[0], i.severity) for i in mapped.issues] == [
        ("MSG_XML130_VALUE_TRUNCATED", "XML2[1].MA_BAC_SI", "warning")]
    requesters = [i.resource["requester"]["identifier"]["value"]
                  for i in mapped.of("XML2", "medication")]
    assert requesters == ["D1", "D4"]


def test_entry_urns_are_the_name_based_uuids_of_their_entries() -> None:
    keys = VisitKeys(FACILITY, MA_LK, b"<GIAMDINHHS/>", "20210204")
    for parts in (("XML1", "patient", 1), ("XML2", "medication", 12), ("binary",)):
        name = ":".join(str(p) for p in (FACILITY, MA_LK, *parts))
        assert _urn(keys, *parts) == f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'xml130:' + name)}"

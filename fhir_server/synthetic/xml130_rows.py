"""The detail tables of a synthetic visit in XML 130: drugs (XML2), services (XML3), results
(XML4) and clinical progress (XML5), read from the visit's FHIR Bundle.

Codes of the Ministry's common catalogues (services, test indicators, routes) are illustrative
values in their shapes, not taken from the official lists. Amounts are plausible prices; the
bridge does not import them.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from fhir_server.synthetic.visit import Visit

__all__ = ["drug_rows", "progress_rows", "result_rows", "service_rows", "xml_time"]

Resource = dict[str, Any]
_EXAM = ("02.1896", "Khám bệnh", "13")
_BED = ("K01.1910", "Ngày giường bệnh Nội khoa", "14")
_LAB_SERVICES = {"2339-0": ("23.0075", "Định lượng Glucose [Máu]"),
                 "718-7": ("22.0120", "Tổng phân tích tế bào máu ngoại vi"),
                 "2160-0": ("23.0051", "Định lượng Creatinin [Máu]"),
                 "2093-3": ("23.0041", "Định lượng Cholesterol toàn phần [Máu]")}


def xml_time(value: str) -> str:
    """A FHIR dateTime in +07:00 as ``yyyyMMddHHmm``."""
    return datetime.fromisoformat(value).strftime("%Y%m%d%H%M")


def _doctor(rng: random.Random, visit: Visit) -> str:
    return f"{rng.randint(1, 9999):06d}/{visit.facility.province_code}-CCHN"


def _strength(name: str) -> str:
    words = [w for w in name.split() if any(ch.isdigit() for ch in w)]
    return words[-1] if words else ""


def drug_rows(rng: random.Random, visit: Visit, requests: list[Resource]) -> list[dict[str, str]]:
    """XML2: one row per MedicationRequest of the Bundle."""
    rows = []
    for stt, request in enumerate(requests, start=1):
        concept = request["medicationCodeableConcept"]
        dosage = request["dosageInstruction"][0]
        quantity = request["dispenseRequest"]["quantity"]
        price = rng.choice((350, 500, 1200, 2500, 4800))
        rows.append({
            "MA_LK": visit.ma_lk, "STT": str(stt), "MA_THUOC": concept["coding"][0]["code"],
            "MA_NHOM": "4", "TEN_THUOC": concept["text"], "DON_VI_TINH": quantity["unit"],
            "HAM_LUONG": _strength(concept["text"]), "DUONG_DUNG": "1.01",
            "DANG_BAO_CHE": "Viên nén" if quantity["unit"] == "viên" else "Khác",
            "LIEU_DUNG": dosage["text"], "CACH_DUNG": "Uống sau ăn",
            "SO_DANG_KY": f"VD-{rng.randint(10000, 39999)}-{rng.randint(10, 23)}",
            "PHAM_VI": "1", "TYLE_TT_BH": "100", "SO_LUONG": str(quantity["value"]),
            "DON_GIA": str(price), "THANH_TIEN_BV": str(price * quantity["value"]),
            "THANH_TIEN_BH": str(price * quantity["value"]), "MUC_HUONG": "80",
            "MA_KHOA": "K01", "MA_BAC_SI": _doctor(rng, visit),
            "NGAY_YL": xml_time(request["authoredOn"]), "MA_PTTT": "1", "NGUON_CTRA": "1",
        })
    return rows


def _service(visit: Visit, stt: int, code: tuple[str, str, str], start: str,
             end: str, doctor: str) -> dict[str, str]:
    return {"MA_LK": visit.ma_lk, "STT": str(stt), "MA_DICH_VU": code[0],
            "MA_NHOM": code[2], "TEN_DICH_VU": code[1], "DON_VI_TINH": "lần",
            "PHAM_VI": "1", "SO_LUONG": "1", "DON_GIA_BV": "39000", "DON_GIA_BH": "39000",
            "TYLE_TT_DV": "100", "TYLE_TT_BH": "100", "THANH_TIEN_BV": "39000",
            "THANH_TIEN_BH": "39000", "MUC_HUONG": "80", "MA_KHOA": "K01",
            "MA_BAC_SI": doctor, "NGUOI_THUC_HIEN": doctor, "NGAY_YL": start,
            "NGAY_TH_YL": start, "NGAY_KQ": end, "MA_PTTT": "1"}


def service_rows(rng: random.Random, visit: Visit, labs: list[Resource]) -> list[dict[str, str]]:
    """XML3: the examination, a service per lab result, and the bed for an admission."""
    doctor = _doctor(rng, visit)
    start = visit.start.strftime("%Y%m%d%H%M")
    rows = [] if visit.visit_type.code == "07" else [_service(visit, 1, _EXAM, start, start,
                                                              doctor)]
    for lab in labs:
        code, name = _LAB_SERVICES[lab["code"]["coding"][0]["code"]]
        when = xml_time(lab["effectiveDateTime"])
        rows.append(_service(visit, len(rows) + 1, (code, name, "1"), when, when, doctor))
    if visit.visit_type.inpatient:
        row = _service(visit, len(rows) + 1, _BED, start, visit.end.strftime("%Y%m%d%H%M"),
                       doctor)
        row.update({"DON_VI_TINH": "ngày", "MA_GIUONG": "H001", "NGUOI_THUC_HIEN": ""})
        rows.append(row)
    return rows


def result_rows(rng: random.Random, visit: Visit, labs: list[Resource]) -> list[dict[str, str]]:
    """XML4: one row per laboratory Observation."""
    rows = []
    for stt, lab in enumerate(labs, start=1):
        quantity = lab["valueQuantity"]
        code = lab["code"]["coding"][0]["code"]
        rows.append({"MA_LK": visit.ma_lk, "STT": str(stt), "MA_DICH_VU": _LAB_SERVICES[code][0],
                     "MA_CHI_SO": "CS" + code.replace("-", ""), "TEN_CHI_SO": lab["code"]["text"],
                     "GIA_TRI": str(quantity["value"]), "DON_VI_DO": quantity["unit"],
                     "KET_LUAN": rng.choice(("Bình thường", "Tăng", "Giảm")),
                     "NGAY_KQ": xml_time(lab["effectiveDateTime"]),
                     "MA_BS_DOC_KQ": f"{rng.randrange(10**10):010d}"})
    return rows


def _vital_text(vitals: list[Resource]) -> str:
    parts = []
    for vital in vitals:
        label = vital["code"].get("text", "")
        if "component" in vital:
            values = "/".join(str(c["valueQuantity"]["value"]) for c in vital["component"])
            parts.append(f"{label} {values} mmHg")
        else:
            quantity = vital["valueQuantity"]
            parts.append(f"{label} {quantity['value']} {quantity['unit']}")
    return ", ".join(parts)


def progress_rows(rng: random.Random, visit: Visit, vitals: list[Resource]) -> list[dict[str, str]]:
    """XML5 (outpatient treatment and admissions): the measured signs as progress notes."""
    if not vitals:
        return []
    first = min(vitals, key=lambda v: v["effectiveDateTime"])
    note = {"MA_LK": visit.ma_lk, "STT": "1", "DIEN_BIEN_LS": _vital_text(vitals),
            "GIAI_DOAN_BENH": rng.choice(("", "Giai đoạn ổn định", "Giai đoạn cấp")),
            "THOI_DIEM_DBLS": xml_time(first["effectiveDateTime"]),
            "NGUOI_THUC_HIEN": f"{rng.randrange(10**10):010d}"}
    if visit.visit_type.inpatient and rng.random() < 0.3:
        note["HOI_CHAN"] = "Hội chẩn khoa: tiếp tục điều trị nội khoa"
    return [note]

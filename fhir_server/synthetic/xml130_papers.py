"""The papers of a synthetic visit in XML 130: discharge paper (XML7), record summary (XML8),
sick-leave certificate (XML11), referral (XML13) and re-examination appointment (XML14).

Which visits get them: XML7 every admission, XML8 admissions of types 03, 04 and 06 (the annex),
XML13 a transfer (MA_LOAI_RV 2 or 5), XML14 and NGAY_TAI_KHAM about a third of the visits
that are not a drug pick-up, XML11 about one adult working-age visit in seven.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from fhir_server.synthetic.visit import Visit

__all__ = ["paper_tables"]

Records = dict[str, list[dict[str, str]]]
_SUMMARY_TYPES = frozenset({"03", "04", "06"})


def _date(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M")


def _discharge(rng: random.Random, visit: Visit, xml1: dict[str, str]) -> dict[str, str]:
    return {"MA_LK": visit.ma_lk, "SO_LUU_TRU": f"LT{rng.randint(1, 99999):05d}",
            "MA_YTE": xml1["MA_BN"], "MA_KHOA_RV": "K01", "NGAY_VAO": xml1["NGAY_VAO"],
            "NGAY_RA": xml1["NGAY_RA"], "MA_DINH_CHI_THAI": "0",
            "CHAN_DOAN_RV": xml1["CHAN_DOAN_RV"], "PP_DIEUTRI": xml1["PP_DIEU_TRI"],
            "GHI_CHU": "Ra viện, tiếp tục điều trị ngoại trú", "MA_TTDV": xml1["MA_TTDV"],
            "MA_BS": f"{rng.randrange(10**10):010d}", "TEN_BS": "Trần Văn Bình",
            "NGAY_CT": xml1["NGAY_RA"][:8]}


def _summary(visit: Visit, xml1: dict[str, str]) -> dict[str, str]:
    return {"MA_LK": visit.ma_lk, "MA_LOAI_KCB": xml1["MA_LOAI_KCB"],
            "NGAY_VAO": xml1["NGAY_VAO"], "NGAY_RA": xml1["NGAY_RA"],
            "CHAN_DOAN_VAO": xml1["CHAN_DOAN_VAO"], "CHAN_DOAN_RV": xml1["CHAN_DOAN_RV"],
            "QT_BENHLY": "Bệnh khởi phát cấp, đáp ứng điều trị",
            "TOMTAT_KQ": "Các xét nghiệm trong giới hạn theo dõi",
            "PP_DIEUTRI": xml1["PP_DIEU_TRI"], "KET_QUA_DTRI": xml1["KET_QUA_DTRI"],
            "MA_TTDV": xml1["MA_TTDV"], "NGAY_CT": xml1["NGAY_RA"][:8]}


def _leave(rng: random.Random, visit: Visit, xml1: dict[str, str]) -> dict[str, str]:
    start = _date(xml1["NGAY_VAO"])
    days = rng.randint(2, 5)
    return {"MA_LK": visit.ma_lk, "SO_CT": f"CT{rng.randint(1, 99999):05d}",
            "SO_SERI": f"{rng.randint(1, 999999):06d}", "SO_KCB": f"{rng.randint(1, 99999)}",
            "DON_VI": "Công ty TNHH Minh Phát", "MA_BHXH": xml1["MA_THE_BHYT"][-10:],
            "MA_THE_BHYT": xml1["MA_THE_BHYT"], "CHAN_DOAN_RV": xml1["CHAN_DOAN_RV"],
            "PP_DIEUTRI": xml1["PP_DIEU_TRI"], "SO_NGAY_NGHI": str(days),
            "TU_NGAY": start.strftime("%Y%m%d"),
            "DEN_NGAY": (start + timedelta(days=days - 1)).strftime("%Y%m%d"),
            "MA_TTDV": xml1["MA_TTDV"], "MA_BS": f"{rng.randrange(10**10):010d}",
            "NGAY_CT": start.strftime("%Y%m%d"), "MAU_SO": "CT07"}


def _referral(rng: random.Random, visit: Visit, xml1: dict[str, str]) -> dict[str, str]:
    copied = ("MA_CSKCB", "MA_NOI_DI", "MA_NOI_DEN", "HO_TEN", "NGAY_SINH", "GIOI_TINH",
              "MA_QUOCTICH", "MA_DANTOC", "MA_NGHE_NGHIEP", "DIA_CHI", "MA_THE_BHYT",
              "GT_THE_DEN", "NGAY_VAO", "NGAY_VAO_NOI_TRU", "NGAY_RA", "CHAN_DOAN_RV",
              "MA_BENH_CHINH", "MA_BENH_KT", "MA_LOAI_RV")
    record = {name: xml1.get(name, "") for name in copied}
    record.update({"MA_LK": visit.ma_lk, "SO_HOSO": f"{rng.randint(1, 9999)}",
                   "SO_CHUYENTUYEN": f"{rng.randint(1, 9999)}",
                   "GIAY_CHUYEN_TUYEN": f"{rng.randint(1, 9999)}/CT",
                   "DAU_HIEU_LS": "Sốt, mệt mỏi", "QT_BENHLY": "Diễn biến không cải thiện",
                   "TOMTAT_KQ": "Xem kết quả cận lâm sàng kèm theo",
                   "PP_DIEUTRI": xml1["PP_DIEU_TRI"], "MA_LYDO_CT": rng.choice(("1", "2", "3")),
                   "HUONG_DIEU_TRI": "Điều trị chuyên khoa", "PHUONGTIEN_VC": "Xe cứu thương",
                   "MA_BAC_SI": f"{rng.randint(1, 9999):06d}/CCHN", "MA_TTDV": xml1["MA_TTDV"]})
    return record


def _appointment(rng: random.Random, visit: Visit, xml1: dict[str, str]) -> dict[str, str]:
    copied = ("MA_CSKCB", "HO_TEN", "NGAY_SINH", "GIOI_TINH", "DIA_CHI", "MA_THE_BHYT",
              "GT_THE_DEN", "NGAY_VAO", "NGAY_VAO_NOI_TRU", "NGAY_RA", "MA_BENH_CHINH",
              "MA_BENH_KT", "MA_DOITUONG_KCB")
    record = {name: xml1.get(name, "") for name in copied}
    record.update({"MA_LK": visit.ma_lk, "SO_GIAYHEN_KL": f"{rng.randint(1, 99999)}/GH",
                   "NGAY_HEN_KL": xml1["NGAY_TAI_KHAM"] + "0800",
                   "CHAN_DOAN_RV": xml1["CHAN_DOAN_RV"],
                   "MA_BAC_SI": f"{rng.randint(1, 9999):06d}/CCHN", "MA_TTDV": xml1["MA_TTDV"],
                   "NGAY_CT": xml1["NGAY_RA"][:8]})
    return record


def paper_tables(rng: random.Random, visit: Visit, xml1: dict[str, str]) -> Records:
    """The paper tables the visit gave (``xml1`` gains NGAY_TAI_KHAM when it has a return)."""
    code = visit.visit_type.code
    tables: Records = {}
    if visit.visit_type.inpatient:
        tables["XML7"] = [_discharge(rng, visit, xml1)]
    if code in _SUMMARY_TYPES:
        tables["XML8"] = [_summary(visit, xml1)]
    if xml1["MA_LOAI_RV"] in ("2", "5"):
        tables["XML13"] = [_referral(rng, visit, xml1)]
    if code != "07" and rng.random() < 0.35:
        back = _date(xml1["NGAY_RA"]) + timedelta(days=rng.choice((7, 14, 30)))
        xml1["NGAY_TAI_KHAM"] = back.strftime("%Y%m%d")
        tables["XML14"] = [_appointment(rng, visit, xml1)]
    if code in ("01", "02", "03", "04") and rng.random() < 0.15:
        tables["XML11"] = [_leave(rng, visit, xml1)]
    return tables

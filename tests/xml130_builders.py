"""Builders of XML 130 records and envelopes for the bridge's tests (one small visit)."""

from __future__ import annotations

from typing import Any

from fhir_server.bridges.xml130.envelope import encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import load_standard

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

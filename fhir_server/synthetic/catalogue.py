"""Clinical catalogue for synthetic visits: ICD-10 diagnoses, drugs, and measurements.

Diagnosis codes are real, common ICD-10 codes; their Vietnamese displays follow the wording of
the MoH ICD-10 list (QĐ 4469/QĐ-BYT) as far as remembered [M]. The drug codes of the
active-ingredient system are illustrative values in the MA_THUOC shape ("group.serial"), not
taken from the official list. Value ranges are plausible adult ranges, not reference ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.synthetic.weighted import WeightedChoice

__all__ = [
    "BLOOD_PRESSURE_PANEL",
    "DIAGNOSES",
    "DRUGS",
    "LABS",
    "VITALS",
    "Diagnosis",
    "Drug",
    "Measurement",
]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """An ICD-10 code with its Vietnamese display and the drugs usually prescribed for it."""

    code: str
    display: str
    chronic: bool
    drugs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Drug:
    """A prescribable product: active-ingredient code, name with strength, dose unit."""

    code: str
    name: str
    unit: str
    doses: tuple[int, ...]
    times_per_day: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Measurement:
    """A LOINC-coded quantity with its UCUM unit and a plausible value range."""

    loinc: str
    display: str
    text: str
    unit: str
    low: float
    high: float
    decimals: int


_D = Diagnosis
DIAGNOSES: WeightedChoice[Diagnosis] = WeightedChoice.of([
    (_D("J06.9", "Nhiễm trùng đường hô hấp trên cấp, không đặc hiệu", False,
        ("paracetamol", "loratadin", "acetylcystein")), 14),
    (_D("J02.9", "Viêm họng cấp, không đặc hiệu", False, ("amoxicilin", "paracetamol")), 6),
    (_D("J20.9", "Viêm phế quản cấp, không đặc hiệu", False,
        ("amoxicilin", "acetylcystein", "salbutamol")), 5),
    (_D("J18.9", "Viêm phổi, không đặc hiệu", False, ("cefuroxim", "azithromycin")), 3),
    (_D("I10", "Bệnh lý tăng huyết áp vô căn (nguyên phát)", True,
        ("amlodipin", "losartan", "aspirin")), 12),
    (_D("E11.9", "Bệnh đái tháo đường không phụ thuộc insulin, không có biến chứng", True,
        ("metformin", "gliclazid", "atorvastatin")), 7),
    (_D("E78.5", "Tăng lipid máu, không đặc hiệu", True, ("atorvastatin",)), 4),
    (_D("K29.7", "Viêm dạ dày, không đặc hiệu", False, ("omeprazol", "domperidon")), 6),
    (_D("K21.9", "Bệnh trào ngược dạ dày - thực quản không có viêm thực quản", True,
        ("omeprazol",)), 3),
    (_D("A09", "Tiêu chảy và viêm dạ dày - ruột có nguồn gốc nhiễm trùng", False,
        ("oresol", "ciprofloxacin")), 4),
    (_D("M54.5", "Đau vùng thắt lưng", False, ("meloxicam", "vitamin-b")), 4),
    (_D("M17.9", "Thoái hóa khớp gối, không đặc hiệu", True, ("meloxicam", "paracetamol")), 3),
    (_D("N39.0", "Nhiễm trùng đường tiết niệu, vị trí không xác định", False,
        ("ciprofloxacin",)), 3),
    (_D("J45.9", "Hen phế quản, không đặc hiệu", True, ("salbutamol", "methylprednisolon")), 2),
    (_D("J44.9", "Bệnh phổi tắc nghẽn mạn tính, không đặc hiệu", True,
        ("salbutamol", "acetylcystein")), 2),
    (_D("I25.1", "Bệnh tim do xơ vữa động mạch", True, ("aspirin", "atorvastatin")), 1.5),
    (_D("I63.9", "Nhồi máu não, không đặc hiệu", False, ("aspirin", "atorvastatin")), 1),
    (_D("A91", "Sốt xuất huyết Dengue", False, ("paracetamol", "oresol")), 1.5),
    (_D("H10.9", "Viêm kết mạc, không đặc hiệu", False, ("tobramycin",)), 2),
    (_D("L30.9", "Viêm da, không đặc hiệu", False, ("loratadin",)), 2),
    (_D("R51", "Đau đầu", False, ("paracetamol",)), 2),
])  # fmt: skip

DRUGS: dict[str, Drug] = {
    "paracetamol": Drug("2.12", "Paracetamol 500mg", "viên", (1, 2), (2, 3)),
    "amoxicilin": Drug("6.41", "Amoxicilin 500mg", "viên", (1,), (2, 3)),
    "cefuroxim": Drug("6.77", "Cefuroxim 500mg", "viên", (1,), (2,)),
    "azithromycin": Drug("6.133", "Azithromycin 500mg", "viên", (1,), (1,)),
    "ciprofloxacin": Drug("6.151", "Ciprofloxacin 500mg", "viên", (1,), (2,)),
    "acetylcystein": Drug("25.3", "Acetylcystein 200mg", "gói", (1,), (2, 3)),
    "loratadin": Drug("4.21", "Loratadin 10mg", "viên", (1,), (1,)),
    "salbutamol": Drug("25.22", "Salbutamol 2mg", "viên", (1, 2), (2, 3)),
    "methylprednisolon": Drug("18.7", "Methylprednisolon 16mg", "viên", (1,), (1, 2)),
    "amlodipin": Drug("12.5", "Amlodipin 5mg", "viên", (1,), (1,)),
    "losartan": Drug("12.31", "Losartan 50mg", "viên", (1,), (1,)),
    "aspirin": Drug("12.48", "Aspirin 81mg", "viên", (1,), (1,)),
    "atorvastatin": Drug("12.62", "Atorvastatin 20mg", "viên", (1,), (1,)),
    "metformin": Drug("18.41", "Metformin 850mg", "viên", (1,), (2,)),
    "gliclazid": Drug("18.37", "Gliclazid 30mg", "viên", (1, 2), (1,)),
    "omeprazol": Drug("17.14", "Omeprazol 20mg", "viên", (1,), (1, 2)),
    "domperidon": Drug("17.30", "Domperidon 10mg", "viên", (1,), (3,)),
    "oresol": Drug("17.52", "Oresol 245", "gói", (1,), (2, 3)),
    "meloxicam": Drug("2.25", "Meloxicam 7,5mg", "viên", (1,), (1, 2)),
    "vitamin-b": Drug("27.9", "Vitamin B1 + B6 + B12", "viên", (1,), (2,)),
    "tobramycin": Drug("21.14", "Tobramycin 0,3% nhỏ mắt", "giọt", (1, 2), (4,)),
}

_M = Measurement
VITALS: dict[str, Measurement] = {
    "heart-rate": _M("8867-4", "Heart rate", "Mạch", "/min", 58, 110, 0),
    "systolic": _M("8480-6", "Systolic blood pressure", "Huyết áp tâm thu", "mm[Hg]", 95, 175, 0),
    "diastolic": _M("8462-4", "Diastolic blood pressure", "Huyết áp tâm trương", "mm[Hg]",
                    55, 105, 0),
    "weight": _M("29463-7", "Body weight", "Cân nặng", "kg", 40, 85, 1),
    "temperature": _M("8310-5", "Body temperature", "Nhiệt độ", "Cel", 36.2, 39.2, 1),
}  # fmt: skip
LABS: tuple[Measurement, ...] = (
    _M("2339-0", "Glucose [Mass/volume] in Blood", "Glucose máu", "mg/dL", 72, 240, 0),
    _M("718-7", "Hemoglobin [Mass/volume] in Blood", "Huyết sắc tố", "g/dL", 9.5, 16.5, 1),
    _M("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinin", "mg/dL",
       0.5, 1.6, 2),
    _M("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "Cholesterol toàn phần",
       "mg/dL", 130, 280, 0),
)  # fmt: skip
BLOOD_PRESSURE_PANEL = ("85354-9", "Blood pressure panel with all children optional", "Huyết áp")

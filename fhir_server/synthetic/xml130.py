"""The same synthetic visits as XML 130 envelopes (``fhir-server generate --format xml130``).

Each visit of ``generation.synthetic_visits`` becomes one unsigned envelope of one ``HOSO``,
written from the visit's FHIR Bundle (who, where, when, diagnoses, drugs, results, signs) and
from draws of its own random stream, seeded by MA_LK, for what the Bundle does not hold (the
insurance card's validity, services, papers): the FHIR output of a seed is unchanged. Tables
follow the 4750 annex: XML1 always; XML2-XML5 where the visit has drugs, services, results or
progress notes; XML7 and XML8 for admissions; XML11, XML13 and XML14 when the visit gave a
sick-leave certificate, a referral or a re-examination appointment. Sizes and types stay
within the annex (a unit test checks every generated field).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fhir_server.bridges.xml130.envelope import encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.synthetic.generation import synthetic_visits
from fhir_server.synthetic.visit import Visit
from fhir_server.synthetic.xml130_papers import paper_tables
from fhir_server.synthetic.xml130_rows import drug_rows, progress_rows, result_rows, service_rows

__all__ = ["XmlSummary", "generate_xml130", "visit_envelope", "visit_records"]

Resource = dict[str, Any]
Records = dict[str, list[dict[str, str]]]
_GENDER = {"male": "1", "female": "2"}
_OCCUPATIONS = ("00000", "21110", "51310", "61110", "93120", "22210", "71150")
_PROGRESS_TYPES = frozenset({"02", "03", "04", "05", "06", "08"})
_PATTERN = "visit-[0-9]*.xml"


@dataclass(frozen=True)
class XmlSummary:
    """What a run wrote: visits (one envelope each) and the files."""

    patients: int
    visits: int
    files: list[Path] = field(default_factory=list)


def _of(bundle: Resource, kind: str) -> list[Resource]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _identifier(patient: Resource, suffix: str) -> str:
    return str(next(i["value"] for i in patient["identifier"] if i["system"].endswith(suffix)))


def _birth(patient: Resource) -> str:
    day = str(patient["birthDate"]).replace("-", "")
    return day + "00000000" if len(day) == 4 else day + "0000"


def _days(visit: Visit, requests: list[Resource]) -> str:
    code = visit.visit_type.code
    if code in ("02", "03", "04", "06"):
        return str((visit.end.date() - visit.start.date()).days + 1)
    if code == "05" and requests:
        bounds = [r["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"]
                  for r in requests]
        return str(max(bounds))
    return "1" if code == "08" else "0"


def _person(rng: random.Random, visit: Visit) -> dict[str, str]:
    patient = visit.patient.resource
    address = patient["address"][0]
    year = visit.start.year
    return {
        "MA_BN": "BN" + visit.patient.cccd[-8:], "HO_TEN": patient["name"][0]["text"],
        "SO_CCCD": visit.patient.cccd, "NGAY_SINH": _birth(patient),
        "GIOI_TINH": _GENDER.get(patient["gender"], "3"), "MA_QUOCTICH": "000",
        "MA_DANTOC": patient["extension"][0]["valueCoding"]["code"],
        "MA_NGHE_NGHIEP": random.Random(visit.patient.cccd).choice(_OCCUPATIONS),
        "DIA_CHI": address["text"],
        "MATINH_CU_TRU": address["extension"][0]["valueCode"],
        "DIEN_THOAI": patient["telecom"][0]["value"],
        "MA_THE_BHYT": _identifier(patient, "insurance_number"),
        "MA_DKBD": visit.patient.province.code + "001",
        "GT_THE_TU": f"{year}0101", "GT_THE_DEN": f"{year}1231",
    }


def _diagnoses(conditions: list[Resource]) -> dict[str, str]:
    codes = [c["code"]["coding"][0] for c in conditions]
    text = "; ".join(c["display"] for c in codes)
    return {"MA_BENH_CHINH": codes[0]["code"],
            "MA_BENH_KT": ";".join(c["code"] for c in codes[1:]),
            "CHAN_DOAN_VAO": codes[0]["display"], "CHAN_DOAN_RV": text}


def _stay(rng: random.Random, visit: Visit, encounter: Resource) -> dict[str, str]:
    inpatient = visit.visit_type.inpatient
    disposition = (encounter.get("hospitalization") or {}).get("dischargeDisposition")
    stay = {
        "MA_LK": visit.ma_lk, "STT": "1", "MA_LOAI_KCB": visit.visit_type.code,
        "MA_CSKCB": visit.facility.code, "NGAY_VAO": visit.start.strftime("%Y%m%d%H%M"),
        "NGAY_RA": visit.end.strftime("%Y%m%d%H%M"),
        "MA_LOAI_RV": disposition["coding"][0]["code"] if disposition else "1",
        "KET_QUA_DTRI": rng.choice(("1", "1", "2", "2", "3")),
        "MA_DOITUONG_KCB": rng.choice(("1.1", "1.1", "1.1", "1.2", "2", "3.3")),
        "LY_DO_VV": rng.choice(("Sốt", "Ho, khó thở", "Đau đầu", "Khám định kỳ", "Đau bụng")),
        "PP_DIEU_TRI": "Điều trị nội khoa", "MA_KHOA": "K01",
        "MA_HSBA": "HS" + visit.ma_lk[-7:], "MA_TTDV": f"{rng.randrange(10**10):010d}",
    }
    if inpatient:
        stay["NGAY_VAO_NOI_TRU"] = (visit.start + timedelta(minutes=30)).strftime("%Y%m%d%H%M")
        stay["LY_DO_VNT"] = "Theo dõi và điều trị nội trú"
    if rng.random() < 0.1:
        stay.update({"MA_NOI_DI": visit.patient.province.code + "101",
                     "GIAY_CHUYEN_TUYEN": f"{rng.randint(1, 9999)}/GCT",
                     "MA_DOITUONG_KCB": "1.3"})
    if stay["MA_LOAI_RV"] in ("2", "5"):
        stay["MA_NOI_DEN"] = "01001" if visit.facility.code != "01001" else "79001"
    return stay


def visit_records(visit: Visit, bundle: Resource) -> Records:
    """The XML 130 tables of a synthetic visit (records by table name)."""
    rng = random.Random(f"xml130:{visit.ma_lk}")
    encounter = _of(bundle, "Encounter")[0]
    observations = _of(bundle, "Observation")
    labs = [o for o in observations if o["category"][0]["coding"][0]["code"] == "laboratory"]
    vitals = [o for o in observations if o not in labs]
    requests = _of(bundle, "MedicationRequest")
    weight = next((o for o in vitals if o["code"]["coding"][0]["code"] == "29463-7"), None)
    xml1 = {**_stay(rng, visit, encounter), **_person(rng, visit),
            **_diagnoses(_of(bundle, "Condition")), "SO_NGAY_DTRI": _days(visit, requests)}
    if weight is not None:
        xml1["CAN_NANG"] = str(weight["valueQuantity"]["value"])
    progress = visit.visit_type.code in _PROGRESS_TYPES
    tables: Records = {"XML1": [xml1], "XML2": drug_rows(rng, visit, requests),
                       "XML3": service_rows(rng, visit, labs),
                       "XML4": result_rows(rng, visit, labs),
                       "XML5": progress_rows(rng, visit, vitals) if progress else []}
    tables.update(paper_tables(rng, visit, xml1))
    xml1["NGAY_TTOAN"] = xml1["NGAY_RA"]
    xml1["T_THUOC"] = str(sum(int(r["THANH_TIEN_BV"]) for r in tables["XML2"]))
    return {name: rows for name, rows in tables.items() if rows}


def visit_envelope(visit: Visit, bundle: Resource) -> bytes:
    """One unsigned envelope holding the visit (standard 4750)."""
    standard = load_standard("4750")
    files = []
    for name, rows in visit_records(visit, bundle).items():
        table = standard.tables[name]
        assert table.shape is not None
        files.append((name, encode_table(table.shape, rows, list(table.facts))))
    created = (visit.end + timedelta(days=1)).strftime("%Y%m%d")
    return encode_envelope(visit.facility.code, created, [files])


def envelopes(patients: int, seed: int) -> Iterator[bytes]:
    """The envelopes of ``patients`` patients drawn from ``seed``, in order."""
    for visit, bundle in synthetic_visits(patients, seed):
        yield visit_envelope(visit, bundle)


def generate_xml130(patients: int, seed: int, out: Path,
                    progress: Callable[[int], None] | None = None) -> XmlSummary:
    """Write one envelope per visit (``visit-000001.xml`` ...) into ``out``."""
    if patients < 0:
        raise ValueError("patients must not be negative")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(_PATTERN):
        stale.unlink()
    files = []
    for number, (visit, bundle) in enumerate(synthetic_visits(patients, seed, progress),
                                             start=1):
        path = out / f"visit-{number:06d}.xml"
        path.write_bytes(visit_envelope(visit, bundle))
        files.append(path)
    return XmlSummary(patients, len(files), files)


"""One synthetic visit (an XML 130 episode, keyed by MA_LK) and its scheduling.

Visit types are MA_LOAI_KCB (VIETNAM.md §3.2); their shares are rough guesses. Visit times are
local times in +07:00 between 2020 and the fixed "now" of 2026-06-30T00:00:00+07:00.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from fhir_server.synthetic.facilities import Facility, FacilityLevel
from fhir_server.synthetic.identifiers import record_system
from fhir_server.synthetic.patients import PatientFacts
from fhir_server.synthetic.transaction import RecordKey
from fhir_server.synthetic.weighted import WeightedChoice

__all__ = ["NOW", "VISIT_TYPES", "Slot", "Visit", "VisitType", "draw_schedule"]

VIETNAM_TIME = timezone(timedelta(hours=7))
NOW = datetime(2026, 6, 30, tzinfo=VIETNAM_TIME)
FIRST_DAY = date(2020, 1, 1)


@dataclass(frozen=True, slots=True)
class VisitType:
    """A MA_LOAI_KCB code with its label, Encounter.class and length of stay in minutes."""

    code: str
    display: str
    act_code: str
    levels: tuple[FacilityLevel, ...]
    min_minutes: int
    max_minutes: int

    @property
    def inpatient(self) -> bool:
        """Whether the visit is an admission (it then carries a discharge disposition)."""
        return self.act_code == "IMP"


_H, _C, _S = FacilityLevel.HOSPITAL, FacilityLevel.CENTRE, FacilityLevel.STATION
_DAY = 24 * 60
VISIT_TYPES: WeightedChoice[VisitType] = WeightedChoice.of([
    (VisitType("01", "Khám bệnh", "AMB", (_H, _C, _S, _S), 20, 240), 58),
    (VisitType("02", "Điều trị ngoại trú", "AMB", (_H, _C), 30, 240), 6),
    (VisitType("03", "Điều trị nội trú", "IMP", (_H, _H, _C), 2 * _DAY, 12 * _DAY), 14),
    (VisitType("04", "Điều trị nội trú ban ngày", "IMP", (_H, _C), _DAY, 6 * _DAY), 2),
    (VisitType("05", "Điều trị ngoại trú bệnh mạn tính, có khám bệnh và lĩnh thuốc", "AMB",
               (_H, _C), 20, 180), 8),
    (VisitType("06", "Điều trị lưu tại Trạm Y tế tuyến xã", "IMP", (_S,), _DAY, 3 * _DAY), 2),
    (VisitType("07", "Nhận thuốc theo hẹn (không khám bệnh)", "AMB", (_H, _C, _S), 10, 60), 5),
    (VisitType("08", "Điều trị ngoại trú bệnh mạn tính, có thực hiện DVKT và/hoặc thuốc", "AMB",
               (_H,), 60, 300), 2),
    (VisitType("09", "Điều trị nội trú dưới 04 giờ", "IMP", (_H, _C), 60, 230), 1),
    (VisitType("10", "Các trường hợp khác", "AMB", (_H, _C, _S), 20, 120), 2),
])  # fmt: skip
_VISITS_PER_PATIENT = WeightedChoice.of([(1, 40), (2, 35), (3, 17), (4, 8)])


@dataclass(frozen=True, slots=True)
class Visit:
    """Where, when and what kind of visit; the key its records are identified by."""

    ma_lk: str
    visit_type: VisitType
    facility: Facility
    patient: PatientFacts
    start: datetime
    end: datetime
    encounter_urn: str

    def key(self, resource_type: str, n: int) -> RecordKey:
        """The business identifier of the n-th record of a type in this visit (from 1)."""
        return RecordKey(record_system(self.facility.code), f"{self.ma_lk}/{resource_type}/{n}")

    def moment(self, rng: random.Random, within_minutes: int | None = None) -> datetime:
        """A time during the visit, optionally within its first minutes."""
        span = (self.end - self.start).total_seconds() // 60
        limit = span if within_minutes is None else min(span, within_minutes)
        return self.start + timedelta(minutes=rng.randint(0, int(limit)))


@dataclass(frozen=True, slots=True)
class Slot:
    """A drawn visit time, before a facility and a MA_LK are assigned."""

    visit_type: VisitType
    start: datetime
    end: datetime


def _draw_slot(rng: random.Random, birth: date) -> Slot:
    visit_type = VISIT_TYPES.draw(rng)
    minutes = rng.randint(visit_type.min_minutes, visit_type.max_minutes)
    first = max(FIRST_DAY, birth)
    # Leave room after the start day so that the visit ends before "now".
    last = NOW.date() - timedelta(days=minutes // _DAY + 1)
    if last < first:
        last, minutes = first, min(minutes, 180)
    day = first + timedelta(days=rng.randint(0, (last - first).days))
    start = datetime(day.year, day.month, day.day, 7, tzinfo=VIETNAM_TIME)
    start += timedelta(minutes=rng.randint(0, 570))
    return Slot(visit_type, start, start + timedelta(minutes=minutes))


def draw_schedule(rng: random.Random, birth: date) -> list[Slot]:
    """One to four visits of a patient (mean about 2), in time order."""
    count = _VISITS_PER_PATIENT.draw(rng)
    return sorted((_draw_slot(rng, birth) for _ in range(count)), key=lambda s: s.start)

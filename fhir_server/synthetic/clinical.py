"""The clinical records of a visit: ICD-10 Conditions, Observations and MedicationRequests.

Each function returns transaction entries built with `conditional_update`, numbered per type
from 1 so that their business identifiers are stable (`<MA_LK>/<ResourceType>/<n>`).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from fhir_server.synthetic.catalogue import (
    BLOOD_PRESSURE_PANEL,
    DIAGNOSES,
    DRUGS,
    LABS,
    VITALS,
    Diagnosis,
    Drug,
    Measurement,
)
from fhir_server.synthetic.identifiers import random_urn
from fhir_server.synthetic.systems import (
    ACTIVE_INGREDIENT_SYSTEM,
    CONDITION_CATEGORY_SYSTEM,
    CONDITION_CLINICAL_SYSTEM,
    CONDITION_VERIFICATION_SYSTEM,
    ICD10_SYSTEM,
    LOINC_SYSTEM,
    OBSERVATION_CATEGORY_SYSTEM,
    UCUM_SYSTEM,
)
from fhir_server.synthetic.transaction import conditional_update
from fhir_server.synthetic.visit import NOW, Visit

__all__ = ["condition_entries", "draw_diagnoses", "medication_entries", "observation_entries"]

Resource = dict[str, Any]


def _concept(system: str, code: str, display: str, text: str | None = None) -> Resource:
    concept: Resource = {"coding": [{"system": system, "code": code, "display": display}]}
    if text is not None:
        concept["text"] = text
    return concept


def _context(visit: Visit) -> Resource:
    return {
        "subject": {"reference": visit.patient.urn},
        "encounter": {"reference": visit.encounter_urn},
    }


def draw_diagnoses(rng: random.Random) -> list[Diagnosis]:
    """One to three distinct diagnoses; the first is the main one (MA_BENH_CHINH)."""
    wanted = rng.choice((1, 1, 2, 2, 3))
    found: list[Diagnosis] = []
    for _ in range(wanted * 3):
        candidate = DIAGNOSES.draw(rng)
        if candidate not in found:
            found.append(candidate)
        if len(found) == wanted:
            break
    return found


def _condition(visit: Visit, diagnosis: Diagnosis) -> Resource:
    status = "active" if diagnosis.chronic else "resolved"
    return {
        "clinicalStatus": _concept(CONDITION_CLINICAL_SYSTEM, status, status.capitalize()),
        "verificationStatus": _concept(CONDITION_VERIFICATION_SYSTEM, "confirmed", "Confirmed"),
        "category": [
            _concept(CONDITION_CATEGORY_SYSTEM, "encounter-diagnosis", "Encounter Diagnosis")
        ],
        "code": _concept(ICD10_SYSTEM, diagnosis.code, diagnosis.display, diagnosis.display),
        **_context(visit),
        "recordedDate": visit.start.isoformat(),
    }


def condition_entries(
    rng: random.Random, visit: Visit, diagnoses: list[Diagnosis]
) -> list[Resource]:
    """One Condition entry per diagnosis, in rank order."""
    return [
        conditional_update(random_urn(rng), "Condition", visit.key("Condition", n), body)
        for n, diagnosis in enumerate(diagnoses, start=1)
        for body in [_condition(visit, diagnosis)]
    ]


def _quantity(rng: random.Random, measurement: Measurement) -> Resource:
    value: float = round(rng.uniform(measurement.low, measurement.high), measurement.decimals)
    number = int(value) if measurement.decimals == 0 else value
    unit = measurement.unit
    return {"value": number, "unit": unit, "system": UCUM_SYSTEM, "code": unit}


def _measured(measurement: Measurement) -> Resource:
    return _concept(LOINC_SYSTEM, measurement.loinc, measurement.display, measurement.text)


def _observation(category: str, code: Resource, when: datetime, value: Resource) -> Resource:
    label = "Vital Signs" if category == "vital-signs" else "Laboratory"
    return {
        "status": "final",
        "category": [_concept(OBSERVATION_CATEGORY_SYSTEM, category, label)],
        "code": code,
        "effectiveDateTime": when.isoformat(),
        **value,
    }


def _blood_pressure(rng: random.Random) -> tuple[Resource, Resource]:
    components = [
        {"code": _measured(VITALS[part]), "valueQuantity": _quantity(rng, VITALS[part])}
        for part in ("systolic", "diastolic")
    ]
    return _concept(LOINC_SYSTEM, *BLOOD_PRESSURE_PANEL), {"component": components}


def _body_weight(rng: random.Random, visit: Visit) -> float:
    """Kilograms: adult range from the catalogue, a growth curve for children."""
    age = (visit.start.date() - visit.patient.birth_date).days / 365.25
    if age >= 18:
        return round(rng.uniform(VITALS["weight"].low, VITALS["weight"].high), 1)
    # Rough median growth: 3.3 kg at birth, about 2.3 kg a year to 10, then 4 kg a year.
    median = 3.3 + 2.3 * min(age, 10) + 4.0 * max(age - 10, 0)
    return round(median * rng.uniform(0.85, 1.15), 1)


def _draw_observation(rng: random.Random, visit: Visit, kind: str) -> Resource:
    if kind == "blood-pressure":
        code, value = _blood_pressure(rng)
        return _observation("vital-signs", code, visit.moment(rng, 60), value)
    if kind in VITALS:
        measured = VITALS[kind]
        value = {"valueQuantity": _quantity(rng, measured)}
        if kind == "weight":
            value["valueQuantity"]["value"] = _body_weight(rng, visit)
        return _observation("vital-signs", _measured(measured), visit.moment(rng, 60), value)
    lab = LABS[int(kind)]
    value = {"valueQuantity": _quantity(rng, lab)}
    return _observation("laboratory", _measured(lab), visit.moment(rng), value)


_OBSERVATION_KINDS = ("blood-pressure", "heart-rate", "weight", "temperature")


def observation_entries(rng: random.Random, visit: Visit) -> list[Resource]:
    """Two to five Observations: vital signs first, then one or two lab results."""
    labs = [str(i) for i in sorted(rng.sample(range(len(LABS)), rng.randint(1, 2)))]
    kinds = [*_OBSERVATION_KINDS, *labs]
    chosen = sorted(rng.sample(range(len(kinds)), rng.randint(2, 5)))
    entries = []
    for n, index in enumerate(chosen, start=1):
        body = {**_draw_observation(rng, visit, kinds[index]), **_context(visit)}
        key = visit.key("Observation", n)
        entries.append(conditional_update(random_urn(rng), "Observation", key, body))
    return entries


def _dosage(rng: random.Random, drug: Drug, days: int) -> tuple[Resource, int]:
    dose, times = rng.choice(drug.doses), rng.choice(drug.times_per_day)
    # The Ministry's LIEU_DUNG wording (XML 130 Bảng 2), e.g. "2 viên/lần * 2 lần/ngày * 5 ngày".
    text = f"{dose} {drug.unit}/lần * {times} lần/ngày * {days} ngày"
    bounds = {"value": days, "unit": "ngày", "system": UCUM_SYSTEM, "code": "d"}
    timing = {"repeat": {"boundsDuration": bounds, "frequency": times, "period": 1,
                         "periodUnit": "d"}}  # fmt: skip
    dose_quantity = {"value": dose, "unit": drug.unit}
    dosage = {"text": text, "timing": timing, "doseAndRate": [{"doseQuantity": dose_quantity}]}
    return dosage, dose * times * days


def _medication_request(
    rng: random.Random, visit: Visit, drug: Drug, reason_urn: str, chronic: bool
) -> Resource:
    days = rng.choice((28, 30)) if chronic else rng.randint(3, 7)
    dosage, total = _dosage(rng, drug, days)
    authored = visit.moment(rng)
    done = authored + timedelta(days=days) < NOW
    medication = _concept(ACTIVE_INGREDIENT_SYSTEM, drug.code, drug.name, drug.name)
    return {
        "status": "completed" if done else "active",
        "intent": "order",
        "medicationCodeableConcept": medication,
        **_context(visit),
        "authoredOn": authored.isoformat(),
        "requester": {"reference": visit.facility.urn},
        "reasonReference": [{"reference": reason_urn}],
        "dosageInstruction": [dosage],
        "dispenseRequest": {"quantity": {"value": total, "unit": drug.unit}},
    }


def medication_entries(
    rng: random.Random, visit: Visit, diagnoses: list[Diagnosis], condition_urns: list[str]
) -> list[Resource]:
    """One to three MedicationRequests for drugs that suit the diagnoses."""
    options = list(dict.fromkeys(d for dx in diagnoses for d in dx.drugs))
    chosen = rng.sample(options, min(len(options), rng.randint(1, 3)))
    entries = []
    for n, name in enumerate(chosen, start=1):
        index = next(i for i, dx in enumerate(diagnoses) if name in dx.drugs)
        body = _medication_request(
            rng, visit, DRUGS[name], condition_urns[index], diagnoses[index].chronic
        )
        key = visit.key("MedicationRequest", n)
        entries.append(conditional_update(random_urn(rng), "MedicationRequest", key, body))
    return entries

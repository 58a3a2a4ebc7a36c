"""The official vital-sign examples of R4 (``r4_vital_signs.json``) and copies of them that
break R4's vital-sign profiles, each with the issue it must get: shared by the validator's
tests and the API's."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CORE = "http://hl7.org/fhir/StructureDefinition/"
Json = dict[str, Any]


@cache
def _table() -> Json:
    table: Json = json.loads((Path(__file__).parent / "r4_vital_signs.json").read_text())
    return table


def examples() -> list[tuple[str, str, Json]]:
    """(file name, the profile of its code, resource) of each official vital-sign example."""
    return [(e["file"], e["profile"], e["resource"]) for e in _table()["examples"]]


def example(file: str) -> Json:
    """A fresh copy of the official example ``file``."""
    return copy.deepcopy(next(e["resource"] for e in _table()["examples"] if e["file"] == file))


def claiming(resource: Json, *profiles: str) -> Json:
    """``resource`` claiming ``vitalsigns`` and ``profiles`` (R4's) in ``meta.profile``."""
    urls = [CORE + p for p in ("vitalsigns", *profiles)]
    return {**resource, "meta": {**resource.get("meta", {}), "profile": urls}}


def _codes(concept: Json) -> list[str]:
    return [c.get("code", "") for c in concept.get("coding", ())]


def _without_systolic(bp: Json) -> None:
    bp["component"] = [c for c in bp["component"] if "8480-6" not in _codes(c["code"])]


def _systolic_in_kpa(bp: Json) -> None:
    bp["component"][0]["valueQuantity"].update(unit="kPa", code="kPa", value=14.3)


def _laboratory_category(vital: Json) -> None:
    vital["category"] = [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "laboratory"}]}]


def _weight_measured_code(weight: Json) -> None:
    """Only LOINC 3141-9 (body weight measured), not bodyweight's 29463-7."""
    weight["code"]["coding"] = [c for c in weight["code"]["coding"] if c["code"] != "29463-7"]


def _weight_in_stones(weight: Json) -> None:
    weight["valueQuantity"].update(unit="stone", code="[stone_av]", value=13)


def _rate_in_hertz_component(rate: Json) -> None:
    rate["component"] = [{"code": {"text": "at rest"}, "valueQuantity": {
        "value": 1.2, "unit": "Hz", "system": "http://unitsofmeasure.org", "code": "Hz"}}]


def _temperature_in_kelvin(temperature: Json) -> None:
    temperature["valueQuantity"].update(unit="K", code="K", value=309.9)


@dataclass(frozen=True)
class Break:
    """A copy of ``file`` changed by ``change``, claiming ``profile``: refused with
    ``message_id`` and a text containing ``text`` (the profile, and the slice or binding)."""

    name: str
    file: str
    profile: str
    change: Callable[[Json], None]
    message_id: str
    text: str

    def resource(self) -> Json:
        broken = example(self.file)
        self.change(broken)
        return claiming(broken, self.profile)


UCUM = "http://hl7.org/fhir/ValueSet/ucum-"
BREAKS = [
    Break("bp without its systolic component", "Observation-blood-pressure.json", "bp",
          _without_systolic, "MSG_PROFILE_CARDINALITY",
          "bp: Observation.component:SystolicBP: found 0, allowed 1..1"),
    Break("bp with a systolic pressure in kPa", "Observation-blood-pressure.json", "bp",
          _systolic_in_kpa, "MSG_PROFILE_PATTERN",
          "bp: Observation.component[0].valueQuantity.code does not match the fixed value "
          "'mm[Hg]'"),
    Break("a vital sign without the vital-signs category", "Observation-heart-rate.json",
          "heartrate", _laboratory_category, "MSG_PROFILE_CARDINALITY",
          "vitalsigns: Observation.category:VSCat: found 0, allowed 1..1"),
    Break("a body weight coded as measured weight only", "Observation-example.json",
          "bodyweight", _weight_measured_code, "MSG_PROFILE_CARDINALITY",
          "bodyweight: Observation.code.coding:BodyWeightCode: found 0, allowed 1..1"),
    Break("a body weight in stones", "Observation-example.json", "bodyweight",
          _weight_in_stones, "MSG_PROFILE_BINDING",
          f"bodyweight: Observation.valueQuantity.code: no code from the required value set "
          f"{UCUM}bodyweight"),
    Break("a body temperature in kelvin", "Observation-body-temperature.json", "bodytemp",
          _temperature_in_kelvin, "MSG_PROFILE_BINDING",
          f"bodytemp: Observation.valueQuantity.code: no code from the required value set "
          f"{UCUM}bodytemp"),
    Break("a component in a unit outside the vital-signs units",
          "Observation-respiratory-rate.json", "resprate", _rate_in_hertz_component,
          "MSG_PROFILE_BINDING",
          f"vitalsigns: Observation.component[0].valueQuantity: no code from the required "
          f"value set {UCUM}vitals-common"),
]

"""Native Python equivalents of the project profiles' FHIRPath invariants (and of R4's vital
signs profiles', whose ``value.exists()`` on a choice fhirpathpy misreads).

``fhirpathpy`` needs 0.1-1 ms per evaluation, too slow for a Patient validated in well under a
millisecond, so the invariants of ``profiles/`` that run on every write have a Python twin here.
A twin is used only when the profile still carries the exact expression it was written for
(:func:`native_invariant` compares the text); any other invariant, or an edited one, is
evaluated with ``fhirpathpy``. Tests check that both agree on every example and on generated
visits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["native_invariant"]

Json = dict[str, Any]
Check = Callable[[Any, Json], bool]

_CCCD = re.compile(r"^[0-9]{12}$")
_PROVINCE_EXT = "https://fhir.sskdt.vn/StructureDefinition/address-province-code"
_LEVEL_EXT = "https://fhir.sskdt.vn/StructureDefinition/coverage-benefit-level"
_MA_LK_PREFIX = "https://fhir.sskdt.vn/sid/ma-lk/"
_MA_LK = re.compile(r"^https://fhir\.sskdt\.vn/sid/ma-lk/[0-9A-Z]{5}$")
_DOSAGE = re.compile(r"^[^*]+/lần \* [^*]+/ngày( \* [^*]+ ngày)?( \[[^\]]+\])?$")
_VALUES = ("Quantity", "CodeableConcept", "String", "Boolean", "Integer", "Range", "Ratio",
           "SampledData", "Time", "DateTime", "Period")  # fmt: skip


def _cccd(node: Any) -> str | None:
    value = node.get("value") if isinstance(node, dict) else None
    return value if isinstance(value, str) and _CCCD.search(value) else None


def _cccd_gender(node: Any, resource: Json) -> bool:
    value = _cccd(node)
    gender = resource.get("gender")
    if value is None or gender not in ("male", "female"):
        return True
    return int(value[3]) % 2 == (0 if gender == "male" else 1)


def _cccd_century(node: Any, resource: Json) -> bool:
    value, birth = _cccd(node), resource.get("birthDate")
    if value is None or not isinstance(birth, str):
        return True
    return int(value[3]) // 2 == int(birth[:2]) - 19


def _cccd_year(node: Any, resource: Json) -> bool:
    value, birth = _cccd(node), resource.get("birthDate")
    if value is None or not isinstance(birth, str):
        return True
    return value[4:6] == birth[2:4]


def _cccd_province(prefixes: frozenset[str]) -> Check:
    def check(node: Any, resource: Json) -> bool:
        value = _cccd(node)
        return value is None or value[:3] in prefixes

    return check


def _extensions(node: Json, url: str) -> list[Json]:
    return [e for e in node.get("extension", ()) if e.get("url") == url]


def _address_province(node: Any, resource: Json) -> bool:
    if node.get("country", "VN") != "VN":
        return True
    return bool(_extensions(node, _PROVINCE_EXT))


def _offset_ok(value: Any) -> bool:
    return not isinstance(value, str) or len(value) <= 10 or value.endswith("+07:00")


def _encounter_offset(node: Any, resource: Json) -> bool:
    period = node.get("period", {})
    return _offset_ok(period.get("start")) and _offset_ok(period.get("end"))


def _appointment_offset(node: Any, resource: Json) -> bool:
    return _offset_ok(node.get("start")) and _offset_ok(node.get("end"))


def _main_diagnosis(node: Any, resource: Json) -> bool:
    return sum(1 for d in node.get("diagnosis", ()) if d.get("rank") == 1) <= 1


def _discharge(node: Any, resource: Json) -> bool:
    inpatient = node.get("class", {}).get("code") == "IMP" and node.get("status") == "finished"
    return not inpatient or "dischargeDisposition" in node.get("hospitalization", {})


def _malk_system(node: Any, resource: Json) -> bool:
    system = node.get("system")
    if not isinstance(system, str) or not system.startswith(_MA_LK_PREFIX):
        return True
    return _MA_LK.search(system) is not None


def _observation_value(node: Any, resource: Json) -> bool:
    if any(f"value{v}" in node for v in _VALUES):
        return True
    return any(k in node for k in ("component", "hasMember", "dataAbsentReason"))


def _dosage(node: Any, resource: Json) -> bool:
    text = node.get("text")
    return not isinstance(text, str) or _DOSAGE.search(text) is not None


def _attachment(node: Any, resource: Json) -> bool:
    return "data" in node or "url" in node


def _name(node: Any, resource: Json) -> bool:
    return "text" in node or "family" in node


def _benefit_level(node: Any, resource: Json) -> bool:
    card = node.get("subscriberId")
    levels = _extensions(node, _LEVEL_EXT)
    if not isinstance(card, str) or not re.match(r"^[A-Z]{2}[1-5]", card) or not levels:
        return True
    codes = {e.get("valueCoding", {}).get("code") for e in levels}
    return codes == {card[2]}


def _has_value_x(node: Any) -> bool:
    """``value.exists()`` on a choice ``value[x]`` (fhirpathpy, without the R4 model, does
    not find ``valueQuantity`` under ``value``)."""
    return any(key.startswith("value") for key in node)


def _vs_2(node: Any, resource: Json) -> bool:
    if "component" in node or "hasMember" in node:
        return True
    return "dataAbsentReason" in node or _has_value_x(node)


def _vs_3(node: Any, resource: Json) -> bool:
    return _has_value_x(node) or "dataAbsentReason" in node


def _vs_1(node: Any, resource: Json) -> bool:
    """``($this as dateTime).toString().length() >= 8``: a dateTime gives at least a day (a
    Period, the other choice, passes)."""
    return not isinstance(node, str) or len(node) >= 8


_PLAIN: dict[str, Check] = {
    # R4's vital signs profiles (fhir_server/data/r4/core_profiles.json).
    "vs-1": _vs_1,
    "vs-2": _vs_2,
    "vs-3": _vs_3,
    "vn-pat-cccd-gender": _cccd_gender,
    "vn-pat-cccd-century": _cccd_century,
    "vn-pat-cccd-year": _cccd_year,
    "vn-pat-name": _name,
    "vn-addr-province": _address_province,
    "vn-enc-tz": _encounter_offset,
    "vn-enc-main-dx": _main_diagnosis,
    "vn-enc-discharge": _discharge,
    "vn-enc-malk": _malk_system,
    "vn-obs-value": _observation_value,
    "vn-mr-dosage": _dosage,
    "vn-doc-content": _attachment,
    "vn-cov-level": _benefit_level,
    "vn-appt-tz": _appointment_offset,
}
# The expressions the twins were written for (a prefix is enough for long literal lists).
_EXPRESSIONS: dict[str, str] = {
    "vs-1": "($this as dateTime).toString().length() >= 8",
    "vs-2": "(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or "
    "value.exists())",
    "vs-3": "value.exists() or dataAbsentReason.exists()",
    "vn-pat-cccd-gender": "value.matches('^[0-9]{12}$') implies ((%resource.gender = 'male'",
    "vn-pat-cccd-century": "(value.matches('^[0-9]{12}$') and %resource.birthDate.exists()) "
    "implies (value.substring(3,1).toInteger() div 2)",
    "vn-pat-cccd-year": "(value.matches('^[0-9]{12}$') and %resource.birthDate.exists()) "
    "implies value.substring(4,2)",
    "vn-pat-cccd-province": "value.matches('^[0-9]{12}$') implies value.substring(0,3) in (",
    "vn-pat-name": "text.exists() or family.exists()",
    "vn-addr-province": "(country.empty() or country = 'VN') implies extension.where(",
    "vn-enc-tz": "(period.start | period.end).all(",
    "vn-enc-main-dx": "diagnosis.where(rank = 1).count() <= 1",
    "vn-enc-discharge": "(class.code = 'IMP' and status = 'finished') implies "
    "hospitalization.dischargeDisposition.exists()",
    "vn-enc-malk": "system.startsWith('https://fhir.sskdt.vn/sid/ma-lk/') implies",
    "vn-obs-value": "valueQuantity.exists() or",
    "vn-mr-dosage": "text.exists() implies text.matches(",
    "vn-doc-content": "data.exists() or url.exists()",
    "vn-cov-level": "(subscriberId.matches('^[A-Z]{2}[1-5]') and extension.where(",
    "vn-appt-tz": "(start | end).all(",
}
_LIST = re.compile(r"'(\d{3})'")


def native_invariant(key: str, expression: str) -> Check | None:
    """The Python twin of invariant ``key`` if ``expression`` is the one it implements."""
    expected = _EXPRESSIONS.get(key)
    if expected is None or not expression.startswith(expected):
        return None
    if key == "vn-pat-cccd-province":
        return _cccd_province(frozenset(_LIST.findall(expression)))
    return _PLAIN[key]

"""Addresses and the administrative units they name, before and after 1 July 2025.

An address names its units with the extensions ``address-province-code`` (2 digits),
``address-district-code`` (3 digits, before 1 July 2025 only) and ``address-commune-code``
(5 digits). Codes are read in the list of the era the address describes (:func:`reading_date`):

1. ``Address.period.end`` when present: the codes must be those in force on that day;
2. otherwise the date of the record it came with: the visit of the Bundle being written
   (:func:`address_context`, set from the Bundle's Encounter) or the resource's own date
   (``Patient.deceasedDateTime``). A record of 2024 may still carry the patient's address of
   today, so codes that do not fit that day's list but fit today's are read in today's;
3. otherwise today (+07:00).

:func:`check` reports, for one address, the units not in force on that date (naming the unit
and the date), the district and commune codes no list knows (error or warning, as configured)
and the units that do not lie in the province (or district) the address names.
:func:`annotate` adds to every address written with the codes of before 1 July 2025 the
extension ``address-current-units``: the province it lies in today and, when the old commune
went wholly into one, today's commune; when it was divided, every candidate and
``split = true`` (no candidate is chosen). The extension belongs to the server: one sent by a
client is replaced.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from fhir_server.conformance.structure import load_table
from fhir_server.geography.units import REFORM, Era, Level, Unit, Units, default_units, era_of

__all__ = [
    "COMMUNE",
    "CURRENT",
    "DISTRICT",
    "PROVINCE",
    "AddressContext",
    "Problem",
    "address_context",
    "addresses_of",
    "annotate",
    "check",
    "current_context",
    "reading_date",
    "visit_date",
]

Json = dict[str, Any]
_SD = "https://fhir.sskdt.vn/StructureDefinition"
PROVINCE = f"{_SD}/address-province-code"
DISTRICT = f"{_SD}/address-district-code"
COMMUNE = f"{_SD}/address-commune-code"
CURRENT = f"{_SD}/address-current-units"
_CODES = {PROVINCE: "province", DISTRICT: "district", COMMUNE: "commune"}
_VIETNAM = timezone(timedelta(hours=7))
#: The resource's own date, by type, where it has one that an address may be read at.
_RECORD_DATES = {"Patient": "deceasedDateTime"}
_LAST_OLD_DAY = REFORM - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AddressContext:
    """What the address checks need from the write: the visit date of the Bundle (None
    outside one) and the severity of a district or commune code no list knows."""

    visit: date | None = None
    unknown: Literal["error", "warning"] = "error"


_DEFAULT = AddressContext()
_CONTEXT: ContextVar[AddressContext | None] = ContextVar("address_context", default=None)


def current_context() -> AddressContext:
    """The context the address checks use now."""
    return _CONTEXT.get() or _DEFAULT


@contextmanager
def address_context(**changes: Any) -> Iterator[AddressContext]:
    """Within the block, the address checks use the current context with ``changes``
    (``visit=``, ``unknown=``)."""
    token = _CONTEXT.set(replace(current_context(), **changes))
    try:
        yield current_context()
    finally:
        _CONTEXT.reset(token)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding on an address; ``where`` is the FHIRPath below the address."""

    severity: str
    message_id: str
    text: str
    where: str


@dataclass(frozen=True, slots=True)
class _Codes:
    """The unit codes an address carries, with where each sits."""

    values: dict[str, tuple[str, str]]  # level -> (code, FHIRPath below the address)
    district_text: bool

    def code(self, level: str) -> str | None:
        found = self.values.get(level)
        return found[0] if found else None


def _read_codes(address: Json) -> _Codes:
    values: dict[str, tuple[str, str]] = {}
    for index, extension in enumerate(address.get("extension", ())):
        level = _CODES.get(extension.get("url", "")) if isinstance(extension, dict) else None
        value = extension.get("valueCode") if level else None
        if level and isinstance(value, str) and level not in values:
            values[level] = (value, f"extension[{index}].value")
    return _Codes(values, "district" in address)


def _day(text: Any, last: bool = False) -> date | None:
    """The day of a FHIR date or dateTime as written; a partial date gives its first (or
    ``last``) day."""
    if not isinstance(text, str) or len(text) < 4 or not text[:4].isdigit():
        return None
    try:
        if len(text) >= 10:
            return date.fromisoformat(text[:10])
        if len(text) == 7:
            first = date(int(text[:4]), int(text[5:7]), 1)
            return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(
                days=1) if last else first  # fmt: skip
        return date(int(text[:4]), 12, 31) if last else date(int(text[:4]), 1, 1)
    except ValueError:
        return None


def today() -> date:
    """Today in Viet Nam."""
    return datetime.now(_VIETNAM).date()


def reading_date(address: Json, resource: Json) -> tuple[date, bool]:
    """The date the address describes and whether it is explicit (``period.end``) rather
    than the record's date or today."""
    end = _day(address.get("period", {}).get("end"), last=True)
    if end is not None:
        return end, True
    record = current_context().visit or _day(resource.get(_RECORD_DATES.get(
        resource.get("resourceType", ""), "")))  # fmt: skip
    return record or today(), False


def visit_date(bundle: Json) -> date | None:
    """The earliest start of the Bundle's Encounters (their end when they have no start)."""
    days = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Encounter":
            period = resource.get("period")
            period = period if isinstance(period, dict) else {}
            found = _day(period.get("start")) or _day(period.get("end"))
            if found is not None:
                days.append(found)
    return min(days) if days else None


# -- reading an address in an era --------------------------------------------------------------


def _fits(units: Units, codes: _Codes, era: Era) -> bool:
    """Do every code (and the district text) belong to ``era``'s lists and to each other?"""
    if era == "2025" and (codes.district_text or codes.code("district")):
        return False
    province = codes.code("province")
    found = {level: units.of_era(era, level, code)  # type: ignore[arg-type]
             for level, (code, _) in codes.values.items()}  # fmt: skip
    if any(unit is None for unit in found.values()):
        return False
    return all(unit is not None and _inside(unit, province, codes.code("district"))
               for unit in found.values())  # fmt: skip


def _inside(unit: Unit, province: str | None, district: str | None) -> bool:
    in_province = province is None or unit.province == province
    in_district = district is None or unit.level != "commune" or unit.district == district
    return in_province and in_district


def _era(units: Units, codes: _Codes, address: Json, resource: Json) -> tuple[Era, date]:
    """The era to read the codes in, and the date to name in findings."""
    on, explicit = reading_date(address, resource)
    era = era_of(on)
    if explicit or _fits(units, codes, era):
        return era, on
    now = today()
    if era_of(now) != era and _fits(units, codes, era_of(now)):
        return era_of(now), now
    return era, on


# -- checking ----------------------------------------------------------------------------------


def check(address: Json, resource: Json) -> list[Problem]:
    """The findings on the unit codes of one Vietnamese address (none for another country)."""
    if address.get("country", "VN") != "VN":
        return []
    units = default_units()
    codes = _read_codes(address)
    era, on = _era(units, codes, address, resource)
    problems: list[Problem] = []
    if era == "2025" and codes.district_text:
        problems.append(Problem(
            "error", "MSG_ADDRESS_DISTRICT",
            f"district is only allowed on an address describing a day before {REFORM} "
            f"(this one describes {on}); districts were abolished on {REFORM}", "district"))
    levels: tuple[Level, ...] = ("province", "district", "commune")
    for level in levels:
        if level in codes.values:
            problems.extend(_check_code(units, codes, level, era, on))
    return problems


def _check_code(units: Units, codes: _Codes, level: Level, era: Era, on: date) -> list[Problem]:
    code, where = codes.values[level]
    unit = units.of_era(era, level, code)
    if unit is None:
        return _absent(units, level, code, era, on, where)
    province = codes.code("province")
    district = codes.code("district") if era == "pre-2025" else None
    if level != "province" and not _inside(unit, province, district):
        return [Problem("error", "MSG_ADDRESS_UNIT_MISMATCH", _mismatch(units, unit, province,
                                                                         district), where)]
    return []


def _label(unit: Unit) -> str:
    return f"'{unit.code}' ({unit.name})"


def _absent(units: Units, level: Level, code: str, era: Era, on: date,
            where: str) -> list[Problem]:  # fmt: skip
    """A code not in the list of ``era``: not in force on ``on``, or unknown."""
    other: Era = "pre-2025" if era == "2025" else "2025"
    elsewhere = units.of_era(other, level, code)
    if era == "2025" and elsewhere is not None:
        return [Problem("error", "MSG_ADDRESS_UNIT_NOT_IN_FORCE",
                        _retired(units, elsewhere, on), where)]
    if level == "province" and elsewhere is None:
        return []  # the binding of the extension to ValueSet address-province reports it
    severity = current_context().unknown
    listed = "the units in force from 1 July 2025" if era == "2025" else (
        "the units in force before 1 July 2025 (the catalogue of January 2025: units dissolved "
        "earlier are not in it)")  # fmt: skip
    text = f"{level.capitalize()} code '{code}' is not one of {listed}, the list for {on}"
    if elsewhere is not None:
        text += f"; it is {_label(elsewhere)} from 1 July 2025"
    return [Problem(severity, "MSG_ADDRESS_UNIT_UNKNOWN", text, where)]


def _retired(units: Units, unit: Unit, on: date) -> str:
    """Why a unit of before the reform is not in force on ``on``."""
    text = (f"{unit.level.capitalize()} {_label(unit)} was not in force on {on}: it belongs "
            f"to the units in force until {_LAST_OLD_DAY}")
    if unit.level == "district":
        return f"{text}; districts were abolished on {REFORM}"
    now = units.today(unit.province, unit.district, unit.code if unit.level == "commune" else None)
    if now is not None and unit.level == "province":
        text += f"; it is now part of {_label(now.province)}"
    elif now is not None and now.commune is not None:
        text += f"; it is now part of {_label(now.commune)}, {now.province.name}"
    elif now is not None and now.split:
        names = ", ".join(_label(c) for c in now.candidates)
        text += f"; it was divided between {names}"
    return text


def _mismatch(units: Units, unit: Unit, province: str | None, district: str | None) -> str:
    if district is not None and unit.level == "commune" and unit.district != district:
        return (f"Commune {_label(unit)} lies in district '{unit.district}', not in the "
                f"district '{district}' the address names")
    parent = units.of_era(unit.era, "province", unit.province)
    where = _label(parent) if parent is not None else f"'{unit.province}'"
    return (f"{unit.level.capitalize()} {_label(unit)} lies in province {where}, not in the "
            f"province '{province}' the address names")


# -- annotating --------------------------------------------------------------------------------


def annotate(resource: Json) -> None:
    """Give every Vietnamese address of ``resource`` read in the units of before 1 July 2025
    the extension ``address-current-units``; remove it from every other address."""
    units = default_units()
    for address in addresses_of(resource):
        extensions = [e for e in address.get("extension", ())
                      if not (isinstance(e, dict) and e.get("url") == CURRENT)]  # fmt: skip
        current = _current_units(units, address, resource)
        if current is not None:
            extensions.append(current)
        if extensions:
            address["extension"] = extensions
        else:
            address.pop("extension", None)


def _current_units(units: Units, address: Json, resource: Json) -> Json | None:
    if address.get("country", "VN") != "VN":
        return None
    codes = _read_codes(address)
    era, on = _era(units, codes, address, resource)
    province = codes.code("province")
    if era != "pre-2025" or province is None:
        return None
    now = units.today(province, codes.code("district"), codes.code("commune"))
    if now is None:
        return None
    parts = [_coding("province", now.province)]
    if now.commune is not None:
        parts.append(_coding("commune", now.commune))
    elif now.split:
        parts += [_coding("candidate", c) for c in now.candidates]
        parts.append({"url": "split", "valueBoolean": True})
    parts.append({"url": "readOn", "valueDate": on.isoformat()})
    return {"url": CURRENT, "extension": parts}


def _coding(name: str, unit: Unit) -> Json:
    return {"url": name, "valueCoding": {"system": unit.system, "code": unit.code,
                                         "display": unit.name}}


def addresses_of(resource: Json) -> list[Json]:
    """Every Address object of a resource (at the paths of its R4 definition)."""
    found: list[Json] = []
    for path in _address_paths(resource.get("resourceType", "")):
        nodes: list[Any] = [resource]
        for name in path:
            nodes = [child for node in nodes if isinstance(node, dict)
                     for child in _as_list(node.get(name))]  # fmt: skip
        found += [node for node in nodes if isinstance(node, dict)]
    return found


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@functools.cache
def _address_paths(structure: str, depth: int = 0) -> tuple[tuple[str, ...], ...]:
    """The JSON paths of the Address elements of an R4 structure (its backbone elements
    included), from the element tables."""
    table = load_table("r4_elements.json")
    if structure not in table or depth > 4:
        return ()
    out: list[tuple[str, ...]] = []
    for name, (_low, _high, types) in table[structure][1].items():
        if "Address" in types:
            out.append((name,))
        elif "BackboneElement" in types or "Element" in types:
            out += [(name, *rest) for rest in _address_paths(f"{structure}.{name}", depth + 1)]
    return tuple(out)

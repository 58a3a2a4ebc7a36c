"""Normalization of one selected element into index rows, by parameter type and JSON shape.

Each function adds rows ``(code, ...)`` to ``tables[<table>]`` (dicts used as ordered sets).
Shapes are recognised by their keys because expressions select JSON, not typed elements:
a CodeableConcept has ``coding``/``text``, an Identifier or ContactPoint ``value``, a Coding
``code``, a HumanName ``family``/``given``, a Period ``start``/``end``, a Quantity ``value``.
"""

from __future__ import annotations

from typing import Any

from fhir_server.folding import fold
from fhir_server.search.dates import MAX_MICROS, MIN_MICROS, date_range
from fhir_server.search.expressions import reference_type

__all__ = [
    "absolute_target_id", "dates", "numbers", "quantities", "references", "strings", "tokens",
    "uris",
]

Tables = dict[str, dict[tuple[Any, ...], None]]

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _add_string(tables: Tables, code: str, text: str) -> None:
    if text:
        tables["strings"][(code, fold(text), text)] = None


def strings(tables: Tables, code: str, value: Any) -> None:
    """A string, or each part of a HumanName or Address."""
    if isinstance(value, str):
        _add_string(tables, code, value)
        return
    if not isinstance(value, dict):
        return
    for key in _NAME_PARTS + _ADDRESS_PARTS:
        part = value.get(key)
        for text in part if isinstance(part, list) else (part,):
            if isinstance(text, str):
                _add_string(tables, code, text)


def _add_text(tables: Tables, code: str, text: Any) -> None:
    if isinstance(text, str) and text:
        tables["texts"][(code, fold(text))] = None


def _add_coding(tables: Tables, code: str, coding: Any) -> None:
    if not isinstance(coding, dict):
        return
    if isinstance(coding.get("code"), str):
        tables["tokens"][(code, coding.get("system") or "", coding["code"])] = None
    _add_text(tables, code, coding.get("display"))


def tokens(tables: Tables, code: str, value: Any) -> None:
    """A code/string/boolean, Coding, CodeableConcept, Identifier or ContactPoint."""
    if isinstance(value, bool):
        tables["tokens"][(code, "", "true" if value else "false")] = None
    elif isinstance(value, str):
        tables["tokens"][(code, "", value)] = None
    elif isinstance(value, dict):
        _token_element(tables, code, value)


def _token_element(tables: Tables, code: str, value: dict[str, Any]) -> None:
    if "coding" in value or ("text" in value and "value" not in value):
        for coding in value.get("coding") or ():
            _add_coding(tables, code, coding)
        _add_text(tables, code, value.get("text"))
    elif isinstance(value.get("value"), str):
        system = value.get("system") or ""
        tables["tokens"][(code, system, value["value"])] = None
        if system and ":" not in system:
            # A ContactPoint (system phone/email...): its value also matches without system.
            tables["tokens"][(code, "", value["value"])] = None
        type_ = value.get("type")
        if isinstance(type_, dict):
            _add_text(tables, code, type_.get("text"))
            _add_of_type(tables, code, type_, value["value"])
    else:
        _add_coding(tables, code, value)


def _add_of_type(tables: Tables, code: str, type_: dict[str, Any], value: str) -> None:
    """Rows for ``:of-type``: (type system, ``type code|value``) under ``<code>:of-type``."""
    for coding in type_.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            row = (f"{code}:of-type", coding.get("system") or "", f"{coding['code']}|{value}")
            tables["tokens"][row] = None


def dates(tables: Tables, code: str, value: Any) -> None:
    """A date, dateTime or instant; a Period; a Timing's events and bounds."""
    if isinstance(value, str):
        _add_date(tables, code, value, value)
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        _add_period(tables, code, value)
    elif isinstance(value, dict):
        for event in value.get("event") or ():
            _add_date(tables, code, event, event)
        bounds = (value.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            _add_period(tables, code, bounds)


def _add_date(tables: Tables, code: str, start: Any, end: Any) -> None:
    try:
        low = date_range(start)[0] if isinstance(start, str) else MIN_MICROS
        high = date_range(end)[1] if isinstance(end, str) else MAX_MICROS
    except ValueError:
        return
    tables["dates"][(code, low, high)] = None


def _add_period(tables: Tables, code: str, period: dict[str, Any]) -> None:
    _add_date(tables, code, period.get("start"), period.get("end"))


def numbers(tables: Tables, code: str, value: Any) -> None:
    """An integer or decimal (a point range), or the value of a Quantity."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        tables["numbers"][(code, float(value), float(value))] = None
    elif isinstance(value, dict) and isinstance(value.get("value"), int | float):
        tables["numbers"][(code, float(value["value"]), float(value["value"]))] = None


def quantities(tables: Tables, code: str, value: Any) -> None:
    """A Quantity (by system and code, and by unit), or a Range."""
    if not isinstance(value, dict):
        return
    if "low" in value or "high" in value:
        low, high = value.get("low") or {}, value.get("high") or {}
        unit = low or high
        _add_quantity(tables, code, unit, low.get("value"), high.get("value"))
    else:
        _add_quantity(tables, code, value, value.get("value"), value.get("value"))


def _add_quantity(tables: Tables, code: str, unit: dict[str, Any], low: Any, high: Any) -> None:
    if not isinstance(low, int | float) and not isinstance(high, int | float):
        return
    low_f = float(low) if isinstance(low, int | float) else float("-inf")
    high_f = float(high) if isinstance(high, int | float) else float("inf")
    system, unit_code, text = unit.get("system") or "", unit.get("code"), unit.get("unit")
    if isinstance(unit_code, str):
        tables["quantities"][(code, system, unit_code, low_f, high_f)] = None
    if isinstance(text, str) and text != unit_code:
        tables["quantities"][(code, "", text, low_f, high_f)] = None
    if not isinstance(unit_code, str) and not isinstance(text, str):
        tables["quantities"][(code, "", "", low_f, high_f)] = None


def references(tables: Tables, code: str, value: Any) -> None:
    """A Reference (relative, absolute or logical by identifier) or a canonical."""
    if isinstance(value, str):
        _add_reference(tables, code, value)
    elif isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            _add_reference(tables, code, value["reference"])
        identifier = value.get("identifier")
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            row = (f"{code}:identifier", identifier.get("system") or "", identifier["value"])
            tables["tokens"][row] = None


def absolute_target_id(url: str) -> str:
    """The id kept with an absolute reference (without its history or version): the last
    segment when the one before it names a resource type, else ``""``. A search by url asks
    for the same id, which the store's reference index leads with."""
    return url.rstrip("/").rsplit("/", 1)[-1] if reference_type(url) else ""


def _add_reference(tables: Tables, code: str, reference: str) -> None:
    if reference.startswith("#"):
        return  # a contained resource is not searchable by reference
    kind = reference_type(reference)
    plain = reference.split("/_history/", 1)[0].split("|", 1)[0]
    if "://" in reference or reference.startswith("urn:"):
        ident = absolute_target_id(plain)
        tables["references"][(code, kind or "", ident, plain)] = None
    elif kind:
        tables["references"][(code, kind, plain.split("/")[-1], "")] = None


def uris(tables: Tables, code: str, value: Any) -> None:
    """A uri, url, canonical or oid."""
    if isinstance(value, str) and value:
        tables["uris"][(code, value)] = None

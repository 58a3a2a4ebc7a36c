"""Which identifier SO_CCCD holds, and the person key of a visit.

XML 130 says SO_CCCD carries the CCCD, or else the CMND, the passport number, or the electronic
identification account code (VIETNAM.md §2.7), without saying which. The value is classified
by its shape: 12 digits are the personal identification number (the 12-digit CMND of 2012-2016
carried the same number); 9 digits are a CMND for a Vietnamese national and a passport number
otherwise; a letter and 7 or 8 digits, or anything held by a foreigner, is a passport; what
remains is filed as the VNeID account code. A Patient is matched on the first of these the
visit gives, then on the insurance card, then on the facility's patient code MA_BN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fhir_server.bridges.xml130.tables import system

__all__ = ["person_identifier", "person_key", "person_value", "vietnamese"]

_V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_VIETNAM = frozenset({"", "000", "704", "VN", "VNM"})
_KINDS = ("cccd", "cmnd", "passport", "eid")
_TYPES = {"cccd": "NI", "cmnd": "CZ", "passport": "PPN"}


def vietnamese(nationality: str) -> bool:
    """Whether MA_QUOCTICH names Vietnam (empty, or the codes vendors use for it)."""
    return nationality.strip().upper() in _VIETNAM


def _kind(value: str, nationality: str) -> str:
    if re.fullmatch(r"[0-9]{12}", value):
        return "cccd"
    if re.fullmatch(r"[0-9]{9}", value) and vietnamese(nationality):
        return "cmnd"
    if re.fullmatch(r"[A-Z][0-9]{7,8}", value) or not vietnamese(nationality):
        return "passport"
    return "eid"


def person_identifier(value: str, nationality: str) -> dict[str, Any]:
    """The Patient.identifier for a SO_CCCD value."""
    kind = _kind(value, nationality)
    identifier: dict[str, Any] = {"use": "official", "system": system("@" + kind),
                                  "value": value}
    if kind in _TYPES:
        identifier["type"] = {"coding": [{"system": _V2, "code": _TYPES[kind]}]}
    return identifier


def person_value(patient: Mapping[str, Any]) -> str | None:
    """The SO_CCCD a Patient gives back: its CCCD, else CMND, passport, VNeID code."""
    identifiers = patient.get("identifier") or []
    for kind in _KINDS:
        wanted = system("@" + kind)
        for identifier in identifiers:
            if identifier.get("system") == wanted and identifier.get("value"):
                return str(identifier["value"])
    return None


def person_key(patient: Mapping[str, Any], facility: str) -> tuple[str, str] | None:
    """(system, value) a Patient is matched on: person number, insurance card, then MA_BN."""
    order = [system("@" + k) for k in _KINDS]
    order += [system("@bhyt"), system("@ma-bn", facility)]
    identifiers = patient.get("identifier") or []
    for wanted in order:
        for identifier in identifiers:
            if identifier.get("system") == wanted and identifier.get("value"):
                return wanted, str(identifier["value"])
    return None

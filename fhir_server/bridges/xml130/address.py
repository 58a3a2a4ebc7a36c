"""Address codes of XML 130 (MATINH_CU_TRU, MAHUYEN_CU_TRU, MAXA_CU_TRU) on a FHIR Address.

The one place where these codes are checked and mapped, with the administrative units of
``geography`` (the 63 provinces with their districts and communes before 1 July 2025, the 34
provinces and 3,321 communes since): a claim carries the codes in force on its visit's day
(old codes in old claims, new codes in new ones), and they are written as they are, in the
extensions ``address-province-code``, ``address-district-code`` and
``address-commune-code``. The write path then reads them at the visit's date and adds, to an
address in the old units, where it lies today (``address-current-units``; docs/geography.md).
"""

from __future__ import annotations

from typing import Any

from fhir_server.geography.addresses import COMMUNE, DISTRICT, PROVINCE
from fhir_server.geography.units import ERAS, Level, default_units

__all__ = ["get_part", "set_part"]

_EXTENSIONS: dict[str, str] = {"province": PROVINCE, "district": DISTRICT, "commune": COMMUNE}


def _known(level: Level, code: str) -> bool:
    """Whether some era's list knows the unit (its date is checked on write)."""
    units = default_units()
    return any(units.of_era(era, level, code) is not None
               for era in ERAS if level in ERAS[era])


def set_part(address: dict[str, Any], part: str, value: str) -> None:
    """Write one XML address field (``text``, ``province``, ``district``, ``commune``);
    raises ``ValueError`` for a province code no list knows."""
    if part == "text":
        address["text"] = value
        return
    if part == "province":
        if not _known("province", value):
            raise ValueError(f"'{value}' is not a province code (QĐ 19/2025, or the 63 "
                             "provinces before 1 July 2025)")
        address.setdefault("country", "VN")
    address.setdefault("extension", []).append({"url": _EXTENSIONS[part], "valueCode": value})


def get_part(address: dict[str, Any], part: str) -> str | None:
    """The XML value of one address field, the inverse of ``set_part``."""
    if part == "text":
        text = address.get("text")
        return str(text) if text is not None else None
    url = _EXTENSIONS[part]
    found = next((e.get("valueCode") for e in address.get("extension") or []
                  if e.get("url") == url), None)
    return str(found) if found is not None else None

"""Address codes of XML 130 (MATINH_CU_TRU, MAHUYEN_CU_TRU, MAXA_CU_TRU) on a FHIR Address.

The one place where these codes are checked and mapped: when the administrative geography
tables land (the 63 old provinces with their districts and communes, the 34 provinces and
3,321 communes of July 2025) they are used here and nowhere else.

For now, codes are carried as codes. A province code that is a province of QĐ 19/2025 goes in
the ``address-province-code`` extension; an old code that no longer names a province is mapped
to the province that absorbed it (ConceptMap province-2016-to-2025) and kept itself in
``address-legacy-code``, as is the district code (the district level ended on 1 July 2025).
The commune code goes in ``address-commune-code``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_server.conformance.terminology import default_terminology

__all__ = ["get_part", "set_part"]

_SD = "https://fhir.sskdt.vn/StructureDefinition/"
PROVINCE = _SD + "address-province-code"
COMMUNE = _SD + "address-commune-code"
LEGACY = _SD + "address-legacy-code"
PROVINCE_2025 = "https://fhir.sskdt.vn/CodeSystem/province"
PROVINCE_2016 = "https://fhir.sskdt.vn/CodeSystem/cccd-province-prefix"
DISTRICT_2004 = "https://fhir.sskdt.vn/CodeSystem/district-2004"
_MAP = "https://fhir.sskdt.vn/ConceptMap/province-2016-to-2025"


@cache
def _province_2025(code: str) -> str | None:
    """The QĐ 19/2025 province for a MATINH_CU_TRU code, or None if none is known."""
    terminology = default_terminology()
    if terminology.lookup(PROVINCE_2025, code) is not None:
        return code
    found = terminology.translate(PROVINCE_2016, "0" + code, url=_MAP)
    return next((t.concept.code for t in found if t.concept is not None), None)


def _extension(address: dict[str, Any], url: str, value: dict[str, Any]) -> None:
    address.setdefault("extension", []).append({"url": url, **value})


def set_part(address: dict[str, Any], part: str, value: str) -> None:
    """Write one XML address field (``text``, ``province``, ``district``, ``commune``);
    raises ``ValueError`` for a province code no table knows."""
    if part == "text":
        address["text"] = value
    elif part == "province":
        current = _province_2025(value)
        if current is None:
            raise ValueError(f"'{value}' is not a province code (QĐ 19/2025 or TT 07/2016)")
        _extension(address, PROVINCE, {"valueCode": current})
        if current != value:
            _extension(address, LEGACY, {"valueCoding": {"system": PROVINCE_2016,
                                                         "code": "0" + value}})
        address.setdefault("country", "VN")
    elif part == "district":
        _extension(address, LEGACY, {"valueCoding": {"system": DISTRICT_2004, "code": value}})
    else:
        _extension(address, COMMUNE, {"valueCode": value})


def _ext(address: dict[str, Any], url: str, system: str | None = None) -> Any:
    for extension in address.get("extension") or []:
        if extension.get("url") != url:
            continue
        coding = extension.get("valueCoding")
        if system is None:
            return extension.get("valueCode")
        if isinstance(coding, dict) and coding.get("system") == system:
            return coding.get("code")
    return None


def get_part(address: dict[str, Any], part: str) -> str | None:
    """The XML value of one address field, the inverse of ``set_part``."""
    if part == "text":
        text = address.get("text")
        return str(text) if text is not None else None
    if part == "province":
        legacy = _ext(address, LEGACY, PROVINCE_2016)
        return str(legacy)[1:] if legacy else _str(_ext(address, PROVINCE))
    if part == "district":
        return _str(_ext(address, LEGACY, DISTRICT_2004))
    return _str(_ext(address, COMMUNE))


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None

"""A facility of the registry as an Organization of the Vietnamese profile (``vn-organization``).

The Organization carries the facility code as its ``provider-code`` identifier (the key the
visit push uses), the name, the level as a ``facility-level`` coding beside the HL7
organization type ``prov``, and the address with the province and commune code extensions.
``meta.tag`` and ``meta.source`` mark it as a registry entry (:data:`REGISTRY_TAG`,
:data:`REGISTRY_SOURCE`): Organizations a push created for a facility the registry does not
know are not entries, and do not make it known.
"""

from __future__ import annotations

from typing import Any

from fhir_server.conformance.terminology import Terminology
from fhir_server.facilities.csv_rows import LEVEL_SYSTEM, PROVINCE_SYSTEM, FacilityRow

__all__ = ["FACILITY_SYSTEM", "REGISTRY_SOURCE", "REGISTRY_TAG", "organization_entry",
           "organization_of"]

FACILITY_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/provider-code"
#: ``meta.source`` of the registry's Organizations: together with the tag it makes an entry.
#: The access layer writes the caller's own identity there on every FHIR write, so no FHIR
#: client can write it; only ``facilities load`` (which runs without a caller) does.
REGISTRY_SOURCE = "urn:fhir-server:facility-registry"
REGISTRY_TAG = {"system": "https://fhir.sskdt.vn/CodeSystem/facility-registry",
                "code": "registry", "display": "Danh mục cơ sở khám bệnh, chữa bệnh"}
_ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
_PROVINCE_EXTENSION = "https://fhir.sskdt.vn/StructureDefinition/address-province-code"
_COMMUNE_EXTENSION = "https://fhir.sskdt.vn/StructureDefinition/address-commune-code"


def organization_of(row: FacilityRow, terminology: Terminology) -> dict[str, Any]:
    """The Organization of ``row`` (no id: the registry keys it by its facility code)."""
    level = terminology.lookup(LEVEL_SYSTEM, row.level)
    level_coding = {"system": LEVEL_SYSTEM, "code": row.level}
    if level is not None and level.display:
        level_coding["display"] = level.display
    kind = [{"coding": [{"system": _ORGANIZATION_TYPE, "code": "prov"}]},
            {"coding": [level_coding]}]
    return {
        "resourceType": "Organization",
        "meta": {"tag": [REGISTRY_TAG], "source": REGISTRY_SOURCE},
        "identifier": [{"system": FACILITY_SYSTEM, "value": row.code}],
        "active": True,
        "type": kind,
        "name": row.name,
        "address": [_address(row, terminology)],
    }


def _address(row: FacilityRow, terminology: Terminology) -> dict[str, Any]:
    extensions = [{"url": _PROVINCE_EXTENSION, "valueCode": row.province}]
    if row.commune:
        extensions.append({"url": _COMMUNE_EXTENSION, "valueCode": row.commune})
    province = terminology.lookup(PROVINCE_SYSTEM, row.province)
    address: dict[str, Any] = {"extension": extensions}
    if row.address:
        address["text"] = row.address
        address["line"] = [row.address]
    if province is not None:
        address["state"] = province.display
    address["country"] = "VN"
    return address


def organization_entry(row: FacilityRow, terminology: Terminology) -> dict[str, Any]:
    """A transaction entry that creates the facility's Organization, or updates the one
    with its code (a conditional update: the same row again changes nothing)."""
    criteria = f"identifier={FACILITY_SYSTEM}|{row.code}"
    return {"resource": organization_of(row, terminology),
            "request": {"method": "PUT", "url": f"Organization?{criteria}"}}

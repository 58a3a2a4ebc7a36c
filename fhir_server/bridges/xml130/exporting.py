"""A stored visit written back as XML 130 (``$export-xml130``, ``fhir-server xml130 export``).

The visit is found from its Encounter: the MA_LK identifier names the facility and MA_LK; the
visit's Provenance lists the resources the import made, and their record identifiers
(``<MA_LK>/<table>/<role>/<n>``) say which table, role and row each one is. ``unmap_tables``
turns them back into records, written as an unsigned envelope of one ``HOSO``. For a visit
pushed as FHIR (no Provenance of an import) only XML1's fields of the Encounter, Patient and
facility come back. Only what the caller may see is exported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.bridges.xml130.engine import Instance, unmap_tables
from fhir_server.bridges.xml130.envelope import encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import Standard, system
from fhir_server.bridges.xml130.transaction import VisitKeys, record_id
from fhir_server.bridges.xml130.values import VIETNAM
from fhir_server.errors import Gone, NotFound, Unprocessable
from fhir_server.interactions.context import Services
from fhir_server.interactions.read import read_resource
from fhir_server.security.policy import Access

__all__ = ["export_visit", "visit_tables"]

_MA_LK_PREFIX = system("@ma-lk", "")


def _key(encounter: dict[str, Any]) -> tuple[str, str]:
    for identifier in encounter.get("identifier") or []:
        uri = str(identifier.get("system", ""))
        if uri.startswith(_MA_LK_PREFIX) and identifier.get("value"):
            return uri[len(_MA_LK_PREFIX):], str(identifier["value"])
    raise Unprocessable("The Encounter has no MA_LK identifier; it is not an XML 130 visit",
                        message_id="MSG_XML130_NOT_A_VISIT", expression=("Encounter.identifier",))


async def _read(services: Services, reference: str) -> dict[str, Any] | None:
    kind, _, id = reference.partition("/")
    try:
        return (await services.store.read(kind, id)).resource()
    except (NotFound, Gone):
        return None


def _instance(resource: dict[str, Any], facility: str, ma_lk: str) -> Instance | None:
    wanted = system("@record", facility)
    for identifier in resource.get("identifier") or [] if not isinstance(
            resource.get("identifier"), dict) else [resource["identifier"]]:
        value = str(identifier.get("value", ""))
        if identifier.get("system") == wanted and value.startswith(ma_lk + "/"):
            table, role, n = value[len(ma_lk) + 1:].rsplit("/", 2)
            if n.isdigit():
                return Instance(table, role, int(n), 0, resource)
    return None


async def _visit_resources(services: Services, access: Access,
                           keys: VisitKeys) -> list[dict[str, Any]]:
    provenance = await _read(services, f"Provenance/{record_id(keys, 'envelope', 'provenance', 1)}")
    found = []
    for target in (provenance or {}).get("target") or []:
        reference = str(target.get("reference", ""))
        if reference.partition("/")[0] not in ("Patient", "Organization", "Encounter"):
            resource = await _read(services, reference)
            if resource is not None:
                found.append(resource)
    return access.visible_of(found)


async def visit_tables(services: Services, access: Access, standard: Standard,
                       encounter_id: str) -> tuple[str, str, dict[str, list[dict[str, str]]]]:
    """(facility, MA_LK, records by table) of a stored visit; 404 if it is not visible."""
    encounter = await read_resource(services, access, "Encounter", encounter_id)
    facility, ma_lk = _key(encounter)
    keys = VisitKeys(facility, ma_lk, b"", "")
    instances = [Instance("XML1", "encounter", 1, 1, encounter)]
    for role, element in (("patient", "subject"), ("facility", "serviceProvider")):
        shared = await _read(services, str((encounter.get(element) or {}).get("reference", "")))
        if shared is not None and access.readable(shared):
            instances.append(Instance("XML1", role, 1, 1, shared))
    for resource in await _visit_resources(services, access, keys):
        inst = _instance(resource, facility, ma_lk)
        if inst is not None:
            instances.append(inst)
    return facility, ma_lk, unmap_tables(standard, instances, ma_lk, facility)


async def export_visit(services: Services, access: Access, standard: Standard,
                       encounter_id: str) -> bytes:
    """The visit, as much of it as the caller may see, as an unsigned envelope of one HOSO."""
    facility, _, tables = await visit_tables(services, access, standard, encounter_id)
    files = []
    for name, records in tables.items():
        table = standard.tables[name]
        assert table.shape is not None
        files.append((name, encode_table(table.shape, records, list(table.facts))))
    today = datetime.now(UTC).astimezone(VIETNAM).strftime("%Y%m%d")
    return encode_envelope(facility, today, [files])

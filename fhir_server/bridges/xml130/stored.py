"""What the store already holds for a visit, and which facility the caller acts for.

Read before a visit is committed: the Encounter stored under its MA_LK (whose person must be the
visit's: a visit naming another person is rejected, not merged; its version becomes the
``ifMatch`` of the new Encounter so a change in between fails the transaction), and the
resources of the previous sending that the new one no longer has (from the visit's Provenance),
which the transaction deletes. The Encounters under a MA_LK are found by the store's
``find_many`` (ids from the identifier index) where it has one, and read by id when there are
any: a new visit, the usual case, costs one indexed statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_server.bridges.xml130.engine import Mapped
from fhir_server.bridges.xml130.envelope import problem
from fhir_server.bridges.xml130.tables import system
from fhir_server.bridges.xml130.transaction import VisitKeys, record_id
from fhir_server.errors import Forbidden, Gone, Issue, NotFound
from fhir_server.interactions.context import Services
from fhir_server.search.model import Clause, ParamType, SearchQuery, TokenValue
from fhir_server.security.policy import Access
from fhir_server.storage.port import StoredResource

__all__ = ["StoredVisit", "caller_facility", "stored_visit"]

_FACILITY_CODE = re.compile(r"^[0-9A-Z]{5}$")
_KEPT = frozenset({"Patient", "Organization", "Encounter"})


@dataclass
class StoredVisit:
    """The stored Encounter of a visit (id, version), what to delete, or why to refuse."""

    encounter_id: str | None = None
    version: int | None = None
    deletions: list[str] = field(default_factory=list)
    problem: Issue | None = None


async def _stored(services: Services, kind: str, id: str) -> StoredResource | None:
    try:
        return await services.store.read(kind, id)
    except (NotFound, Gone):
        return None


async def _read(services: Services, kind: str, id: str) -> dict[str, Any] | None:
    found = await _stored(services, kind, id)
    return found.resource() if found is not None else None


def _by_ma_lk(keys: VisitKeys) -> SearchQuery:
    """``Encounter?identifier=<ma-lk system>|<MA_LK>``, the MA_LK taken as it is (built, not
    parsed: a comma or ``|`` in it is part of the value, not search syntax)."""
    value = TokenValue(system("@ma-lk", keys.facility), keys.ma_lk)
    return SearchQuery("Encounter", (Clause("identifier", ParamType.TOKEN, (value,)),))


async def _visits(services: Services, keys: VisitKeys) -> list[StoredResource]:
    """The Encounters stored under the visit's MA_LK: their ids by the store's ``find_many``
    (one indexed statement, no page to build) where it has one, else a search."""
    query = _by_ma_lk(keys)
    find_many = getattr(services.store, "find_many", None)
    if find_many is None:
        return list((await services.store.search(query)).matches)
    found = [await _stored(services, "Encounter", id) for id in (await find_many([query]))[0]]
    return [encounter for encounter in found if encounter is not None]


def _identifiers(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(str(i.get("system")), str(i.get("value"))) for i in resource.get("identifier") or []}


async def _same_person(services: Services, encounter: dict[str, Any],
                       patient: dict[str, Any]) -> bool:
    kind, _, id = str((encounter.get("subject") or {}).get("reference", "")).partition("/")
    stored = await _read(services, "Patient", id) if kind == "Patient" else None
    return stored is None or bool(_identifiers(stored) & _identifiers(patient))


async def _leftovers(services: Services, mapped: Mapped, keys: VisitKeys) -> list[str]:
    provenance = await _read(services, "Provenance",
                             record_id(keys, "envelope", "provenance", 1))
    if provenance is None:
        return []
    kept = {record_id(keys, i.table, i.role, i.n) for i in mapped.instances}
    found = [str(t.get("reference", "")) for t in provenance.get("target") or []]
    return [ref for ref in found
            if ref.partition("/")[0] not in _KEPT and ref.partition("/")[2].startswith("x130-")
            and ref.partition("/")[2] not in kept]


async def stored_visit(services: Services, mapped: Mapped, keys: VisitKeys) -> StoredVisit:
    """What is stored under the visit's MA_LK (see the module's docstring)."""
    found = await _visits(services, keys)
    if not found:
        return StoredVisit()
    if len(found) > 1:
        return StoredVisit(problem=problem(
            "MSG_XML130_VISIT_AMBIGUOUS", "XML1.MA_LK", "nhiều lượt khám có cùng MA_LK",
            f"{len(found)} stored visits have this MA_LK"))
    encounter = found[0]
    patient = next(i.resource for i in mapped.instances if i.role == "patient")
    if not await _same_person(services, encounter.resource(), patient):
        return StoredVisit(problem=problem(
            "MSG_XML130_PERSON_MISMATCH", "XML1.SO_CCCD",
            "MA_LK này đã được lưu cho một người bệnh khác; không gộp",
            "this MA_LK is stored for another person; the visit is not merged"))
    deletions = await _leftovers(services, mapped, keys)
    return StoredVisit(encounter.id, encounter.version, deletions)


async def caller_facility(services: Services, access: Access) -> str | None:
    """The facility code the caller acts for: the provider code of the Organization its token
    names (or that Organization's id, when it is a facility code and not stored); None for a
    token without an organization (an operator, the insurance portal's relay) or no token."""
    named = access.caller.organization
    if not named:
        return None
    id = named.rpartition("/")[2]
    organization = await _read(services, "Organization", id) or {}
    codes = [v for s, v in _identifiers(organization) if s == system("@facility")]
    if codes:
        return codes[0]
    if _FACILITY_CODE.match(id):
        return id
    raise Forbidden("The token's organization has no facility code (MA_CSKCB)",
                    message_id="MSG_XML130_CALLER_FACILITY")

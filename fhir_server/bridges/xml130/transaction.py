"""One visit as one transaction Bundle, following the hospital push contract.

Patient and the facility's Organization are conditional creates (on the person's identifier,
``persons.person_key``, and on MA_CSKCB), as in a FHIR push. Every other resource has an id
derived from facility + MA_LK + table + role + number (the row's STT), so a visit sent again
updates the same resources and an identical one changes nothing; the Encounter keeps the id of
a visit already stored under its MA_LK. Each resource also carries the record identifier
``<MA_LK>/<table>/<role>/<n>`` (system ``record/<facility>``), by which the export finds its
table and row. The envelope's bytes are a ``Binary`` (id from their SHA-256, so sending the same
file twice stores it once) named by a ``Provenance`` whose targets are the visit's resources.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_server.bridges.xml130.engine import Instance, Mapped
from fhir_server.bridges.xml130.paths import locate, write
from fhir_server.bridges.xml130.persons import person_key
from fhir_server.bridges.xml130.tables import Standard, system
from fhir_server.bridges.xml130.values import date_from_xml, datetime_from_xml

__all__ = ["Plan", "VisitKeys", "binary_id", "build_transaction", "record_id", "record_value"]

Resource = dict[str, Any]
_SHARED = ("patient", "facility")
_PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


@dataclass(frozen=True)
class VisitKeys:
    """What identifies a visit and its evidence: facility, MA_LK, the envelope."""

    facility: str
    ma_lk: str
    envelope: bytes
    created: str


@dataclass
class Plan:
    """A visit's transaction Bundle and what each entry came from (None: not from a table)."""

    bundle: Resource
    sources: list[Instance | None] = field(default_factory=list)
    encounter_id: str = ""
    person: tuple[str, str] | None = None


def record_id(keys: VisitKeys, table: str, role: str, n: int) -> str:
    """The id of a role's resource: ``x130-`` and 40 hex digits of a SHA-256."""
    text = f"{keys.facility}|{keys.ma_lk}|{table}|{role}|{n}"
    return "x130-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def record_value(ma_lk: str, table: str, role: str, n: int) -> str:
    """The record identifier's value of a role's resource."""
    return f"{ma_lk}/{table}/{role}/{n}"


def binary_id(envelope: bytes) -> str:
    """The Binary id of an envelope: ``x130-env-`` and 48 hex digits of its SHA-256."""
    return "x130-env-" + hashlib.sha256(envelope).hexdigest()[:48]


def _urn(keys: VisitKeys, *parts: object) -> str:
    """``urn:uuid:`` and the name-based (SHA-1, version 5) UUID of the entry's name in the URL
    namespace: ``uuid.uuid5``'s value, written without building a ``UUID`` object."""
    name = ":".join(str(p) for p in (keys.facility, keys.ma_lk, *parts))
    return _uuid5_urn(hashlib.sha1(_URL_NAMESPACE + f"xml130:{name}".encode()).digest())


def _uuid5_urn(digest: bytes) -> str:
    """The ``urn:uuid:`` of a SHA-1 digest with the version (5) and variant bits set."""
    value = (int.from_bytes(digest[:16], "big") & _UUID_KEEP) | _UUID_SET
    text = f"{value:032x}"
    return f"urn:uuid:{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (0x5 << 76) | (0x2 << 62)


def _entry_urns(keys: VisitKeys, names: list[tuple[str, str, int]]) -> list[str]:
    """``_urn(keys, *name)`` of each name, the visit's part of the hash computed once."""
    visit = hashlib.sha1(_URL_NAMESPACE + f"xml130:{keys.facility}:{keys.ma_lk}:".encode())
    found = []
    for table, role, n in names:
        entry = visit.copy()
        entry.update(f"{table}:{role}:{n}".encode())
        found.append(_uuid5_urn(entry.digest()))
    return found


def _ref(urns: Mapping[str, list[str]], role: str) -> dict[str, str] | None:
    found = urns.get(role)
    return {"reference": found[0]} if found else None


def _link(resource: Resource, path: str, spec: Any, urns: Mapping[str, list[str]]) -> None:
    if isinstance(spec, str):
        reference = _ref(urns, spec)
        current = locate(resource, path)
        if reference is not None and isinstance(current, dict):
            current.update(reference)  # keeps an identifier a field put there (MA_BN)
        elif reference is not None:
            write(resource, path, reference)
        return
    items = [urn for role in spec["each"] for urn in urns.get(role, [])]
    shape = spec["as"]
    built = [{"reference": urn} if shape == "@" else
             {k: ({"reference": urn} if v == "@" else n if v == "#" else v)
              for k, v in shape.items()} for n, urn in enumerate(items, start=1)]
    current = locate(resource, path)
    if built and isinstance(current, list):
        current[:0] = built  # before what fields put there (a doctor among participants)
    elif built:
        write(resource, path, built)


def _original(content: bytes, title: str) -> dict[str, Any]:
    return {"attachment": {
        "contentType": "application/xml", "language": "vi",
        "data": base64.b64encode(content).decode(), "size": len(content),
        "hash": base64.b64encode(hashlib.sha1(content).digest()).decode(), "title": title}}


def _identify(inst: Instance, keys: VisitKeys) -> None:
    resource = inst.resource
    key = {"system": system("@record", keys.facility),
           "value": record_value(keys.ma_lk, inst.table, inst.role, inst.n)}
    if resource["resourceType"] == "Composition":
        resource["identifier"] = key
    else:
        resource["identifier"] = [key, *resource.get("identifier", [])]


def _entry(urn: str, resource: Resource, request: dict[str, str]) -> Resource:
    return {"fullUrl": urn, "resource": resource, "request": request}


def _conditional(urn: str, resource: Resource, key: tuple[str, str] | None) -> Resource:
    request = {"method": "POST", "url": resource["resourceType"]}
    if key is not None:
        request["ifNoneExist"] = f"identifier={key[0]}|{key[1]}"
    return _entry(urn, resource, request)


def _recorded(keys: VisitKeys, mapped: Mapped) -> str:
    try:
        return date_from_xml(keys.created) + "T00:00:00+07:00"
    except ValueError:
        encounter = next(i.resource for i in mapped.instances if i.role == "encounter")
        period = encounter.get("period") or {}
        return str(period.get("end") or period.get("start") or datetime_from_xml("202001010000"))


def _provenance(keys: VisitKeys, mapped: Mapped, urns: Mapping[tuple[str, str, int], str],
                binary: str, signature: Resource | None) -> Resource:
    targets = [{"reference": urn} for urn in urns.values()]
    facility = next(urn for (t, r, _), urn in urns.items() if r == "facility")
    return {
        "resourceType": "Provenance", "id": record_id(keys, "envelope", "provenance", 1),
        "target": targets, "recorded": _recorded(keys, mapped),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE", "display": "create"}]},
        "agent": [{"type": {"coding": [{"system": _PROVENANCE_AGENT, "code": "author"}]},
                   "who": {"reference": facility}}],
        "entity": [{"role": "source", "what": {"reference": binary}}],
        **({"signature": [signature]} if signature else {}),
    }


def build_transaction(standard: Standard, mapped: Mapped, keys: VisitKeys,
                      originals: Mapping[str, bytes], *, encounter_id: str | None = None,
                      if_match: int | None = None, with_binary: bool = True,
                      deletions: Sequence[str] = (), signature: Resource | None = None) -> Plan:
    """The transaction Bundle of a mapped visit.

    ``encounter_id`` is the id of the visit already stored (else the derived one),
    ``if_match`` its version (the Bundle then fails if it changed meanwhile), ``with_binary``
    whether the envelope is stored with this visit (the first visit of a file to commit),
    ``deletions`` the ``Type/id`` of resources of a previous sending this one no longer has,
    ``signature`` the envelope's signature (``CHUKYDONVI``) for the Provenance to record.
    """
    names = [(i.table, i.role, i.n) for i in mapped.instances]
    urns = dict(zip(names, _entry_urns(keys, names), strict=True))
    by_role: dict[str, list[str]] = {}
    for inst in mapped.instances:
        by_role.setdefault(inst.role, []).append(urns[(inst.table, inst.role, inst.n)])
    plan = Plan({"resourceType": "Bundle", "type": "transaction", "entry": []})
    binary = binary_id(keys.envelope)
    for inst in mapped.instances:
        _add(plan, standard, inst, keys, by_role, urns, originals, encounter_id, if_match)
    facility_urn = by_role["facility"][0]
    if with_binary:
        content = {"resourceType": "Binary", "id": binary, "contentType": "application/xml",
                   "securityContext": {"reference": facility_urn},
                   "data": base64.b64encode(keys.envelope).decode()}
        _append(plan, _entry(_urn(keys, "binary"), content,
                             {"method": "PUT", "url": f"Binary/{binary}"}), None)
    what = _urn(keys, "binary") if with_binary else f"Binary/{binary}"
    provenance = _provenance(keys, mapped, urns, what, signature)
    _append(plan, _entry(_urn(keys, "provenance"), provenance,
                         {"method": "PUT", "url": f"Provenance/{provenance['id']}"}), None)
    for reference in deletions:
        _append(plan, {"request": {"method": "DELETE", "url": reference}}, None)
    return plan


def _append(plan: Plan, entry: Resource, source: Instance | None) -> None:
    plan.bundle["entry"].append(entry)
    plan.sources.append(source)


def _add(plan: Plan, standard: Standard, inst: Instance, keys: VisitKeys,
         by_role: Mapping[str, list[str]], urns: Mapping[tuple[str, str, int], str],
         originals: Mapping[str, bytes], encounter_id: str | None, if_match: int | None) -> None:
    role = standard.tables[inst.table].roles[inst.role]
    resource = inst.resource
    for path, spec in role.links.items():
        _link(resource, path, spec, by_role)
    urn = urns[(inst.table, inst.role, inst.n)]
    if role.original:
        resource["content"] = [_original(originals[inst.table], f"{inst.table} {keys.ma_lk}")]
    if inst.role == "patient":
        plan.person = person_key(resource, keys.facility)
        _append(plan, _conditional(urn, resource, plan.person), inst)
        return
    if inst.role == "facility":
        _append(plan, _conditional(urn, resource, (system("@facility"), keys.facility)), inst)
        return
    if inst.role == "encounter":
        resource["identifier"] = [{"system": system("@ma-lk", keys.facility),
                                   "value": keys.ma_lk}, *resource.get("identifier", [])]
        resource["id"] = plan.encounter_id = encounter_id or record_id(keys, "XML1", "encounter", 1)
    else:
        _identify(inst, keys)
        resource["id"] = record_id(keys, inst.table, inst.role, inst.n)
    request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    if inst.role == "encounter" and if_match is not None:
        request["ifMatch"] = f'W/"{if_match}"'
    _append(plan, _entry(urn, resource, request), inst)

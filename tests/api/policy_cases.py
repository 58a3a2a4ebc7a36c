"""The requests of the access policy matrix (tests/api/test_access_policy_matrix.py): for each
case of its table, the route it takes and how it is built for a target person of a world of
two patients (tests/api/two_patients.py). Instance requests aim at the target's laboratory
Observation unless the case names another type; bodies are A's own, with identifiers of their
own, so that nothing A writes carries B's data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.api.bulk_export import cohort, create_group, finished, kick_off, local
from tests.api.two_patients import FHIR, Call, Person, World, new_id, privacy_consent

__all__ = ["CASES", "Case"]


@dataclass(frozen=True)
class Case:
    """A request of the table: the route it takes, how it is built for a target, the role of
    the target whose id an allowed answer shows, and whether a Bundle entry can carry it."""

    route: tuple[str, str]
    build: Callable[[World, Person], Call]
    shows: str | None = None
    operation: tuple[str, str, str] | None = None
    in_bundle: bool = False
    #: What the world needs before the request is built (a Group, an export to poll).
    prepare: Callable[[World], Awaitable[None]] | None = None
    writes: bool = False

    @property
    def may_write(self) -> bool:
        """Whether some token may change the store with it (then it gets a world of its own;
        so do history requests, which must see the newest versions of their world)."""
        method, path = self.route
        reads = method == "GET" or path.endswith(("_search", "$op"))
        return self.writes or not reads or "_history" in path

def _lab_of(world: World) -> dict[str, Any]:
    """A laboratory Observation written by A: about A, with an identifier of its own."""
    lab = {key: value for key, value in world.a.resources["lab"].items() if key != "id"}
    lab["identifier"] = [{"system": "urn:test:lab", "value": new_id()}]
    lab["note"] = [{"text": "written by A"}]
    return lab


def _create(world: World, target: Person) -> Call:
    lab = _lab_of(world)
    lab["subject"] = {"reference": target.ref("patient")}
    return Call("POST", "/fhir/Observation", json=lab, headers=FHIR)


def _conditional_create(world: World, target: Person) -> Call:
    criteria = f"identifier={target.identifier('lab')}"
    return Call("POST", "/fhir/Observation", json=_lab_of(world),
                headers={**FHIR, "If-None-Exist": criteria})


def _update(world: World, target: Person) -> Call:
    lab = {**_lab_of(world), "id": target.ids["lab"]}
    return Call("PUT", f"/fhir/{target.ref('lab')}", json=lab, headers=FHIR)


def _conditional_update(world: World, target: Person) -> Call:
    return Call("PUT", "/fhir/Observation", {"identifier": target.identifier("lab")},
                json=_lab_of(world), headers=FHIR)


def _patch(world: World, target: Person) -> Call:
    change = [{"op": "replace", "path": "/status", "value": "amended"}]
    return Call("PATCH", f"/fhir/{target.ref('lab')}", json=change,
                headers={"Content-Type": "application/json-patch+json"})


def _conditional_patch(world: World, target: Person) -> Call:
    change = [{"op": "replace", "path": "/status", "value": "amended"}]
    return Call("PATCH", "/fhir/Observation", {"identifier": target.identifier("lab")},
                json=change, headers={"Content-Type": "application/json-patch+json"})


def _get(path: str, **params: str) -> Callable[[World, Person], Call]:
    """A GET of ``path`` with ``{role}`` placeholders filled from the target."""
    return lambda world, target: Call("GET", _fill(path, target),
                                      {k: _fill(v, target) for k, v in params.items()})


def _fill(text: str, target: Person) -> str:
    return text.format(**{role: target.ids[role] for role in target.ids},
                       **{f"{role}_identifier": target.identifier(role)
                          for role in target.identifiers})


def _search_form(path: str) -> Callable[[World, Person], Call]:
    def build(world: World, target: Person) -> Call:
        if path == "/fhir/_search":  # system search: the parameters common to all types
            return Call("POST", path, form={"_type": "Observation", "_id": target.ids["lab"]})
        return Call("POST", path, form={"identifier": target.identifier("lab")})

    return build


def _delete(path: str, **params: str) -> Callable[[World, Person], Call]:
    return lambda world, target: Call("DELETE", _fill(path, target),
                                      {k: _fill(v, target) for k, v in params.items()})


def _validate_type(world: World, target: Person) -> Call:
    lab = _lab_of(world)
    lab["subject"] = {"reference": target.ref("patient")}
    return Call("POST", "/fhir/Observation/$validate", json=lab, headers=FHIR)


def _validate_instance(world: World, target: Person) -> Call:
    return Call("POST", f"/fhir/{target.ref('lab')}/$validate",
                json={"resourceType": "Parameters"}, headers=FHIR)


_ASYNC = {"Prefer": "respond-async"}
_NO_JOB = "0" * 32


async def _groups(world: World) -> None:
    """A Group of each citizen (it is in that citizen's compartment)."""
    for person in (world.a, world.b):
        if f"group-{person.patient}" not in world.prepared:
            world.prepared[f"group-{person.patient}"] = await create_group(
                world.http, cohort("one", members=(person.ref("patient"),)))


def _group_export(world: World, target: Person) -> Call:
    group = world.prepared.get(f"group-{target.patient}", target.ids["patient"])
    return Call("GET", f"/fhir/Group/{group}/$export", {"_type": "Patient"}, headers=_ASYNC)


async def _export_done(world: World) -> None:
    """An export started by the world's client (``system/*.cruds``, the ``sys`` tokens'
    principal), finished: its status location and the url of one of its files."""
    started = await kick_off(world.http, params={"_type": "Patient"})
    location = started.headers["content-location"]
    manifest = (await finished(world.http, location)).json()
    world.prepared["status"] = local(location)
    world.prepared["file"] = local(manifest["output"][0]["url"])


def _prepared(key: str, method: str = "GET") -> Callable[[World, Person], Call]:
    fallback = f"/fhir/$export-status/{_NO_JOB}"
    return lambda world, target: Call(method, world.prepared.get(key, fallback))


def _break_glass(world: World, target: Person) -> Call:
    reason = {"resourceType": "Parameters",
              "parameter": [{"name": "reason", "valueString": "bất tỉnh khi vào cấp cứu"}]}
    return Call("POST", f"/fhir/{target.ref('patient')}/$break-glass", json=reason,
                headers=FHIR)


def _create_consent(world: World, target: Person) -> Call:
    """A privacy Consent of the target's Patient that shares it with facility Y (what a
    clinician or facility would write to grant itself access)."""
    consent = privacy_consent(target.ref("patient"), f"Organization/{world.shared['org_y']}")
    return Call("POST", "/fhir/Consent", json=consent, headers=FHIR)


def _revoke_consent(world: World, target: Person) -> Call:
    """A's Consent revoked (status inactive), written under the target's Consent id."""
    consent = {**world.a.resources["consent"], "status": "inactive",
               "id": target.ids["consent"]}
    return Call("PUT", f"/fhir/Consent/{target.ids['consent']}", json=consent, headers=FHIR)


_VISIT_TYPES = "https://fhir.sskdt.vn/ValueSet/visit-type"
_VISIT_CODES = "https://fhir.sskdt.vn/CodeSystem/visit-type"
_TYPE_OP = ("GET", "/fhir/{type}/$op")
_INSTANCE_OP = ("GET", "/fhir/{type}/{id}/$op")

CASES: dict[str, Case] = {
    "read": Case(("GET", "/fhir/{type}/{id}"), _get("/fhir/Observation/{lab}"), "lab",
                 in_bundle=True),
    "read Patient": Case(("GET", "/fhir/{type}/{id}"), _get("/fhir/Patient/{patient}"),
                         "patient", in_bundle=True),
    "read Binary": Case(("GET", "/fhir/{type}/{id}"), _get("/fhir/Binary/{binary}"), "binary",
                        in_bundle=True),
    "vread": Case(("GET", "/fhir/{type}/{id}/_history/{vid}"),
                  _get("/fhir/Observation/{lab}/_history/1"), "lab", in_bundle=True),
    "history instance": Case(("GET", "/fhir/{type}/{id}/_history"),
                             _get("/fhir/Observation/{lab}/_history"), "lab", in_bundle=True),
    "history type": Case(("GET", "/fhir/{type}/_history"),
                         _get("/fhir/Observation/_history", _count="500"), "lab",
                         in_bundle=True),
    "history system": Case(("GET", "/fhir/_history"), _get("/fhir/_history", _count="500"),
                           "lab"),
    "search": Case(("GET", "/fhir/{type}"),
                   _get("/fhir/Observation", identifier="{lab_identifier}"), "lab",
                   in_bundle=True),
    "search by POST": Case(("POST", "/fhir/{type}/_search"),
                           _search_form("/fhir/Observation/_search"), "lab"),
    "search system": Case(("GET", "/fhir"), _get("/fhir", _type="Observation", _id="{lab}"),
                          "lab"),
    "search system by POST": Case(("POST", "/fhir/_search"), _search_form("/fhir/_search"),
                                  "lab"),
    "search compartment": Case(("GET", "/fhir/{compartment}/{id}/{type}"),
                               _get("/fhir/Patient/{patient}/Observation"), "lab",
                               in_bundle=True),
    "create": Case(("POST", "/fhir/{type}"), _create, in_bundle=True),
    "conditional create": Case(("POST", "/fhir/{type}"), _conditional_create, in_bundle=True),
    "update": Case(("PUT", "/fhir/{type}/{id}"), _update, in_bundle=True),
    "conditional update": Case(("PUT", "/fhir/{type}"), _conditional_update, in_bundle=True),
    "patch": Case(("PATCH", "/fhir/{type}/{id}"), _patch, in_bundle=True),
    "conditional patch": Case(("PATCH", "/fhir/{type}"), _conditional_patch, in_bundle=True),
    "delete": Case(("DELETE", "/fhir/{type}/{id}"), _delete("/fhir/Observation/{lab}"),
                   in_bundle=True),
    "delete Patient": Case(("DELETE", "/fhir/{type}/{id}"), _delete("/fhir/Patient/{patient}"),
                           in_bundle=True),
    "conditional delete": Case(("DELETE", "/fhir/{type}"),
                               _delete("/fhir/Observation", identifier="{lab_identifier}"),
                               in_bundle=True),
    "conditional delete by _id": Case(("DELETE", "/fhir/{type}"),
                                      _delete("/fhir/Observation", _id="{lab}"), in_bundle=True),
    "conditional delete Patient": Case(("DELETE", "/fhir/{type}"),
                                       _delete("/fhir/Patient",
                                               identifier="{patient_identifier}"),
                                       in_bundle=True),
    "read Consent": Case(("GET", "/fhir/{type}/{id}"), _get("/fhir/Consent/{consent}"),
                         "consent", in_bundle=True),
    "create Consent": Case(("POST", "/fhir/{type}"), _create_consent, in_bundle=True),
    "revoke Consent": Case(("PUT", "/fhir/{type}/{id}"), _revoke_consent, in_bundle=True),
    "$validate type": Case(("POST", "/fhir/{type}/$op"), _validate_type,
                           operation=("type", "*", "validate")),
    "$validate instance": Case(("POST", "/fhir/{type}/{id}/$op"), _validate_instance,
                               operation=("instance", "*", "validate")),
    "$json-schema type": Case(_TYPE_OP, _get(
        "/fhir/StructureDefinition/$json-schema",
        url="https://fhir.sskdt.vn/StructureDefinition/vn-patient"),
        operation=("type", "StructureDefinition", "json-schema")),
    "$json-schema instance": Case(_INSTANCE_OP,
                                  _get("/fhir/StructureDefinition/vn-patient/$json-schema"),
                                  operation=("instance", "StructureDefinition", "json-schema")),
    "$expand type": Case(_TYPE_OP, _get("/fhir/ValueSet/$expand", url=_VISIT_TYPES),
                         operation=("type", "ValueSet", "expand")),
    "$expand instance": Case(_INSTANCE_OP, _get("/fhir/ValueSet/visit-type/$expand"),
                             operation=("instance", "ValueSet", "expand")),
    "$validate-code type": Case(_TYPE_OP, _get("/fhir/ValueSet/$validate-code",
                                               url=_VISIT_TYPES, code="03"),
                                operation=("type", "ValueSet", "validate-code")),
    "$validate-code instance": Case(_INSTANCE_OP, _get(
        "/fhir/ValueSet/visit-type/$validate-code", code="03"),
        operation=("instance", "ValueSet", "validate-code")),
    "$lookup type": Case(_TYPE_OP, _get("/fhir/CodeSystem/$lookup", system=_VISIT_CODES,
                                        code="03"),
                         operation=("type", "CodeSystem", "lookup")),
    "$lookup instance": Case(_INSTANCE_OP, _get("/fhir/CodeSystem/visit-type/$lookup",
                                                code="03"),
                             operation=("instance", "CodeSystem", "lookup")),
    "$everything": Case(_INSTANCE_OP, _get("/fhir/Patient/{patient}/$everything"), "lab",
                        operation=("instance", "Patient", "everything")),
    "$summary instance": Case(_INSTANCE_OP, _get("/fhir/Patient/{patient}/$summary"), "lab",
                              operation=("instance", "Patient", "summary")),
    "$summary type": Case(_TYPE_OP, _get("/fhir/Patient/$summary",
                                         identifier="{patient_identifier}"), "lab",
                          operation=("type", "Patient", "summary")),
    "$document": Case(_INSTANCE_OP, _get("/fhir/Encounter/{encounter}/$document"), "lab",
                      operation=("instance", "Encounter", "document")),
    "$export system": Case(("GET", "/fhir/$op"), lambda world, target: Call(
        "GET", "/fhir/$export", {"_type": "Patient"}, headers=_ASYNC),
        operation=("system", "*", "export")),
    "$export Patient": Case(_TYPE_OP, lambda world, target: Call(
        "GET", "/fhir/Patient/$export", {"_type": "Patient"}, headers=_ASYNC),
        operation=("type", "Patient", "export")),
    "$export Group": Case(_INSTANCE_OP, _group_export, operation=("instance", "Group", "export"),
                          prepare=_groups),
    "export status": Case(("GET", "/fhir/$export-status/{id}"), _prepared("status"),
                          prepare=_export_done),
    "export cancel": Case(("DELETE", "/fhir/$export-status/{id}"),
                          _prepared("status", "DELETE"), prepare=_export_done),
    "export file": Case(("GET", "/fhir/$export-file/{id}/{file}"), _prepared("file"),
                        prepare=_export_done),
    "$break-glass": Case(("POST", "/fhir/{type}/{id}/$op"), _break_glass,
                         operation=("instance", "Patient", "break-glass"), writes=True),
    "$access-log": Case(_INSTANCE_OP, _get("/fhir/Patient/{patient}/$access-log"),
                        operation=("instance", "Patient", "access-log")),
    "$status type": Case(_TYPE_OP, _get("/fhir/Subscription/$status"), "subscription",
                         operation=("type", "Subscription", "status")),
    "$status instance": Case(_INSTANCE_OP, _get("/fhir/Subscription/{subscription}/$status"),
                             "subscription", operation=("instance", "Subscription", "status")),
    "$events": Case(_INSTANCE_OP, _get("/fhir/Subscription/{subscription}/$events"),
                    "subscription", operation=("instance", "Subscription", "events")),
    "$get-ws-binding-token type": Case(
        _TYPE_OP, _get("/fhir/Subscription/$get-ws-binding-token"), "subscription",
        operation=("type", "Subscription", "get-ws-binding-token")),
    "$get-ws-binding-token instance": Case(
        _INSTANCE_OP, _get("/fhir/Subscription/{subscription}/$get-ws-binding-token"),
        "subscription", operation=("instance", "Subscription", "get-ws-binding-token")),
    "$import-xml130": Case(("POST", "/fhir/$op"), lambda world, target: Call(
        "POST", "/fhir/$import-xml130", json={"resourceType": "Parameters"}, headers=FHIR),
        operation=("system", "*", "import-xml130")),
    "$convert-xml130": Case(("POST", "/fhir/$op"), lambda world, target: Call(
        "POST", "/fhir/$convert-xml130", json={"resourceType": "Parameters"}, headers=FHIR),
        operation=("system", "*", "convert-xml130")),
    "$export-xml130": Case(_INSTANCE_OP, _get("/fhir/Encounter/{encounter}/$export-xml130"),
                           operation=("instance", "Encounter", "export-xml130")),
    "$verify-signature": Case(_INSTANCE_OP, _get("/fhir/Observation/{lab}/$verify-signature"),
                              operation=("instance", "*", "verify-signature")),
    "system operation": Case(("GET", "/fhir/$op"), _get("/fhir/$no-such-operation")),
    "system operation by POST": Case(("POST", "/fhir/$op"), lambda world, target: Call(
        "POST", "/fhir/$no-such-operation", json={"resourceType": "Parameters"},
        headers=FHIR)),
}

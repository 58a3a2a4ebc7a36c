"""Consent, as clinicians, facilities, operators and citizens meet it on every read path.

Each test stores a world of two patients (tests/api/two_patients.py) and gives A's record a
Consent of one shape (permit all, a period, some classes, a deny inside a permit, a code,
the HIV label, everyone, expired, revoked, or none of A's but one of B's). A's record holds
an HIV and a mental-health diagnosis, labelled when written, and a result facility Y wrote.
Then every read path is asked by each kind of token, and what it returns is compared with an
evaluation of the Consents over the whole store written here, apart from the server's:
searches of every type (all pages, and their totals), reads, the patients' ``$everything``,
compartment searches, ``_revinclude``, chains, ``_has`` and type history.

Then break-the-glass (granted, audited, shown to the citizen, expired), who may write a
privacy Consent, and that a Consent change applies to the next request.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.api.conftest import Door
from tests.api.two_patients import (
    FHIR,
    Person,
    World,
    new_id,
    privacy_consent,
)
from tests.builders import CCCD_SYSTEM

pytestmark = pytest.mark.asyncio(loop_scope="module")

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TYPES = "http://hl7.org/fhir/resource-types"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SENSITIVE = {(V3, "HIV"), (V3, "PSY"), (V3, "SEX")}
#: The types of the world's records, searched one by one.
SEARCHED = ["Patient", "Encounter", "Observation", "Condition", "MedicationRequest",
            "DocumentReference", "Binary", "Consent", "Organization", "Practitioner"]
READERS = ["dr.X", "fac.X", "dr.Y", "op", "p.rs"]


def _class(*kinds: str) -> list[dict[str, str]]:
    return [{"system": TYPES, "code": kind} for kind in kinds]


#: The shapes of A's Consent: how to write it (None: A has no active Consent), and B's.
SHAPES: dict[str, dict[str, Any]] = {
    "permit all": {},
    "permit period": {"period": {"start": "2026-01-01", "end": "2099-01-01"}},
    "permit class": {"class": _class("Observation", "Condition")},
    "deny class inside permit": {"provision": [{"type": "deny",
                                                "class": _class("MedicationRequest")}]},
    "permit code": {"code": [{"coding": [{"system": LOINC, "code": "718-7"}]}]},
    "permit HIV explicitly": {"provision": [{"type": "permit", "securityLabel": [
        {"system": V3, "code": "HIV"}]}]},
    "permit everyone": {"everyone": True},
    "expired": {"expired": True},
    "revoked": {"revoked": True},
    "another patient's consent": {"b_permits_x": True},
}


# -- the world of a shape --------------------------------------------------------------------


def _auth(world: World, kind: str) -> dict[str, str]:
    return world.headers(kind)


async def _write(world: World, kind: str, method: str, path: str,
                 body: dict[str, Any]) -> dict[str, Any]:
    response = await world.http.request(method, path, json=body,
                                        headers={**FHIR, **_auth(world, kind)})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _diagnosis(world: World, code: str) -> dict[str, Any]:
    found = copy.deepcopy(world.a.resources["condition"])
    found.pop("id", None)
    found["code"] = {"coding": [{"system": ICD10, "code": code}]}
    found["identifier"] = [{"system": "urn:test:dx", "value": new_id()}]
    return found


async def enrich(world: World) -> dict[str, str]:
    """A's HIV and mental-health diagnoses (written by the operator) and a result Y wrote."""
    hiv = await _write(world, "op", "POST", "/fhir/Condition", _diagnosis(world, "B20.0"))
    mental = await _write(world, "op", "POST", "/fhir/Condition", _diagnosis(world, "F32.9"))
    lab = copy.deepcopy(world.a.resources["lab"])
    lab.pop("id")
    lab["identifier"] = [{"system": "urn:test:y", "value": new_id()}]
    by_y = await _write(world, "dr.Y", "POST", "/fhir/Observation", lab)
    assert {(s["system"], s["code"]) for s in hiv["meta"]["security"]} == {(V3, "HIV")}
    assert {(s["system"], s["code"]) for s in mental["meta"]["security"]} == {(V3, "PSY")}
    return {"hiv": hiv["id"], "mental": mental["id"], "by_y": by_y["id"]}


async def apply_shape(world: World, shape: str) -> None:
    """Replace A's Consent (written by the operator) with the shape's."""
    options = dict(SHAPES[shape])
    org = f"Organization/{world.shared['org']}"
    actor = None if options.pop("everyone", False) else org
    expired = options.pop("expired", False)
    revoked = options.pop("revoked", False)
    if options.pop("b_permits_x", False):
        b_consent = {**privacy_consent(world.b.ref("patient"), org), "id": world.b.ids["consent"]}
        await _write(world, "op", "PUT", f"/fhir/{world.b.ref('consent')}", b_consent)
        revoked = True
    consent = {**privacy_consent(world.a.ref("patient"), actor, expired=expired, **options),
               "id": world.a.ids["consent"]}
    if revoked:
        consent["status"] = "inactive"
    await _write(world, "op", "PUT", f"/fhir/{world.a.ref('consent')}", consent)


# -- the evaluation written here ------------------------------------------------------------


def _patients(resource: dict[str, Any]) -> set[str]:
    if resource["resourceType"] == "Patient":
        return {resource["id"]}
    found = set()
    for name in ("subject", "patient", "securityContext"):
        reference = (resource.get(name) or {}).get("reference", "")
        if reference.startswith("Patient/"):
            found.add(reference.split("/")[1])
    return found


def _tokens(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name in ("code", "category", "medicationCodeableConcept", "type"):
        value = resource.get(name)
        for concept in value if isinstance(value, list) else [value]:
            for coding in (concept or {}).get("coding") or ():
                yield coding.get("system", ""), coding.get("code", "")


def _applies(provision: dict[str, Any], resource: dict[str, Any], actors: set[str],
             today: str) -> bool:
    period = provision.get("period") or {}
    refs = {a["reference"].get("reference") for a in provision.get("actor") or ()}
    labels = {(s["system"], s["code"]) for s in resource.get("meta", {}).get("security", ())}
    kinds = {c["code"] for c in provision.get("class") or ()}
    codes = {(c["system"], c["code"]) for cc in provision.get("code") or ()
             for c in cc["coding"]}
    wanted_labels = {(s["system"], s["code"]) for s in provision.get("securityLabel") or ()}
    return ((not refs or bool(refs & actors))
            and period.get("start", "0000") <= today < period.get("end", "9999")
            and (not kinds or resource["resourceType"] in kinds)
            and (not codes or bool(codes & set(_tokens(resource))))
            and (not wanted_labels or bool(wanted_labels & labels)))


def _decisions(consent: dict[str, Any], resource: dict[str, Any], actors: set[str],
               today: str) -> list[tuple[str, dict[str, Any]]]:
    """The (type, provision) of the provisions of one active Consent that decide."""
    root = consent.get("provision")
    if consent["status"] != "active" or root is None or not _applies(root, resource, actors,
                                                                       today):
        return []
    nested = [(p["type"], p) for p in root.get("provision") or ()
              if _applies(p, resource, actors, today)]
    return [(root["type"], root), *nested]


def _consent_permits(consents: list[dict[str, Any]], resource: dict[str, Any],
                     actors: set[str]) -> bool:
    today = datetime.now(UTC).date().isoformat()
    decided = [d for c in consents for d in _decisions(c, resource, actors, today)]
    if not decided or any(kind == "deny" for kind, _ in decided):
        return False
    labels = {(s["system"], s["code"]) for s in resource.get("meta", {}).get("security", ())}
    named = {(s["system"], s["code"]) for _, p in decided for s in p.get("securityLabel") or ()}
    return labels & SENSITIVE <= named


def oracle(world: World, kind: str, resource: dict[str, Any],
           consents: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether the token ``kind`` may see the resource, as docs/consent.md says."""
    patients = _patients(resource)
    if kind == "op":
        return True
    if kind == "p.rs":
        return not patients or world.a.patient in patients
    claims = world.claims(kind)
    if resource["resourceType"] == "Patient":
        return True
    if resource.get("meta", {}).get("source") == claims["organization"]:
        return True
    actors = {claims["organization"], claims.get("fhir_user"),
              f"identifier|urn:fhir-server:client|{claims['client_id']}"}
    return all(_consent_permits(consents.get(p, []), resource, actors) for p in patients)


async def _everything_in_store(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for kind in SEARCHED:
        found += await _search(world, "op", f"/fhir/{kind}", {"_count": "1000"})
    return found


async def _search(world: World, kind: str, path: str,
                  params: dict[str, str]) -> list[dict[str, Any]]:
    """Every resource of every page of a search (matches and includes)."""
    found: list[dict[str, Any]] = []
    response = await world.http.get(path, params=params, headers=_auth(world, kind))
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        found += [e["resource"] for e in body.get("entry", []) if "resource" in e]
        following = [link["url"] for link in body.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        response = await world.http.get(following[0].removeprefix("http://test"),
                                        headers=_auth(world, kind))


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


class Expected:
    """What each token may see of the store, by the evaluation written here."""

    def __init__(self, world: World, store: list[dict[str, Any]]) -> None:
        self.world, self.store = world, store
        self.consents: dict[str, list[dict[str, Any]]] = {}
        for resource in store:
            if resource["resourceType"] == "Consent":
                for patient in _patients(resource):
                    self.consents.setdefault(patient, []).append(resource)

    def seen(self, kind: str, *, types: tuple[str, ...] = (),
             patient: str | None = None) -> set[str]:
        return _ids([r for r in self.store if (not types or r["resourceType"] in types)
                     and (patient is None or patient in _patients(r))
                     and oracle(self.world, kind, r, self.consents)])


# -- every read path against it -----------------------------------------------------------


async def _check_searches(world: World, kind: str, expected: Expected) -> list[str]:
    faults = []
    for resource_type in SEARCHED:
        got = _ids(await _search(world, kind, f"/fhir/{resource_type}",
                                 {"_count": "7", "_total": "accurate"}))
        want = expected.seen(kind, types=(resource_type,))
        if got != want:
            faults.append(f"{kind} {resource_type}: +{got - want} -{want - got}")
    paged = await world.http.get("/fhir/Observation", params={"_count": "2",
                                                              "_total": "accurate"},
                                 headers=_auth(world, kind))
    total = len(expected.seen(kind, types=("Observation",)))
    if paged.json().get("total") != total:
        faults.append(f"{kind}: total {paged.json().get('total')}, expected {total}")
    return faults


async def _check_reads(world: World, kind: str, expected: Expected) -> list[str]:
    faults = []
    allowed = expected.seen(kind)
    for reference in sorted(_ids([r for r in expected.store
                                  if _patients(r) & {world.a.patient, world.b.patient}])):
        response = await world.http.get(f"/fhir/{reference}", headers=_auth(world, kind))
        if (response.status_code == 200) != (reference in allowed):
            faults.append(f"{kind} read {reference}: {response.status_code}")
    return faults


async def _check_patient_paths(world: World, kind: str, expected: Expected,
                               person: Person) -> list[str]:
    faults = []
    want = expected.seen(kind, patient=person.patient)
    want = {i for i in want if not i.startswith("Binary/")}  # a Binary is no match there
    everything = await world.http.get(f"/fhir/Patient/{person.patient}/$everything",
                                      params={"_count": "1000"}, headers=_auth(world, kind))
    if everything.status_code == 200:
        got = _ids([e["resource"] for e in everything.json().get("entry", [])
                    if e["search"]["mode"] == "match"])
        if got != want:
            faults.append(f"{kind} $everything {person.family}: {got ^ want}")
    elif want:
        faults.append(f"{kind} $everything {person.family}: {everything.status_code}")
    observations = expected.seen(kind, types=("Observation",), patient=person.patient)
    if f"Patient/{person.patient}" in want:
        compartment = await _search(world, kind, f"/fhir/Patient/{person.patient}/Observation",
                                    {})
        chained = await _search(world, kind, "/fhir/Observation", {
            "subject:Patient.identifier": f"{CCCD_SYSTEM}|{person.cccd}"})
        for name, got in (("compartment", compartment), ("chain", chained)):
            if _ids(got) != observations:
                faults.append(f"{kind} {name} {person.family}: {_ids(got) ^ observations}")
    return faults


async def _check_links(world: World, kind: str, expected: Expected) -> list[str]:
    faults = []
    encounters = f"{world.a.ids['encounter']},{world.b.ids['encounter']}"
    found = await _search(world, kind, "/fhir/Encounter", {
        "_id": encounters, "_revinclude": "Observation:encounter"})
    matched = {i.split("/")[1] for i in expected.seen(kind, types=("Encounter",))} & set(
        encounters.split(","))
    want = {f"Encounter/{e}" for e in matched} | {
        i for i in expected.seen(kind, types=("Observation",))
        if _encounter_of(expected, i) in matched}
    if _ids(found) != want:
        faults.append(f"{kind} _revinclude: {_ids(found) ^ want}")
    has = await _search(world, kind, "/fhir/Patient", {
        "_id": f"{world.a.patient},{world.b.patient}", "_has:Observation:subject:code": "718-7"})
    seen_labs = [r for r in expected.store if f"Observation/{r['id']}" in expected.seen(
        kind, types=("Observation",)) and ("http://loinc.org", "718-7") in set(_tokens(r))]
    want_has = {f"Patient/{p}" for r in seen_labs for p in _patients(r)
                if p in (world.a.patient, world.b.patient)}
    if _ids(has) != want_has:
        faults.append(f"{kind} _has: {_ids(has) ^ want_has}")
    history = await _search(world, kind, "/fhir/Condition/_history", {"_count": "1000"})
    conditions = expected.seen(kind, types=("Condition",))
    if _ids(history) != conditions:
        faults.append(f"{kind} history: {_ids(history) ^ conditions}")
    return faults


def _encounter_of(expected: Expected, reference: str) -> str:
    for resource in expected.store:
        if f"{resource['resourceType']}/{resource['id']}" == reference:
            return str((resource.get("encounter") or {}).get("reference", "/")).split("/")[1]
    return ""


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_read_path_returns_exactly_what_the_consents_allow(
    door: Door, shape: str
) -> None:
    world = await door.world()
    await enrich(world)
    await apply_shape(world, shape)
    expected = Expected(world, await _everything_in_store(world))
    faults: list[str] = []
    for kind in READERS:
        faults += await _check_searches(world, kind, expected)
        faults += await _check_reads(world, kind, expected)
        faults += await _check_links(world, kind, expected)
        for person in (world.a, world.b):
            faults += await _check_patient_paths(world, kind, expected, person)
    assert not faults, "\n".join(faults)
    # The shapes share something with X exactly where expected (the test is not vacuous).
    lab = f"Observation/{world.a.ids['lab']}"
    assert (lab in expected.seen("dr.X")) == (shape in (
        "permit all", "permit period", "permit class", "deny class inside permit",
        "permit code", "permit HIV explicitly", "permit everyone"))

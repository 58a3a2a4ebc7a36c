"""One test per hole of issue 23 ("One door for every request"): what citizen A's own token
could do to citizen B's record. Each request is made with A's token; B's record is read back
with a ``system/`` token afterwards and must be exactly as it was; another patient's resource
must answer exactly as an unknown id does (the *ghost* of tests/api/two_patients.py)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import httpx
import orjson
import pytest

from tests.api.conftest import Door
from tests.api.two_patients import FHIR, Person, World, leaked, new_id
from tests.builders import CCCD_SYSTEM

pytestmark = pytest.mark.asyncio(loop_scope="module")


def ids_of(response: httpx.Response) -> set[str]:
    return {e["resource"]["id"] for e in response.json().get("entry", []) if "resource" in e}


def message_id(response: httpx.Response) -> str:
    return str(response.json()["issue"][0]["details"]["coding"][0]["code"])


def unknown_id_answer(response: httpx.Response, *ids: str) -> tuple[int, str]:
    """The status and body with the ids asked for blanked out: two requests for different
    unknown ids then give the same answer."""
    body = response.text
    for id in ids:
        body = body.replace(id, "<id>")
    return response.status_code, body


async def same_as_unknown(world: World, headers: dict[str, str], path: str,
                          role: str = "lab", **params: str) -> httpx.Response:
    """GET ``path`` (``{id}`` filled) for B's resource of ``role`` and for the ghost's;
    assert both answer 404 alike; return B's answer."""
    other = await world.http.get(path.format(id=world.b.ids[role]), headers=headers,
                                 params=params or None)
    ghost = await world.http.get(path.format(id=world.ghost.ids[role]), headers=headers,
                                 params=params or None)
    assert other.status_code == 404, other.text
    assert unknown_id_answer(other, world.b.ids[role]) == \
        unknown_id_answer(ghost, world.ghost.ids[role])
    assert leaked(other, world.b, path.format(id=world.b.ids[role])) == set()
    return other


async def assert_unchanged(world: World, person: Person, before: dict[str, Any]) -> None:
    assert await world.snapshot(person) == before, f"{person.family}'s record changed"


# -- deleting another patient's record -----------------------------------------------------------


@pytest.mark.parametrize("scope", ["patient/*.cruds", "patient/*.write", "patient/Observation.d"])
async def test_delete_of_another_patients_resource_answers_404_and_deletes_nothing(
    door: Door, scope: str
) -> None:
    world = await door.world()
    before = await world.snapshot(world.b)
    headers = world.a_with(scope)
    other = await world.http.delete(f"/fhir/{world.b.ref('lab')}", headers=headers)
    ghost = await world.http.delete(f"/fhir/{world.ghost.ref('lab')}", headers=headers)
    assert other.status_code == 404, other.text
    assert unknown_id_answer(other, world.b.ids["lab"]) == \
        unknown_id_answer(ghost, world.ghost.ids["lab"])
    await assert_unchanged(world, world.b, before)
    own = await world.http.delete(f"/fhir/{world.a.ref('lab')}", headers=headers)
    assert own.status_code == 204


@pytest.mark.parametrize("way", ["http", "transaction"])
async def test_update_of_another_patients_deleted_resource_answers_404_and_changes_nothing(
    door: Door, way: str
) -> None:
    """A deleted id of B is not free for A to take: updating it with A's content answers the
    404 an update of B's live id answers, and adds nothing to B's history. A's own deleted
    resource may be written again."""
    world = await door.world()
    before = await world.snapshot(world.b)
    headers = {**FHIR, **world.headers("p.cruds")}

    async def put(person: Person) -> httpx.Response:
        body = {**copy.deepcopy(world.a.resources["lab"]), "id": person.ids["gone"]}
        url = f"Observation/{person.ids['gone']}"
        if way == "http":
            return await world.http.put(f"/fhir/{url}", json=body, headers=headers)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": body, "request": {"method": "PUT", "url": url}}]}
        return await world.http.post("/fhir", json=bundle, headers=headers)

    other = await put(world.b)
    assert other.status_code == 404, other.text
    assert message_id(other) == "MSG_NO_EXIST"
    await assert_unchanged(world, world.b, before)
    own = await put(world.a)
    assert own.status_code in (200, 201), own.text


@pytest.mark.parametrize(("resource_type", "criteria"), [
    ("Patient", "identifier={patient_identifier}"),
    ("Encounter", "identifier={encounter_identifier}"),
    ("Observation", "_id={lab}"),
    ("Observation", "identifier={lab_identifier}"),
])
async def test_conditional_delete_matches_nothing_of_another_patient(
    door: Door, resource_type: str, criteria: str
) -> None:
    world = await door.world()
    before = await world.snapshot(world.b)
    headers = world.headers("p.cruds")
    answers = []
    for person in (world.b, world.ghost):
        query = _fill(criteria, person)
        answers.append(await world.http.delete(f"/fhir/{resource_type}?{query}",
                                               headers=headers))
    assert [a.status_code for a in answers] == [204, 204], answers[0].text
    await assert_unchanged(world, world.b, before)


def _fill(text: str, person: Person) -> str:
    values = {**person.ids, **{f"{role}_identifier": person.identifier(role)
                               for role in person.identifiers}}
    return text.format(**values)


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize(("url", "status"), [
    ("Observation/{lab}", 404),
    ("Patient/{patient}", 404),
    ("Patient?identifier={patient_identifier}", 204),
    ("Observation?_id={lab}", 204),
])
async def test_delete_entries_of_a_bundle_are_checked_like_deletes_over_http(
    door: Door, kind: str, url: str, status: int
) -> None:
    world = await door.world()
    before = await world.snapshot(world.b)
    entry = {"request": {"method": "DELETE", "url": _fill(url, world.b)}}
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
    response = await world.http.post("/fhir", json=bundle,
                                     headers={**FHIR, **world.headers("p.cruds")})
    if kind == "transaction" and status >= 400:
        assert response.status_code == status, response.text
    else:
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"].startswith(str(status))
    assert leaked(response, world.b, entry["request"]["url"]) == set()
    await assert_unchanged(world, world.b, before)


# -- taking over another patient's record --------------------------------------------------------


async def test_conditional_update_cannot_take_over_another_patients_resource(door: Door) -> None:
    """``PUT MedicationRequest?identifier=<B's record>`` with the subject changed to A: B's
    prescription matches nothing A may see, so A's token creates a prescription of A's own
    (201), as it would for an unknown identifier, and B's stays B's."""
    world = await door.world()
    before = await world.snapshot(world.b)
    taken = copy.deepcopy(world.b.resources["medication"])
    del taken["id"]
    taken["subject"] = {"reference": world.a.ref("patient")}
    response = await world.http.put(
        "/fhir/MedicationRequest", params={"identifier": world.b.identifier("medication")},
        json=taken, headers={**FHIR, **world.headers("p.cruds")})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] != world.b.ids["medication"]
    assert created["subject"] == {"reference": world.a.ref("patient")}
    await assert_unchanged(world, world.b, before)


async def test_conditional_update_of_a_patient_by_another_patients_cccd_is_refused(
    door: Door,
) -> None:
    """``PUT Patient?identifier=<B's CCCD>`` with a link to A: B's Patient matches nothing A
    may see, and a patient's token may not create a Patient (its only Patient is its own), so
    the answer is 403, as for an unknown CCCD. B's Patient is unchanged, no second Patient
    claims B's CCCD, and nothing of B enters A's $everything."""
    world = await door.world()
    before = await world.snapshot(world.b)
    headers = {**FHIR, **world.headers("p.cruds")}
    answers = []
    for person in (world.b, world.ghost):
        linked = copy.deepcopy(world.b.resources["patient"])
        del linked["id"]
        linked["link"] = [{"other": {"reference": world.a.ref("patient")}, "type": "seealso"}]
        answers.append(await world.http.put("/fhir/Patient", json=linked, headers=headers,
                                            params={"identifier": person.identifier("patient")}))
    assert [a.status_code for a in answers] == [403, 403], answers[0].text
    await assert_unchanged(world, world.b, before)
    holders = await world.http.get("/fhir/Patient",
                                   params={"identifier": f"{CCCD_SYSTEM}|{world.b.cccd}"})
    assert ids_of(holders) == {world.b.patient}
    everything = await world.http.get(f"/fhir/{world.a.ref('patient')}/$everything",
                                      headers=world.headers("p.rs"))
    assert everything.status_code == 200
    assert leaked(everything, world.b) == set()


# -- Binary.securityContext ----------------------------------------------------------------------


async def _binary_of(world: World, context: str) -> str:
    """Store a Binary whose securityContext is ``context``; return its id."""
    binary = {"resourceType": "Binary", "contentType": "application/pdf",
              "securityContext": {"reference": context},
              "data": base64.b64encode(f"%PDF-1.4 {world.b.marker}".encode()).decode()}
    stored = await world.http.post("/fhir/Binary", json=binary, headers=FHIR)
    assert stored.status_code == 201, stored.text
    return str(stored.json()["id"])


@pytest.mark.parametrize("context", ["patient", "document"])
async def test_binary_of_another_patient_is_not_found_by_read_vread_history_or_search(
    door: Door, context: str
) -> None:
    """A Binary whose securityContext is B's Patient (or B's DocumentReference) is B's: for A
    it does not exist, on every path."""
    world = await door.world()
    binary = await _binary_of(world, world.b.ref(context))
    headers = world.headers("p.rs")
    for path in ("/fhir/Binary/{id}", "/fhir/Binary/{id}/_history/1",
                 "/fhir/Binary/{id}/_history"):
        other = await world.http.get(path.format(id=binary), headers=headers)
        ghost = await world.http.get(path.format(id=world.ghost.ids["binary"]), headers=headers)
        assert other.status_code == 404, (path, other.text)
        assert unknown_id_answer(other, binary) == \
            unknown_id_answer(ghost, world.ghost.ids["binary"])
    for path, params in [("/fhir/Binary", {"_id": f"{binary},{world.b.ids['binary']}"}),
                         ("/fhir/Binary/_history", {"_count": "500"}),
                         ("/fhir/_history", {"_count": "500"})]:
        found = await world.http.get(path, headers=headers, params=params)
        assert found.status_code == 200, found.text
        assert leaked(found, world.b, params.get("_id", "")) == set(), path
        entries = orjson.dumps(found.json().get("entry", [])).decode()  # not the self link
        assert binary not in entries and world.b.ids["binary"] not in entries, path


async def test_binary_of_ones_own_record_is_readable(door: Door) -> None:
    world = await door.world()
    response = await world.http.get(f"/fhir/{world.a.ref('binary')}",
                                    headers=world.headers("p.rs"))
    assert response.status_code == 200, response.text
    assert response.json()["securityContext"] == {"reference": world.a.ref("patient")}


# -- learning about B through the answers --------------------------------------------------------


async def test_history_of_another_patients_resource_answers_like_an_unknown_id(
    door: Door,
) -> None:
    world = await door.world()
    for kind in ("p.rs", "p.cruds"):
        await same_as_unknown(world, world.headers(kind), "/fhir/Observation/{id}/_history")
        await same_as_unknown(world, world.headers(kind), "/fhir/Patient/{id}/_history",
                              role="patient")


@pytest.mark.parametrize("path", ["/fhir/Observation/{id}", "/fhir/Observation/{id}/_history",
                                  "/fhir/Observation/{id}/_history/1",
                                  "/fhir/Observation/{id}/_history/2"])
async def test_deleted_resource_of_another_patient_answers_404_not_410(
    door: Door, path: str
) -> None:
    """Gone (410) says the id existed; for another patient's resource the answer is the 404 of
    an unknown id. The caller's own deleted resource still answers as deleted."""
    world = await door.world()
    await same_as_unknown(world, world.headers("p.rs"), path, role="gone")
    if path.endswith("{id}"):
        own = await world.http.get(path.format(id=world.a.ids["gone"]),
                                   headers=world.headers("p.rs"))
        assert own.status_code == 410, own.text


async def test_chain_through_ones_own_resource_does_not_reveal_another_patient(
    door: Door,
) -> None:
    """A's Observation whose ``focus`` is B's Patient: chaining through it
    (``focus:Patient.name=``, ``focus:Patient.identifier=``) must answer as it does for a
    name or CCCD nobody has, and ``_include`` must not bring B's Patient."""
    world = await door.world()
    pointer = {**world.a.resources["vital"], "focus": [{"reference": world.b.ref("patient")}]}
    del pointer["id"]
    pointer["identifier"] = [{"system": "urn:test:focus", "value": new_id()}]
    stored = await world.http.post("/fhir/Observation", json=pointer, headers=FHIR)
    assert stored.status_code == 201, stored.text
    headers = world.headers("p.rs")
    for chain, of in [("focus:Patient.name", lambda p: p.family),
                      ("focus:Patient.identifier", lambda p: f"{CCCD_SYSTEM}|{p.cccd}")]:
        answers = [await world.http.get("/fhir/Observation", headers=headers,
                                        params={chain: of(person)})
                   for person in (world.b, world.ghost)]
        assert [a.status_code for a in answers] == [200, 200]
        assert ids_of(answers[0]) == ids_of(answers[1]) == set(), chain
    included = await world.http.get("/fhir/Observation", headers=headers, params={
        "_id": stored.json()["id"], "_include": "Observation:focus"})
    assert ids_of(included) == {stored.json()["id"]}
    assert leaked(included, world.b, world.b.patient) == set()


# -- SMART v2 granular scopes ------------------------------------------------------------------


async def test_granular_patient_scope_returns_the_patients_matching_resources(
    door: Door,
) -> None:
    """``patient/Observation.rs?category=laboratory``: A's laboratory results, nothing else."""
    world = await door.world()
    headers = world.headers("p.lab")
    found = await world.http.get("/fhir/Observation", headers=headers)
    assert found.status_code == 200, found.text
    assert ids_of(found) == {world.a.ids["lab"]}
    assert (await world.http.get(f"/fhir/{world.a.ref('lab')}", headers=headers)
            ).status_code == 200
    for person, role in [(world.a, "vital"), (world.b, "lab")]:
        hidden = await world.http.get(f"/fhir/{person.ref(role)}", headers=headers)
        assert hidden.status_code == 404, hidden.text
    refused = await world.http.get("/fhir/Condition", headers=headers)
    assert refused.status_code == 403
    assert message_id(refused) == "MSG_SCOPE_INSUFFICIENT"


async def test_granular_system_scope_returns_every_patients_matching_resources(
    door: Door,
) -> None:
    """``system/Observation.rs?category=laboratory``: every laboratory result, nothing else."""
    world = await door.world()
    headers = world.headers("s.lab")
    observations = [p.ids[r] for p in (world.a, world.b) for r in ("lab", "vital")]
    found = await world.http.get("/fhir/Observation", headers=headers,
                                 params={"_id": ",".join(observations)})
    assert found.status_code == 200, found.text
    assert ids_of(found) == {world.a.ids["lab"], world.b.ids["lab"]}
    for person in (world.a, world.b):
        assert (await world.http.get(f"/fhir/{person.ref('lab')}", headers=headers)
                ).status_code == 200
        assert (await world.http.get(f"/fhir/{person.ref('vital')}", headers=headers)
                ).status_code == 404
    assert (await world.http.get("/fhir/Condition", headers=headers)).status_code == 403

"""A Group export by a clinician or a facility follows each member's Consent
(docs/consent.md, docs/bulk-export.md).

The world of two patients (tests/api/two_patients.py): A's Consent shares everything with
facility X, B's has expired. A's record also holds an HIV and a mental-health diagnosis
(sensitive: shared by no permit that does not name them) and a result doctor Y wrote; B's
record holds a result facility X wrote itself. A Group of A and B that the operator made is
in both members' compartments: B shares nothing, so X and its doctor cannot see it (404, as
any record they may not see). A Group facility X made itself is X's: its export holds, of
each member, exactly what X may read of them (compared with the evaluation of the Consents
in tests/api/test_consent_policy.py): all of A's record but the sensitive diagnoses, and of
B only the Patient (which every facility reads) and what X wrote.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx

from fhir_server.settings import Settings
from tests.api.bulk_export import cohort, exported, files, finished, ids, kick_off, local
from tests.api.test_consent_policy import Expected, _everything_in_store, enrich
from tests.api.two_patients import FHIR, World, new_id, populate
from tests.conftest import API_STORAGE

#: What a Group export holds: the Patient compartment's types (a Binary is reached through
#: its DocumentReference, not the compartment; the Subscriptions of the world are switched
#: off and are not asked for).
EXPORTED = ("Patient", "Encounter", "Observation", "Condition", "MedicationRequest",
            "DocumentReference", "Consent")


async def _written_by(world: World, kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = await world.http.post(f"/fhir/{resource['resourceType']}", json=resource,
                                      headers=world.headers(kind) | FHIR)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _b_lab_by_x(world: World) -> str:
    lab = copy.deepcopy(world.b.resources["lab"])
    lab.pop("id")
    lab["identifier"] = [{"system": "urn:test:x", "value": new_id()}]
    return str((await _written_by(world, "fac.X", lab))["id"])


def _members(world: World) -> tuple[str, ...]:
    return (f"Patient/{world.a.patient}", f"Patient/{world.b.patient}")


async def test_a_group_export_holds_of_each_member_what_their_consent_shares(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    world = await populate(client, settings)
    sensitive = await enrich(world)
    b_lab = await _b_lab_by_x(world)
    expected = Expected(world, await _everything_in_store(world))
    operators = (await _written_by(world, "op", cohort("A và B", members=_members(world))))["id"]
    facilitys = (await _written_by(world, "fac.X", cohort("X: A, B", members=_members(world))))
    assert facilitys["meta"]["source"] == f"Organization/{world.shared['org']}"
    for kind in ("dr.X", "fac.X", "dr.Y"):
        refused = await kick_off(client, f"/fhir/Group/{operators}/$export",
                                 headers=world.headers(kind))
        assert refused.status_code == 404, (kind, refused.text)
    for kind in ("dr.X", "fac.X"):
        found = await exported(client, f"/fhir/Group/{facilitys['id']}/$export",
                               headers=world.headers(kind))
        got = {i for i in ids(found) if i.split("/")[0] in EXPORTED}
        want = {i for i in expected.seen(kind, types=EXPORTED, patient=world.a.patient)
                | expected.seen(kind, types=EXPORTED, patient=world.b.patient)}
        assert got == want, (kind, got ^ want)
        of_b = {i for i in got if i in expected.seen("op", patient=world.b.patient)}
        assert of_b == {f"Patient/{world.b.patient}", f"Observation/{b_lab}"}, kind
        assert f"Observation/{world.a.ids['lab']}" in got  # A shares their record with X
        assert not {f"Condition/{sensitive['hiv']}", f"Condition/{sensitive['mental']}"} & got
    filtered = await exported(client, f"/fhir/Group/{facilitys['id']}/$export", params=[
        ("_type", "Observation"), ("_typeFilter", "Observation?category=laboratory"),
        ("_typeFilter", "Observation?code=http://loinc.org|718-7")], headers=world.headers("fac.X"))
    labs = [r["id"] for r in filtered["Observation"]]  # both alternatives hold A's result:
    assert world.a.ids["lab"] in labs and len(labs) == len(set(labs))  # it goes out once
    refused_y = await kick_off(client, f"/fhir/Group/{facilitys['id']}/$export",
                               headers=world.headers("dr.Y"))
    assert refused_y.status_code == 404  # X's Group, naming patients who share nothing with Y


async def _touch(world: World, reference: str) -> None:
    """Write a new version of a resource (as the operator), the same but for a note."""
    current = (await world.http.get(f"/fhir/{reference}")).json()
    current.pop("meta", None)
    current["text"] = {"status": "generated",
                       "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{new_id()}</div>'}
    answer = await world.http.put(f"/fhir/{reference}", json=current, headers=FHIR)
    assert answer.status_code == 200, answer.text


async def test_a_group_export_holds_the_shared_versions_of_its_snapshot_despite_writes(
    client_with: Any, settings: Settings,
) -> None:
    """Resources changed while the export runs go out as they were at its snapshot, judged
    with their patients' Consents like the others."""
    share = 0.5 if API_STORAGE == "mongo-fake" else 0.05
    http = await client_with(export_page_size=1, export_cpu_share=share)
    world = await populate(http, settings)
    expected = Expected(world, await _everything_in_store(world))
    group = (await _written_by(world, "fac.X", cohort("X: A, B", members=_members(world))))
    versions = {f"{r['resourceType']}/{r['id']}": r["meta"]["versionId"]
                for r in expected.store}
    started = await kick_off(http, f"/fhir/Group/{group['id']}/$export",
                             headers=world.headers("fac.X"))
    assert started.status_code == 202, started.text
    for person in (world.b, world.a):  # B first: the export goes patient by patient
        for role in ("encounter", "lab", "vital", "condition", "medication"):
            await _touch(world, person.ref(role))
    status = await http.get(local(started.headers["content-location"]),
                            headers=world.headers("fac.X"))
    assert status.status_code == 202, "the writes were to happen while the export ran"
    done = await finished(http, started.headers["content-location"], world.headers("fac.X"))
    found = await files(http, done.json(), world.headers("fac.X"))
    got = {f"{r['resourceType']}/{r['id']}": r["meta"]["versionId"]
           for items in found.values() for r in items if r["resourceType"] in EXPORTED}
    want = expected.seen("fac.X", types=EXPORTED, patient=world.a.patient) | expected.seen(
        "fac.X", types=EXPORTED, patient=world.b.patient)
    assert set(got) == want, set(got) ^ want
    assert got == {reference: versions[reference] for reference in want}

"""Bulk export under the one access policy: every exported resource is one the caller may see
(a citizen's token exports that citizen's record, a facility's scopes limit what it gets), and
an export's status, files and cancellation answer only the principal that started it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fhir_server.settings import Settings
from tests.api.bulk_export import (
    cohort,
    create_group,
    exported,
    files,
    finished,
    ids,
    kick_off,
    local,
)
from tests.api.two_patients import World, populate
from tests.conftest import token_for


@pytest.fixture
async def world(client: httpx.AsyncClient, settings: Settings) -> World:
    return await populate(client, settings)


def _auth(settings: Settings, scope: str, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(settings, scope, **claims)}"}


def _shows(found: dict[str, list[dict[str, Any]]], world: World) -> set[str]:
    """B's secrets that the exported resources hold."""
    text = json.dumps(found, ensure_ascii=False)
    return {secret for secret in world.b.secrets() if secret in text}


async def test_a_citizen_s_token_exports_that_citizen_s_record_and_nothing_of_another(
    client: httpx.AsyncClient, world: World,
) -> None:
    for path in ("/fhir/$export", "/fhir/Patient/$export"):
        found = await exported(client, path, headers=world.headers("p.rs"))
        assert not _shows(found, world), path
        assert {world.a.ref(role) for role in ("patient", "encounter", "lab", "condition")
                } <= ids(found)
        assert all(r["id"] != world.b.patient for r in found.get("Patient", []))


async def test_a_facility_exports_only_what_its_scopes_and_consent_let_it_see(
    client: httpx.AsyncClient, world: World, settings: Settings,
) -> None:
    facility = _auth(settings, "system/Patient.rs system/Encounter.rs "
                               "system/Observation.rs?category=laboratory",
                     organization=f"Organization/{world.shared['org']}")
    found = await exported(client, "/fhir/Patient/$export", headers=facility)
    assert set(found) == {"Patient", "Encounter", "Observation"}
    # Consent: A's record is shared with the facility, B's is not (its Patient is: a
    # facility reads every Patient, docs/consent.md)
    assert {r["id"] for r in found["Observation"]} == {world.a.ids["lab"]}
    assert {r["id"] for r in found["Encounter"]} == {world.a.ids["encounter"]}
    refused = await kick_off(client, "/fhir/Patient/$export", params={"_type": "Condition"},
                             headers=facility)
    assert refused.status_code == 403
    assert (await kick_off(client, headers=facility)).status_code == 403  # no */ scope


async def test_a_group_export_holds_only_the_members_the_caller_may_see(
    client: httpx.AsyncClient, world: World,
) -> None:
    both = await create_group(client, cohort("A và B", members=(
        f"Patient/{world.a.patient}", f"Patient/{world.b.patient}")))
    citizen = world.headers("p.rs")
    found = await exported(client, f"/fhir/Group/{both}/$export", headers=citizen)
    assert f"Patient/{world.a.patient}" in ids(found)
    assert f"Patient/{world.b.patient}" not in ids(found)
    for reference in ids(found):  # each one the citizen may read (the Group names B: the
        # policy puts a Group in its members' compartments)
        assert (await client.get(f"/fhir/{reference}", headers=citizen)).status_code == 200
    assert not _shows({k: v for k, v in found.items() if k != "Group"}, world)
    only_b = await create_group(client, cohort("B", members=(f"Patient/{world.b.patient}",)))
    hidden = await kick_off(client, f"/fhir/Group/{only_b}/$export",
                            headers=world.headers("p.rs"))
    assert hidden.status_code == 404


async def test_naming_another_citizen_in_patient_answers_like_an_unknown_patient(
    client: httpx.AsyncClient, world: World,
) -> None:
    messages = []
    for patient in (world.b.patient, "nobody"):
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient}"}}]}
        refused = await kick_off(client, "/fhir/Patient/$export", body=body,
                                 headers=world.headers("p.rs"))
        assert refused.status_code == 400
        messages.append(refused.json()["issue"][0]["diagnostics"].replace(patient, "X"))
    assert messages[0] == messages[1]


async def test_another_principal_s_token_finds_no_such_export(
    client: httpx.AsyncClient, world: World, settings: Settings,
) -> None:
    """An attacker holding a valid token (another citizen's, another client's, a doctor's)
    polls, downloads and cancels someone else's export: 404, and the export is untouched."""
    started = await kick_off(client, params={"_type": "Patient,Observation"})
    location = started.headers["content-location"]
    manifest = (await finished(client, location)).json()
    url = local(manifest["output"][0]["url"])
    attackers = [
        world.headers("p.cruds"),
        _auth(settings, "system/*.cruds", subject="another-client"),
        _auth(settings, "system/*.cruds", client_id="another-client"),
        _auth(settings, "patient/*.cruds", patient_id=world.b.patient),
        world.headers("dr.X"),
        world.headers("fac.X"),
    ]
    for headers in attackers:
        for answer in (await client.get(local(location), headers=headers),
                       await client.get(url, headers=headers),
                       await client.delete(local(location), headers=headers)):
            assert answer.status_code == 404, (headers, answer.text)
            assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == \
                "MSG_JOB_UNKNOWN"
    assert (await client.get(local(location))).status_code == 200
    assert (await client.get(url)).status_code == 200


async def test_the_starter_polls_with_a_new_token_but_not_with_fewer_scopes(
    client: httpx.AsyncClient, world: World, settings: Settings,
) -> None:
    citizen = world.headers("p.rs")
    started = await kick_off(client, headers=citizen)
    location = local(started.headers["content-location"])
    renewed = _auth(settings, "patient/*.rs", patient_id=world.a.patient)
    done = await finished(client, location, renewed)
    assert done.status_code == 200
    found = await files(client, done.json(), renewed)
    assert not _shows(found, world)
    narrowed = _auth(settings, "patient/Observation.rs", patient_id=world.a.patient)
    assert (await client.get(location, headers=narrowed)).status_code == 403
    assert (await client.get(location, headers={"Authorization": ""})).status_code == 401


async def test_a_citizen_cannot_export_what_a_patient_token_does_not_reach(
    client: httpx.AsyncClient, world: World,
) -> None:
    refused = await kick_off(client, params={"_type": "Organization,Observation"},
                             headers=world.headers("p.lab"))
    assert refused.status_code == 403

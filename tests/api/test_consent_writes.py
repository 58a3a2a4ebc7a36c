"""Who writes the Consents that decide, that a change applies to the next request, how
sensitive data is labelled when written, and the deployment's switches (docs/consent.md)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.api.conftest import Door
from tests.api.two_patients import FHIR, World, new_id, privacy_consent

pytestmark = pytest.mark.asyncio(loop_scope="module")

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


async def _send(world: World, kind: str | dict[str, str], method: str, path: str,
                body: Any = None) -> httpx.Response:
    auth = world.headers(kind) if isinstance(kind, str) else kind
    return await world.http.request(method, path, json=body, headers={**FHIR, **auth})


def _citizen(world: World) -> dict[str, str]:
    return world.a_with("patient/*.cruds")


async def test_the_citizen_shares_and_revokes_and_it_applies_to_the_next_request(
    door: Door,
) -> None:
    world = await door.world()
    lab = f"/fhir/{world.a.ref('lab')}"
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 404
    consent = privacy_consent(world.a.ref("patient"), f"Organization/{world.shared['org_y']}")
    created = await _send(world, _citizen(world), "POST", "/fhir/Consent", consent)
    assert created.status_code == 201, created.text
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 200
    revoked = {**created.json(), "status": "inactive"}
    path = f"/fhir/Consent/{revoked['id']}"
    assert (await _send(world, _citizen(world), "PUT", path, revoked)).status_code == 200
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 404
    again = {**revoked, "status": "active"}
    assert (await _send(world, _citizen(world), "PUT", path, again)).status_code == 200
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 200
    assert (await _send(world, _citizen(world), "DELETE", path)).status_code == 204
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 404


async def _seen_by_y(world: World) -> tuple[int, int, str]:
    """What Y's clinician sees of A's laboratory result: the search's total, and a batch
    Bundle's read of it twice (the second entry asks what the first asked)."""
    search = await _send(world, "dr.Y", "GET",
                         f"/fhir/Observation?patient={world.a.patient}&_total=accurate")
    lab = world.a.ref("lab")
    entries = [{"request": {"method": "GET", "url": lab}}] * 2
    batch = await _send(world, "dr.Y", "POST", "/fhir",
                        {"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert batch.status_code == 200, batch.text
    statuses = ",".join(e["response"]["status"][:3] for e in batch.json()["entry"])
    return search.status_code, search.json()["total"], statuses


async def test_a_revoked_consent_applies_at_once_to_searches_and_bundles(door: Door) -> None:
    """The policy remembers its decisions per caller and per rule, never the grants: the
    same clinician, before and after a revocation, sees what the Consents then allow."""
    world = await door.world()
    assert await _seen_by_y(world) == (200, 0, "404,404")
    consent = privacy_consent(world.a.ref("patient"), f"Organization/{world.shared['org_y']}")
    created = await _send(world, _citizen(world), "POST", "/fhir/Consent", consent)
    assert created.status_code == 201, created.text
    shared = await _seen_by_y(world)
    assert shared[0] == 200 and shared[1] > 0 and shared[2] == "200,200"
    revoked = {**created.json(), "status": "inactive"}
    put = await _send(world, _citizen(world), "PUT", f"/fhir/Consent/{revoked['id']}", revoked)
    assert put.status_code == 200
    assert await _seen_by_y(world) == (200, 0, "404,404")


async def test_a_citizen_writes_consents_only_for_their_own_record(door: Door) -> None:
    world = await door.world()
    about_b = privacy_consent(world.b.ref("patient"), f"Organization/{world.shared['org_y']}")
    refused = await _send(world, _citizen(world), "POST", "/fhir/Consent", about_b)
    assert refused.status_code == 403
    b_consent = {**privacy_consent(world.b.ref("patient"), None), "id": world.b.ids["consent"]}
    changed = await _send(world, _citizen(world), "PUT", f"/fhir/{world.b.ref('consent')}",
                          b_consent)
    assert changed.status_code == 404
    read_only = await _send(world, world.a_with("patient/*.rs"), "POST", "/fhir/Consent",
                            privacy_consent(world.a.ref("patient"), None))
    assert read_only.status_code == 403
    b_lab = f"/fhir/{world.b.ref('lab')}"
    assert (await _send(world, "dr.Y", "GET", b_lab)).status_code == 404


@pytest.mark.parametrize("kind", ["dr.X", "dr.Y", "fac.X"])
async def test_a_clinician_or_facility_cannot_write_a_privacy_consent(
    door: Door, kind: str
) -> None:
    world = await door.world()
    claims = world.claims(kind)
    themselves = privacy_consent(world.a.ref("patient"), claims.get("fhir_user")
                                 or claims["organization"])
    answer = await _send(world, kind, "POST", "/fhir/Consent", themselves)
    assert answer.status_code == 403
    assert "only the patient" in answer.json()["issue"][0]["diagnostics"]
    a_consent = f"/fhir/{world.a.ref('consent')}"
    current = (await _send(world, "op", "GET", a_consent)).json()
    widened = {**current, "provision": {"type": "permit"}}
    # X reads A's Consent (A's permits X): refused, 403; to Y it is not there, 404, as an
    # unknown id is to a delete (an update of an unknown id would create it: 403 then).
    expected = 404 if kind == "dr.Y" else 403
    assert (await _send(world, kind, "PUT", a_consent, widened)).status_code == expected
    assert (await _send(world, kind, "DELETE", a_consent)).status_code == expected
    unknown_id = new_id()
    unknown = f"/fhir/Consent/{unknown_id}"
    assert (await _send(world, kind, "DELETE", unknown)).status_code == 404
    assert (await _send(world, kind, "PUT", unknown, {**themselves, "id": unknown_id})
            ).status_code == 403
    as_entry = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": f"urn:uuid:{new_id()}", "resource": themselves,
        "request": {"method": "POST", "url": "Consent"}}]}
    assert (await _send(world, kind, "POST", "/fhir", as_entry)).status_code == 403
    treatment = copy.deepcopy(themselves)
    treatment["scope"]["coding"][0]["code"] = "treatment"
    assert (await _send(world, kind, "POST", "/fhir/Consent", treatment)).status_code == 201
    b_lab = f"/fhir/{world.b.ref('lab')}"
    assert (await _send(world, kind, "GET", b_lab)).status_code == 404


async def test_operators_write_consents_and_nobody_writes_an_emergency_one(door: Door) -> None:
    world = await door.world()
    consent = privacy_consent(world.a.ref("patient"), f"Organization/{world.shared['org_y']}")
    assert (await _send(world, "op", "POST", "/fhir/Consent", consent)).status_code == 201
    forged = {**consent, "id": f"btg-{new_id()}"}
    for kind in ("op", "p.cruds"):
        answer = await _send(world, kind, "PUT", f"/fhir/Consent/{forged['id']}", forged)
        assert answer.status_code == 403, kind


def _diagnosis(world: World, system: str, code: str) -> dict[str, Any]:
    found = copy.deepcopy(world.a.resources["condition"])
    found.pop("id", None)
    found["code"] = {"coding": [{"system": system, "code": code}]}
    found["identifier"] = [{"system": "urn:test:dx", "value": new_id()}]
    return found


async def _labels(world: World, resource: dict[str, Any], path: str = "/fhir/Condition",
                  kind: str = "op") -> set[str]:
    answer = await _send(world, kind, "POST", path, resource)
    assert answer.status_code == 201, answer.text
    return {s["code"] for s in answer.json().get("meta", {}).get("security", ())}


async def test_sensitive_data_is_labelled_when_written(door: Door) -> None:
    world = await door.world()
    icd = "http://hl7.org/fhir/sid/icd-10"
    assert await _labels(world, _diagnosis(world, icd, "B20.0")) == {"HIV"}
    assert await _labels(world, _diagnosis(world, icd, "F32.9")) == {"PSY"}
    assert await _labels(world, _diagnosis(world, icd, "O04.9")) == {"SEX"}
    assert await _labels(world, _diagnosis(world, icd, "J06.9")) == set()
    kept = _diagnosis(world, icd, "B20.0")
    kept["meta"] = {"security": [{"system": V3, "code": "R"}]}
    assert await _labels(world, kept) == {"R", "HIV"}
    test = copy.deepcopy(world.a.resources["lab"])
    test.pop("id")
    test["identifier"] = [{"system": "urn:test:lab", "value": new_id()}]
    test["code"] = {"coding": [{"system": "http://loinc.org", "code": "75622-1"}]}
    assert await _labels(world, test, "/fhir/Observation", "dr.X") == {"HIV"}


async def test_a_consent_names_a_facility_by_its_ministry_code(door: Door) -> None:
    world = await door.world()
    code = f"{int(new_id()[:8], 16) % 100_000:05d}"
    system = "http://fhir.ehealth.gov.vn/core/sid/provider-code"
    org_y = f"/fhir/Organization/{world.shared['org_y']}"
    facility = (await _send(world, "op", "GET", org_y)).json()
    facility["identifier"] = [{"system": system, "value": code}]
    assert (await _send(world, "op", "PUT", org_y, facility)).status_code == 200
    consent = privacy_consent(world.a.ref("patient"), None)
    consent["provision"]["actor"] = [{"role": {"text": "recipient"}, "reference": {
        "identifier": {"system": system, "value": code}}}]
    assert (await _send(world, _citizen(world), "POST", "/fhir/Consent", consent)
            ).status_code == 201
    lab = f"/fhir/{world.a.ref('lab')}"
    assert (await _send(world, "dr.Y", "GET", lab)).status_code == 200
    b_lab = f"/fhir/{world.b.ref('lab')}"
    assert (await _send(world, "dr.Y", "GET", b_lab)).status_code == 404

"""Break-the-glass and the citizen's access log (docs/consent.md).

Doctor Y, whom A never consented to, is refused A's record (and the refusal is explained in
the AuditEvent, not to Y); breaks the glass with a reason; reads A's record, sensitive data
included, each read audited with purpose BTG under the emergency Consent; A's access log
shows it as emergency access; an hour later the access is gone.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.conftest import Door
from tests.api.test_consent_policy import enrich
from tests.api.two_patients import FHIR, World

pytestmark = pytest.mark.asyncio(loop_scope="module")

REASONS = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _reason(text: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": text}]}


async def _break(world: World, kind: str, text: str = "bất tỉnh khi vào cấp cứu") -> httpx.Response:
    return await world.http.post(f"/fhir/Patient/{world.a.patient}/$break-glass",
                                 json=_reason(text), headers={**FHIR, **world.headers(kind)})


async def _events(world: World, **params: str) -> list[dict[str, Any]]:
    response = await world.http.get("/fhir/AuditEvent", params={**params, "_count": "200"})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _access_log(world: World, kind: str = "p.rs", **params: str) -> Any:
    return world.http.get(f"/fhir/Patient/{world.a.patient}/$access-log", params=params,
                          headers=world.headers(kind))


async def test_a_refusal_says_which_rule_refused_only_in_the_audit_event(door: Door) -> None:
    world = await door.world()
    lab = f"/fhir/Observation/{world.a.ids['lab']}"
    hidden = await world.http.get(lab, headers=world.headers("dr.Y"))
    unknown = await world.http.get("/fhir/Observation/no-such-id", headers=world.headers("dr.Y"))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace(world.a.ids["lab"], "no-such-id") == unknown.text
    assert "Consent" not in hidden.text
    await door.flush_audit()
    refused = await _events(world, entity=f"Observation/{world.a.ids['lab']}", outcome="4")
    assert refused and "Consent rule" in refused[0]["outcomeDesc"]
    assert refused[0]["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


async def test_break_the_glass_is_asked_for_with_a_reason_by_a_clinician(door: Door) -> None:
    world = await door.world()
    assert (await _break(world, "dr.Y", "  ")).status_code == 400
    assert (await _break(world, "dr.Y", "x" * 501)).status_code == 400
    assert (await _break(world, "p.cruds")).status_code == 403  # the citizen needs none
    assert (await _break(world, "op")).status_code == 403  # neither do operators
    by_get = await world.http.get(f"/fhir/Patient/{world.a.patient}/$break-glass",
                                  params={"reason": "x"}, headers=world.headers("dr.Y"))
    assert by_get.status_code == 405
    consents = await world.http.get("/fhir/Consent", params={"patient": world.a.patient})
    assert [e["resource"]["id"] for e in consents.json()["entry"]] == [world.a.ids["consent"]]


async def test_break_the_glass_opens_the_record_for_an_hour_and_the_citizen_sees_it(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await door.world()
    extra = await enrich(world)
    lab, hiv = f"Observation/{world.a.ids['lab']}", f"Condition/{extra['hiv']}"
    assert (await world.http.get(f"/fhir/{lab}", headers=world.headers("dr.Y"))).status_code == 404
    answer = await _break(world, "dr.Y")
    assert answer.status_code == 201, answer.text
    consent = answer.json()
    assert consent["id"].startswith("btg-") and consent["status"] == "active"
    assert consent["provision"]["actor"][0]["reference"]["reference"] == (
        f"Practitioner/{world.shared['dr_y']}")
    period = consent["provision"]["period"]
    opened = datetime.fromisoformat(period["end"]) - datetime.fromisoformat(period["start"])
    assert opened.total_seconds() == 3600
    for reference in (lab, hiv):  # sensitive data too: an emergency needs it
        read = await world.http.get(f"/fhir/{reference}", headers=world.headers("dr.Y"))
        assert read.status_code == 200, reference
    found = await world.http.get("/fhir/Observation", params={"patient": world.a.patient},
                                 headers=world.headers("dr.Y"))
    assert world.a.ids["lab"] in found.text
    other = await world.http.get(f"/fhir/{world.b.ref('lab')}", headers=world.headers("dr.Y"))
    assert other.status_code == 404  # one patient's record, not everyone's
    await door.flush_audit()
    await _check_audited(world, lab, consent["id"])
    await _check_access_log(world, lab, consent["id"])
    later = time.time_ns() + 61 * 60 * 10**9
    monkeypatch.setattr(time, "time_ns", lambda: later)
    assert (await world.http.get(f"/fhir/{lab}", headers=world.headers("dr.Y"))).status_code == 404
    after = await world.http.get("/fhir/Observation", params={"patient": world.a.patient},
                                 headers=world.headers("dr.Y"))
    assert world.a.ids["lab"] not in after.text


async def _check_audited(world: World, lab: str, consent: str) -> None:
    reads = await _events(world, entity=lab, subtype="read", outcome="0")
    by_y = [e for e in reads if e["agent"][0].get("who", {}).get("reference") ==
            f"Practitioner/{world.shared['dr_y']}"] if reads else []
    assert by_y, reads
    assert by_y[0]["purposeOfEvent"][0]["coding"][0] == {"system": REASONS, "code": "BTG"}
    assert f"Consent/{consent}" in by_y[0]["agent"][0]["policy"]
    asked = await _events(world, patient=world.a.patient,
                          subtype="urn:fhir-server:operation|$break-glass")
    assert asked and asked[0]["purposeOfEvent"][0]["text"] == "bất tỉnh khi vào cấp cứu"


async def _check_access_log(world: World, lab: str, consent: str) -> None:
    log = await _access_log(world)
    assert log.status_code == 200, log.text
    accesses = [{p["name"]: p for p in entry["part"]} | {"what": [
        p["valueReference"]["reference"] for p in entry["part"] if p["name"] == "what"]}
                for entry in log.json()["parameter"] if entry["name"] == "access"]
    emergency = [a for a in accesses if a.get("emergency", {}).get("valueBoolean")
                 and lab in a["what"] and a["action"]["valueCode"] == "read"]
    assert emergency, accesses
    first = emergency[0]
    assert first["who"]["valueReference"]["reference"] == f"Practitioner/{world.shared['dr_y']}"
    assert first["facility"]["valueReference"]["reference"] == (
        f"Organization/{world.shared['org_y']}")
    assert first["consent"]["valueReference"]["reference"] == f"Consent/{consent}"
    assert first["why"]["valueCoding"]["code"] == "BTG"
    assert all("$access-log" not in str(a) for a in accesses)


async def test_the_access_log_pages_and_is_the_citizens(door: Door) -> None:
    world = await door.world()
    for _ in range(3):
        await world.http.get(f"/fhir/{world.a.ref('lab')}", headers=world.headers("p.rs"))
    await door.flush_audit()
    first = await _access_log(world, _count="2")
    names = [p["name"] for p in first.json()["parameter"]]
    assert names.count("access") == 2 and names[-1] == "next"
    mine = [p for entry in first.json()["parameter"] if entry["name"] == "access"
            for p in entry["part"] if p["name"] == "why"]
    assert mine and mine[0]["valueCoding"]["code"] == "PATRQT"
    cursor = first.json()["parameter"][-1]["valueString"]
    second = await _access_log(world, _count="2", _cursor=cursor)
    assert second.status_code == 200 and second.json()["parameter"] != first.json()["parameter"]
    assert (await _access_log(world, "op")).status_code == 200
    for kind in ("dr.X", "dr.Y", "fac.X"):
        assert (await _access_log(world, kind)).status_code == 403
    b_log = await world.http.get(f"/fhir/Patient/{world.b.patient}/$access-log",
                                 headers=world.headers("p.rs"))
    assert b_log.status_code == 404

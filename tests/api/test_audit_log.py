"""Searching, reading and paging the audit trail over the API (on every store).

The SQLite store keeps AuditEvents in an audit log of its own (``storage.sqlite.audit_log``);
these tests hold it to the same answers as the generic storage of other stores.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from fhir_server.interactions.context import Services
from fhir_server.main import create_app
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import Access
from fhir_server.settings import Settings
from tests.builders import CCCD_SYSTEM, observation, valid_example
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}


@dataclass
class Trail:
    """An app where a hospital client wrote two patients' records and a citizen read hers."""

    http: httpx.AsyncClient
    services: Services
    settings: Settings
    alice: str
    bob: str
    alice_obs: str

    def headers(self, scope: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(self.settings, scope, **claims)}"}

    async def search(self, *pairs: tuple[str, str], **headers: str) -> httpx.Response:
        await self.services.audit_trail.flush()
        return await self.http.get("/fhir/AuditEvent", params=[*pairs, ("_count", "200")],
                                   headers=headers or None)

    async def events(self, *pairs: tuple[str, str]) -> list[dict[str, Any]]:
        response = await self.search(*pairs)
        assert response.status_code == 200, response.text
        return [e["resource"] for e in response.json().get("entry", [])]


@pytest.fixture
async def trail(settings: Settings) -> AsyncIterator[Trail]:
    app = create_app(settings.model_copy(update={"referential_integrity": True}))
    async with app.router.lifespan_context(app):
        # The hospital writes; a national operator (not governed by Consent) audits.
        hospital = {**FHIR, "Authorization": "Bearer " + token_for(
            settings, "system/*.cruds", client_id="bv-bach-mai", organization="Organization/bm")}
        auditor = {"Authorization": "Bearer " + token_for(
            settings, "system/*.cruds", client_id="national-auditor")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=auditor) as http:
            ids = []
            for cccd in ("019203107473", "001090012345"):
                patient = valid_example("Patient")
                patient["identifier"] = [{"system": CCCD_SYSTEM, "value": cccd}]
                created = await http.post("/fhir/Patient", json=patient, headers=hospital)
                ids.append(created.json()["id"])
            obs = await http.post("/fhir/Observation", json=observation(f"Patient/{ids[0]}"),
                                  headers=hospital)
            world = Trail(http, app.state.services, settings, ids[0], ids[1], obs.json()["id"])
            citizen = world.headers("patient/*.rs", patient_id=ids[0], subject="cccd-019")
            assert (await http.get(f"/fhir/Observation/{obs.json()['id']}",
                                   headers=citizen)).status_code == 200
            assert (await http.get(f"/fhir/Patient/{ids[1]}", headers=citizen)).status_code == 404
            yield world


def _subtypes(event: dict[str, Any]) -> set[str]:
    return {c["code"] for c in event["subtype"]}


async def test_each_parameter_of_the_audit_log_finds_its_events(trail: Trail) -> None:
    everything = await trail.events()
    assert len(everything) >= 5  # 3 creates, 2 reads (one refused)
    reads = await trail.events(("subtype", "read"))
    assert reads and all("read" in _subtypes(e) for e in reads)
    creates = await trail.events(("action", "C"))
    assert len(creates) == 3 and all(e["action"] == "C" for e in creates)
    refused = await trail.events(("outcome", "4"))
    assert [e["outcome"] for e in refused] == ["4"]
    alice = await trail.events(("patient", f"Patient/{trail.alice}"), ("subtype", "read,create"))
    entities = {x["what"]["reference"].split("/_history")[0]
                for e in alice for x in e.get("entity", []) if "what" in x}
    assert f"Observation/{trail.alice_obs}" in entities
    assert f"Patient/{trail.bob}" not in entities
    by_obs = await trail.events(("entity", f"Observation/{trail.alice_obs}"))
    assert {e["action"] for e in by_obs} == {"C", "R"}
    by_org = await trail.events(("agent", "Organization/bm"), ("action", "C"))
    assert len(by_org) == 3
    as_agent = await trail.events(("agent", f"Patient/{trail.alice}"))
    assert as_agent and all("read" in _subtypes(e) for e in as_agent)
    by_type = await trail.events(
        ("type", "http://terminology.hl7.org/CodeSystem/audit-event-type|rest"),
        ("subtype", "read,create"))
    assert len(by_type) == 5
    assert await trail.events(("type", "http://other.example|rest")) == []
    first = everything[0]
    assert await trail.events(("_id", first["id"])) == [first]


async def test_date_and_sort_of_the_audit_log(trail: Trail) -> None:
    visits = ("subtype", "read,create")  # not the events of these searches themselves
    everything = await trail.events(("_sort", "-date"), visits)
    recorded = [e["recorded"] for e in everything]
    assert recorded == sorted(recorded, reverse=True) and len(recorded) == 5
    assert recorded != sorted(recorded)
    newest, oldest = recorded[0], recorded[-1]
    assert await trail.events(("date", f"gt{newest}"), visits) == []
    assert len(await trail.events(("date", f"le{newest}"), visits)) == 5
    assert len(await trail.events(("date", f"gt{oldest}"), visits)) == 4
    assert len(await trail.events(("date", "ge2020-01-01"), ("date", "lt2999"), visits)) == 5
    assert await trail.events(("_lastUpdated", "lt2020-01-01")) == []


async def test_the_audit_log_pages_with_cursors(trail: Trail) -> None:
    await trail.services.audit_trail.flush()
    seen: list[str] = []
    response = await trail.http.get("/fhir/AuditEvent",
                                    params={"_count": "2", "_total": "accurate"})
    total = response.json()["total"]
    while True:
        body = response.json()
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not nxt:
            break
        response = await trail.http.get(nxt[0].removeprefix("http://test"))
        assert response.status_code == 200
    assert len(seen) == len(set(seen)) == total


async def test_an_audit_event_reads_and_vreads_as_stored(trail: Trail) -> None:
    event = (await trail.events(("action", "R")))[0]
    read = await trail.http.get(f"/fhir/AuditEvent/{event['id']}")
    assert read.status_code == 200 and read.json() == event
    assert read.headers["etag"] == 'W/"1"'
    vread = await trail.http.get(f"/fhir/AuditEvent/{event['id']}/_history/1")
    assert vread.json() == event
    history = await trail.http.get(f"/fhir/AuditEvent/{event['id']}/_history")
    assert [e["resource"]["id"] for e in history.json()["entry"]] == [event["id"]]
    assert (await trail.http.get("/fhir/AuditEvent/no-such-event")).status_code == 404


async def test_a_posted_audit_event_is_kept_and_searchable(trail: Trail) -> None:
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
        "action": "E",
        "recorded": "2026-03-01T08:00:00+07:00",
        "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/dr-1"}, "requestor": True,
                   "network": {"address": "10.1.2.3", "type": "2"}}],
        "source": {"observer": {"display": "emr"}},
        "entity": [{"what": {"reference": f"Patient/{trail.bob}"}}],
    }
    created = await trail.http.post("/fhir/AuditEvent", json=event, headers=FHIR)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    for pairs in ([("agent", "Practitioner/dr-1")], [("address", "10.1")],
                  [("patient", trail.bob), ("action", "E")],
                  [("date", "2026-03-01")], [("date", "eq2026-03-01T01:00:00Z")],
                  [("type", "110100")],
                  [("type", "http://dicom.nema.org/resources/ontology/DCM|110100")],
                  [("type", "http://dicom.nema.org/resources/ontology/DCM|")]):
        found = await trail.events(*pairs)
        assert new_id in {e["id"] for e in found}, pairs
    assert await trail.events(("date", "2026-03-02")) == []


@pytest.mark.parametrize("query", [
    {"_tag": "x"},                                   # not a parameter the audit log keeps
    {"_include": "AuditEvent:patient"},
    {"patient.name": "nguyen"},                      # chain
    {"_has:Observation:patient:code": "x"},
    {"_sort": "action"},
    {"action:missing": "true"},
])
async def test_searches_the_audit_log_cannot_answer_are_refused(
    trail: Trail, query: dict[str, str]
) -> None:
    response = await trail.http.get("/fhir/AuditEvent", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path, query", [
    ("/fhir/Patient", {"_revinclude": "AuditEvent:patient"}),
    ("/fhir/Patient", {"_has:AuditEvent:patient:action": "R"}),
    ("/fhir", {"_type": "AuditEvent,Patient"}),
])
async def test_no_other_search_reaches_into_the_audit_log(
    trail: Trail, path: str, query: dict[str, str]
) -> None:
    response = await trail.http.get(path, params=query)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MSG_AUDIT_SEARCH"


async def test_everything_gives_the_audit_trail_only_when_asked_alone(trail: Trail) -> None:
    await trail.services.audit_trail.flush()
    alone = await trail.http.get(f"/fhir/Patient/{trail.alice}/$everything",
                                 params={"_type": "AuditEvent"})
    assert alone.status_code == 200
    kinds = {e["resource"]["resourceType"] for e in alone.json()["entry"]}
    assert kinds == {"AuditEvent"}
    mixed = await trail.http.get(f"/fhir/Patient/{trail.alice}/$everything",
                                 params={"_type": "AuditEvent,Observation"})
    assert mixed.status_code == 400


async def test_a_citizen_sees_only_the_audit_events_of_her_records(trail: Trail) -> None:
    citizen = trail.headers("patient/AuditEvent.rs", patient_id=trail.alice)
    response = await trail.search(**citizen)
    assert response.status_code == 200
    events = [e["resource"] for e in response.json()["entry"]]
    assert events
    for event in events:
        named = {x["what"]["reference"] for x in event.get("entity", []) if "what" in x}
        named |= {a["who"].get("reference", "") for a in event["agent"] if "who" in a}
        assert f"Patient/{trail.alice}" in named
        assert f"Patient/{trail.bob}" not in named


async def test_the_capability_statement_says_what_the_audit_log_does(trail: Trail) -> None:
    statement = (await trail.http.get("/fhir/metadata")).json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    codes = {i["code"] for i in entry["interaction"]}
    assert codes == {"read", "vread", "create", "history-instance", "history-type",
                     "search-type"}
    params = {p["name"] for p in entry["searchParam"]}
    assert {"patient", "agent", "entity", "date", "action", "outcome"} <= params
    assert "_tag" not in params and "name" not in params
    values = {"token": "x", "date": "2020", "reference": "Patient/x", "string": "x"}
    for param in entry["searchParam"]:  # each listed parameter is answered
        response = await trail.http.get("/fhir/AuditEvent", params={
            param["name"]: values[param["type"]]}, headers={"Prefer": "handling=strict"})
        assert response.status_code == 200, (param, response.text)


async def test_a_writes_audit_event_commits_or_rolls_back_with_it(trail: Trail) -> None:
    """A transaction stores its AuditEvent in its own store transaction: a failed Bundle
    leaves only the audit of the refusal, a good one its write event naming what it wrote."""
    def bundle(subject: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": observation(subject), "request": {"method": "POST",
                                                           "url": "Observation"}}]}

    failed = await trail.http.post("/fhir", json=bundle("Patient/no-such-patient"),
                                   headers=FHIR)
    assert failed.status_code == 400
    good = await trail.http.post("/fhir", json=bundle(f"Patient/{trail.bob}"), headers=FHIR)
    assert good.status_code == 200
    created = good.json()["entry"][0]["response"]["location"].split("/_history")[0]
    events = await trail.events(("subtype", "transaction"))
    assert sorted(e["outcome"] for e in events) == ["0", "4"]
    written = next(e for e in events if e["outcome"] == "0")
    named = {x["what"]["reference"].split("/_history")[0] for x in written["entity"]}
    assert named == {created, f"Patient/{trail.bob}"}
    refused = next(e for e in events if e["outcome"] == "4")
    assert "entity" not in refused or all(
        "Observation" not in x.get("what", {}).get("reference", "") for x in refused["entity"])


async def test_without_auditing_reads_do_not_collect_what_an_audit_event_would_name(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``FHIR_SERVER_AUDIT=false`` no AuditEvent is written, so the patients of what a
    request touched (a walk of every resource read) are not worked out either."""
    from fhir_server.security import policy

    app = create_app(settings.model_copy(update={"audit": False}))
    async with app.router.lifespan_context(app):
        headers = {"Authorization": "Bearer " + token_for(settings, "system/*.cruds")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=headers) as http:
            created = await http.post("/fhir/Observation", headers=FHIR,
                                      json=observation("Patient/p-1"))
            assert created.status_code == 201, created.text
            walks: list[str] = []
            compartment_patients = policy.compartment_patients

            def counting(resource: dict[str, Any], registry: Any) -> frozenset[str]:
                walks.append(resource["resourceType"])
                return compartment_patients(resource, registry)

            monkeypatch.setattr(policy, "compartment_patients", counting)
            read = await http.get(f"/fhir/Observation/{created.json()['id']}")
            assert read.status_code == 200
            assert walks == []
            services = app.state.services
            note = AuditNote("read")  # what an audited request does
            note.read([read.json()], Access(SERVER, services.registry).patients_of)
            assert note.records(None, 200)[0].patients == ("p-1",)
            assert walks == ["Observation"]


async def test_a_request_touching_two_patients_leaves_one_audit_event_per_patient(
    trail: Trail,
) -> None:
    """A transaction writing both patients' records leaves an AuditEvent for each, naming only
    that patient's records: a citizen's access log names nobody else's."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{person}"),
         "request": {"method": "POST", "url": "Observation"}}
        for person in (trail.alice, trail.bob)]}
    response = await trail.http.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    written = [e["response"]["location"].split("/_history")[0]
               for e in response.json()["entry"]]
    events = [e for e in await trail.events(("subtype", "transaction")) if e["outcome"] == "0"]
    named = [{x["what"]["reference"].split("/_history")[0] for x in e["entity"]} for e in events]
    assert sorted(named, key=sorted) == sorted(
        [{written[0], f"Patient/{trail.alice}"}, {written[1], f"Patient/{trail.bob}"}], key=sorted)
    citizen = trail.headers("patient/AuditEvent.rs", patient_id=trail.alice)
    log = await trail.search(**citizen)
    assert trail.bob not in log.text and written[1] not in log.text


#: Every caller of a search page (the token's scope and claims).
_SEARCHERS = {
    "operator": ("system/*.cruds", {"client_id": "national-auditor"}),
    "facility": ("system/*.cruds", {"client_id": "bv-bach-mai", "organization": "Organization/bm"}),
    "clinician": ("user/*.rs", {"fhir_user": "Practitioner/dr-1",
                                "organization": "Organization/bm"}),
    "citizen": ("patient/*.rs", {"patient_id": "ALICE", "subject": "cccd-019"}),
    "attacker": ("patient/*.rs", {"patient_id": "ALICE", "subject": "cccd-019"}),
}


@pytest.mark.parametrize("who", sorted(_SEARCHERS))
async def test_a_search_page_leaves_each_patient_an_event_of_her_own_records(
    trail: Trail, who: str,
) -> None:
    """A page across patients (matches and includes, their patients read from the index
    with the page) leaves one AuditEvent per patient, naming that patient and only her
    resources, whoever searched; the attacker's search for Bob's records with Alice's token
    gets nothing and leaves nothing in Bob's log."""
    bob_obs = (await trail.http.post("/fhir/Observation", json=observation(
        f"Patient/{trail.bob}"), headers=FHIR)).json()["id"]
    scope, claims = _SEARCHERS[who]
    claims = {k: trail.alice if v == "ALICE" else v for k, v in claims.items()}
    query = (f"subject=Patient/{trail.bob}&_include=Observation:subject" if who == "attacker"
             else f"_id={trail.alice_obs},{bob_obs}&_include=Observation:subject&_count=50")
    page = await trail.http.get(f"/fhir/Observation?{query}",
                                headers=trail.headers(scope, **claims))
    assert page.status_code == 200, page.text
    shown = {f"{e['resource']['resourceType']}/{e['resource']['id']}"
             for e in page.json().get("entry", [])}
    owner = {f"Observation/{trail.alice_obs}": trail.alice, f"Patient/{trail.alice}": trail.alice,
             f"Observation/{bob_obs}": trail.bob, f"Patient/{trail.bob}": trail.bob}
    events = [e for e in await trail.events(("subtype", "search-type"))
              if any(x.get("query") for x in e["entity"])
              and unquote(base64.b64decode(next(x["query"] for x in e["entity"]
                                                if x.get("query"))).decode()) == query]
    assert events
    named: dict[str, set[str]] = {}
    for event in events:
        patients = {x["what"]["reference"] for x in event["entity"]
                    if x.get("role", {}).get("code") == "1"}
        what = {x["what"]["reference"] for x in event["entity"] if "what" in x}
        assert len(patients) <= 1, event
        for patient in patients:
            named[patient] = what - patients
        assert {owner[ref] for ref in what if ref in owner} <= {p.split("/")[1] for p in patients}
    assert {ref for refs in named.values() for ref in refs} | set(named) >= shown
    for patient, refs in named.items():
        assert {owner[ref] for ref in refs} <= {patient.split("/")[1]}
    if who in ("citizen", "attacker"):
        assert set(named) <= {f"Patient/{trail.alice}"}
        bobs_log = await trail.events(("patient", f"Patient/{trail.bob}"))
        assert not [e for e in bobs_log if e in events]
    if who == "operator":  # the page holds both patients' records (Consent governs no one)
        assert set(named) == {f"Patient/{trail.alice}", f"Patient/{trail.bob}"}
        assert named[f"Patient/{trail.alice}"] == {f"Observation/{trail.alice_obs}"}


#: The callers of a page of several patients, by what their token is.
@pytest.mark.parametrize("who", sorted(_SEARCHERS))
async def test_a_page_of_several_patients_shows_each_citizen_an_event_naming_only_her(
    trail: Trail, who: str,
) -> None:
    """A page of Patients leaves each patient on it an AuditEvent of her own (the audit log
    stores the request once): in her log (``AuditEvent?patient=`` with her own token, and
    ``$access-log``) the event names her and nothing of the other patient, reads back by
    its id as found, and is not the other's event; the attacker (Alice's token asking for
    Bob) leaves nothing in Bob's log."""
    scope, claims = _SEARCHERS[who]
    claims = {k: trail.alice if v == "ALICE" else v for k, v in claims.items()}
    query = (f"_id={trail.bob}" if who == "attacker"
             else f"_id={trail.alice},{trail.bob}&_count=50")
    page = await trail.http.get(f"/fhir/Patient?{query}", headers=trail.headers(scope, **claims))
    assert page.status_code == 200, page.text
    shown = {e["resource"]["id"] for e in page.json().get("entry", [])}
    citizens = {trail.alice: trail.bob, trail.bob: trail.alice}
    logged: dict[str, str] = {}
    for citizen, other in citizens.items():
        own = trail.headers("patient/AuditEvent.rs patient/*.rs", patient_id=citizen)
        response = await trail.search(("patient", f"Patient/{citizen}"), **own)
        assert response.status_code == 200, response.text
        events = [e["resource"] for e in response.json().get("entry", [])
                  if _query_of(e["resource"]) == query]
        # Her log also holds her own searches (she is their agent), naming no one else.
        expected = citizen in shown or citizen == claims.get("patient_id")
        assert len(events) == expected, (citizen, events)
        for event in events:
            assert other not in json.dumps(event)
            named = {x["what"]["reference"] for x in event["entity"] if "what" in x}
            assert named == ({f"Patient/{citizen}"} if citizen in shown else set())
            read = await trail.http.get(f"/fhir/AuditEvent/{event['id']}", headers=own)
            assert read.status_code == 200 and read.json() == event
            logged[citizen] = event["id"]
        access_log = await trail.http.get(f"/fhir/Patient/{citizen}/$access-log", headers=own)
        assert access_log.status_code == 200, access_log.text
        assert other not in access_log.text
    assert len(set(logged.values())) == len(logged)
    if who == "operator":
        assert set(logged) == {trail.alice, trail.bob}


def _query_of(event: dict[str, Any]) -> str | None:
    encoded = next((x["query"] for x in event.get("entity", []) if x.get("query")), None)
    return unquote(base64.b64decode(encoded).decode()) if encoded else None

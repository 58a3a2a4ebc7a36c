"""The CapabilityStatement and the SMART configuration say what works, and only that: every
listed search parameter has a supported type, every operation's definition resolves,
conditional read and includes are claimed, and no PKCE without an authorization endpoint."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.operations import AFFECTS_STATE
from tests.builders import HEALTH_BOOK_RESOURCES, patient

FHIR = {"Content-Type": "application/fhir+json"}


async def _statement(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/fhir/metadata")
    assert response.status_code == 200
    return dict(response.json())


def _resource(statement: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(r for r in statement["rest"][0]["resource"] if r["type"] == kind)


async def test_no_listed_search_parameter_is_of_an_unsupported_type(
    client: httpx.AsyncClient,
) -> None:
    statement = await _statement(client)
    listed = {(r["type"], p["name"]) for r in statement["rest"][0]["resource"]
              for p in r.get("searchParam", [])}
    assert ("Location", "near") not in listed
    assert all(p["type"] != "special" for r in statement["rest"][0]["resource"]
               for p in r.get("searchParam", []))


async def test_every_operation_definition_link_resolves(client: httpx.AsyncClient) -> None:
    statement = await _statement(client)
    rest = statement["rest"][0]
    operations = [*rest.get("operation", []),
                  *(op for r in rest["resource"] for op in r.get("operation", []))]
    assert operations
    for operation in {op["definition"]: op for op in operations}.values():
        response = await client.get(operation["definition"].removeprefix("http://test"))
        assert response.status_code == 200, operation
        definition = response.json()
        assert definition["resourceType"] == "OperationDefinition"
        assert definition["code"] == operation["name"]


async def test_conditional_read_and_includes_are_claimed_and_work(
    client: httpx.AsyncClient,
) -> None:
    statement = await _statement(client)
    patient_entry = _resource(statement, "Patient")
    assert patient_entry["conditionalRead"] == "full-support"
    assert {"Patient:organization", "Patient:*", "*"} <= set(patient_entry["searchInclude"])
    assert "Observation:subject" in patient_entry["searchRevInclude"]
    assert not [i for i in patient_entry["searchRevInclude"] if i.startswith("AuditEvent:")]
    organization = HEALTH_BOOK_RESOURCES["Organization"]
    created = await client.post("/fhir/Organization", json=organization, headers=FHIR)
    org_id = created.json()["id"]
    person = await client.post("/fhir/Patient", json=patient(managingOrganization={
        "reference": f"Organization/{org_id}"}), headers=FHIR)
    found = await client.get("/fhir/Patient", params={"_id": person.json()["id"],
                                                      "_include": "Patient:organization"})
    assert org_id in {e["resource"]["id"] for e in found.json()["entry"]}
    read = await client.get(f"/fhir/Patient/{person.json()['id']}",
                            headers={"If-None-Match": person.headers["etag"]})
    assert read.status_code == 304


async def test_smart_configuration_claims_no_pkce_without_an_authorization_endpoint(
    client: httpx.AsyncClient,
) -> None:
    """Without an identity provider the server has no authorization endpoint, so it claims
    neither PKCE nor a launch (tests/api/test_app_launch.py: with one, it claims them)."""
    document = (await client.get("/fhir/.well-known/smart-configuration")).json()
    assert (await client.get("/fhir/auth/authorize")).status_code == 404
    assert "code_challenge_methods_supported" not in document
    assert "authorization_endpoint" not in document
    assert not [c for c in document["capabilities"] if c.startswith("launch-")]
    assert document["token_endpoint"] == "http://test/fhir/auth/token"


async def test_operations_that_change_the_record_are_refused_by_get_as_declared(
    client: httpx.AsyncClient,
) -> None:
    """An OperationDefinition with ``affectsState`` is invoked with POST only (R4
    operations.html): the server refuses a GET of exactly those (405), and says so."""
    statement = await _statement(client)
    rest = statement["rest"][0]
    operations = {op["name"]: op["definition"].removeprefix("http://test")
                  for op in [*rest.get("operation", []),
                             *(op for r in rest["resource"] for op in r.get("operation", []))]}
    declared = {name for name, url in operations.items()
                if (await client.get(url)).json().get("affectsState")}
    assert declared == set(AFFECTS_STATE)
    person = await client.post("/fhir/Patient", json=patient(), headers=FHIR)
    paths = {"break-glass": f"/fhir/Patient/{person.json()['id']}/$break-glass",
             "import-xml130": "/fhir/$import-xml130"}
    for name in declared:
        refused = await client.get(paths[name])
        assert refused.status_code == 405, (name, refused.text)


async def test_the_security_description_names_the_consent_operations(
    client: httpx.AsyncClient,
) -> None:
    statement = await _statement(client)
    description = statement["rest"][0]["security"]["description"]
    operations = {op["name"] for r in statement["rest"][0]["resource"]
                  for op in r.get("operation", []) if r["type"] == "Patient"}
    assert {"break-glass", "access-log"} <= operations
    assert "Patient/[id]/$break-glass" in description
    assert "Patient/[id]/$access-log" in description


async def test_subscriptions_are_claimed_as_the_backport_ig_describes(
    client: httpx.AsyncClient,
) -> None:
    statement = await _statement(client)
    backport = "http://hl7.org/fhir/uv/subscriptions-backport"
    assert f"{backport}/CapabilityStatement/backport-subscription-server-r4" in \
        statement["instantiates"]
    subscription = _resource(statement, "Subscription")
    assert subscription["supportedProfile"] == [
        f"{backport}/StructureDefinition/backport-subscription"]
    assert {op["name"] for op in subscription["operation"]} == {
        "status", "events", "get-ws-binding-token", "validate", "verify-signature"}
    topics = {e["valueCanonical"] for e in subscription["extension"]}
    assert "https://fhir.sskdt.vn/SubscriptionTopic/encounter-new" in topics
    listed = await client.get("/fhir/Basic", params={
        "code": "http://hl7.org/fhir/fhir-types|SubscriptionTopic", "_count": "100"})
    stored = {e["resource"]["extension"][0]["valueUri"] for e in listed.json()["entry"]}
    assert stored == topics
    profile = await client.get("/fhir/StructureDefinition/backport-subscription")
    assert profile.status_code == 200

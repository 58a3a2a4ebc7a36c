"""API tests of access control (SMART tokens, scopes, the patient compartment) and the audit
trail, including attacks: missing, forged, expired and misdirected tokens, scope escalation,
and reading, searching, including, chaining and ``_has``-ing into another patient's data."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_server.interactions.context import Services
from fhir_server.main import create_app
from fhir_server.security.clients import ClientRegistry, RegisteredClient, auth_database_path
from fhir_server.settings import Settings
from tests.builders import CCCD_SYSTEM, observation, valid_example
from tests.conftest import token_for

FHIR = {"Content-Type": "application/fhir+json"}


@dataclass
class World:
    """A running app with two patients, each with one Observation."""

    http: httpx.AsyncClient
    services: Services
    settings: Settings
    alice: str
    bob: str
    alice_obs: str
    bob_obs: str

    def as_token(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def patient_headers(self, patient: str, scope: str = "patient/*.rs") -> dict[str, str]:
        return self.as_token(token_for(self.settings, scope, patient_id=patient))

    async def audit_events(self, **params: str) -> list[dict[str, Any]]:
        await self.services.audit_trail.flush()
        response = await self.http.get("/fhir/AuditEvent", params={**params, "_count": "500"})
        return [e["resource"] for e in response.json().get("entry", [])
                if e["resource"]["resourceType"] == "AuditEvent"]


def _patient(cccd: str) -> dict[str, Any]:
    patient = valid_example("Patient")
    patient["identifier"] = [{"system": CCCD_SYSTEM, "value": cccd}]
    return patient


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        admin = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test", headers=admin) as http:
            ids = []
            for cccd in ("019203107473", "001090012345"):
                ids.append((await http.post("/fhir/Patient", json=_patient(cccd),
                                            headers=FHIR)).json()["id"])
            obs = []
            for pid in ids:
                obs.append((await http.post("/fhir/Observation", json=observation(
                    f"Patient/{pid}"), headers=FHIR)).json()["id"])
            yield World(http, app.state.services, settings, ids[0], ids[1], obs[0], obs[1])


def ids_of(response: httpx.Response, resource_type: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if resource_type is None or e["resource"]["resourceType"] == resource_type}


def message_id(response: httpx.Response) -> str:
    return str(response.json()["issue"][0]["details"]["coding"][0]["code"])


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-jwt", "Basic abc"])
async def test_missing_or_malformed_token_is_401_with_www_authenticate(
    world: World, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {"Authorization": ""}
    response = await world.http.get(f"/fhir/Patient/{world.alice}", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def _forged(settings: Settings, **overrides: Any) -> str:
    base = settings.public_base_url()
    claims = {"iss": base, "aud": base, "sub": "x", "scope": "system/*.cruds",
              "exp": int(time.time()) + 300, "iat": int(time.time()), **overrides}
    other = ec.generate_private_key(ec.SECP256R1())
    from fhir_server.security.keys import load_server_key

    kid = load_server_key(settings.data_dir).kid
    return jwt.encode(claims, other, algorithm="ES256", headers={"kid": kid})


async def test_forged_expired_and_misdirected_tokens_are_refused(world: World) -> None:
    settings = world.settings
    attacks = {
        "forged signature": _forged(settings),
        "alg none": jwt.encode({"iss": settings.public_base_url(), "sub": "x",
                                "aud": settings.public_base_url(), "scope": "system/*.cruds",
                                "exp": int(time.time()) + 300}, None, algorithm="none"),
        "expired": token_for(settings, "system/*.cruds", ttl=-120),
        "wrong audience": _own(settings, aud="https://elsewhere.example/fhir"),
        "wrong issuer": _own(settings, iss="https://evil.example"),
        "not yet valid": _own(settings, nbf=int(time.time()) + 600),
    }
    for name, token in attacks.items():
        response = await world.http.get(f"/fhir/Patient/{world.alice}",
                                        headers=world.as_token(token))
        assert response.status_code == 401, name


def _own(settings: Settings, **overrides: Any) -> str:
    """A token signed with the server's real key but with tampered claims."""
    from fhir_server.security.keys import load_server_key

    key = load_server_key(settings.data_dir)
    base = settings.public_base_url()
    claims = {"iss": base, "aud": base, "sub": "x", "scope": "system/*.cruds",
              "exp": int(time.time()) + 300, "iat": int(time.time()), **overrides}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


async def test_insufficient_scope_is_403(world: World) -> None:
    headers = world.patient_headers(world.alice, "patient/Observation.rs")
    response = await world.http.post("/fhir/Observation", json=observation(
        f"Patient/{world.alice}"), headers={**headers, **FHIR})
    assert response.status_code == 403
    assert message_id(response) == "MSG_SCOPE_INSUFFICIENT"


async def test_patient_reads_own_data_and_not_another_patients(world: World) -> None:
    headers = world.patient_headers(world.alice)
    own = await world.http.get(f"/fhir/Observation/{world.alice_obs}", headers=headers)
    assert own.status_code == 200
    for path in (f"/fhir/Observation/{world.bob_obs}", f"/fhir/Patient/{world.bob}",
                 f"/fhir/Observation/{world.bob_obs}/_history/1",
                 f"/fhir/Patient/{world.bob}/_history"):
        response = await world.http.get(path, headers=headers)
        assert response.status_code == 404, path
        # exactly as for an unknown id (a version: as for an unknown version)
        expected = "MSG_NO_EXIST_VERSION" if "_history/" in path else "MSG_NO_EXIST"
        assert message_id(response) == expected


async def test_patient_searches_are_narrowed_to_the_compartment(world: World) -> None:
    headers = world.patient_headers(world.alice)
    everything = await world.http.get("/fhir/Observation", headers=headers)
    assert ids_of(everything) == {world.alice_obs}
    chained = await world.http.get("/fhir/Observation", headers=headers, params={
        "subject.identifier": f"{CCCD_SYSTEM}|001090012345"})
    assert ids_of(chained) == set()
    has = await world.http.get("/fhir/Patient", headers=headers, params={
        "_has:Observation:subject:status": "final"})
    assert ids_of(has) <= {world.alice}
    included = await world.http.get("/fhir/Observation", headers=headers, params={
        "_include": "Observation:subject", "_id": f"{world.alice_obs},{world.bob_obs}"})
    assert ids_of(included) <= {world.alice_obs, world.alice}
    reverse = await world.http.get("/fhir/Patient", headers=headers, params={
        "_revinclude": "Observation:subject"})
    assert world.bob_obs not in ids_of(reverse)
    system = await world.http.get("/fhir", headers=headers, params={"_type": "Observation"})
    assert world.bob_obs not in ids_of(system)
    compartment = await world.http.get(f"/fhir/Patient/{world.bob}/Observation",
                                       headers=headers)
    assert ids_of(compartment) == set()


async def test_patient_token_cannot_write_another_patients_data(world: World) -> None:
    headers = {**world.patient_headers(world.alice, "patient/*.cruds"), **FHIR}
    response = await world.http.post("/fhir/Observation", json=observation(
        f"Patient/{world.bob}"), headers=headers)
    assert response.status_code in (403, 404)
    stored = await world.http.get("/fhir/Observation", params={"subject": f"Patient/{world.bob}"})
    assert ids_of(stored) == {world.bob_obs}


async def test_audit_events_record_success_and_refusal(world: World) -> None:
    headers = world.patient_headers(world.alice)
    await world.http.get(f"/fhir/Observation/{world.alice_obs}", headers=headers)
    await world.http.get(f"/fhir/Observation/{world.bob_obs}", headers=headers)
    await world.http.get(f"/fhir/Patient/{world.alice}", headers={"Authorization": ""})
    events = await world.audit_events()
    reads = [e for e in events if e["subtype"][0]["code"] == "read"]
    outcomes = sorted(e["outcome"] for e in reads)
    assert "0" in outcomes and "4" in outcomes
    what = [x["what"]["reference"] for e in reads for x in e.get("entity", [])
            if "what" in x]
    assert any(w.startswith(f"Observation/{world.alice_obs}") for w in what)
    creates = [e for e in events if e["action"] == "C"]
    assert len(creates) >= 4


async def test_patient_can_list_who_looked_at_their_records(world: World) -> None:
    await world.http.get(f"/fhir/Observation/{world.alice_obs}")
    await world.http.get(f"/fhir/Observation/{world.bob_obs}")
    await world.services.audit_trail.flush()
    headers = world.patient_headers(world.alice, "patient/AuditEvent.rs patient/*.rs")
    response = await world.http.get("/fhir/AuditEvent", headers=headers, params={
        "patient": f"Patient/{world.alice}", "_count": "200"})
    assert response.status_code == 200
    events = [e["resource"] for e in response.json().get("entry", [])]
    assert events
    mentions = {x["what"]["reference"] for e in events for x in e.get("entity", [])}
    assert any(m.startswith(f"Observation/{world.alice_obs}") for m in mentions)
    assert not any(m.startswith(f"Observation/{world.bob_obs}") for m in mentions)


async def test_audit_events_cannot_be_changed(world: World) -> None:
    events = await world.audit_events()
    event = events[0]
    put = await world.http.put(f"/fhir/AuditEvent/{event['id']}", json=event, headers=FHIR)
    assert put.status_code == 405
    assert message_id(put) == "MSG_AUDIT_IMMUTABLE"
    delete = await world.http.delete(f"/fhir/AuditEvent/{event['id']}")
    assert delete.status_code == 405


async def test_writes_record_the_acting_client_in_meta_source(world: World) -> None:
    token = token_for(world.settings, "system/*.cruds", client_id="bv-bach-mai",
                      organization="Organization/org-1")
    created = await world.http.post("/fhir/Observation", json=observation(
        f"Patient/{world.alice}"), headers={**world.as_token(token), **FHIR})
    assert created.json()["meta"]["source"] == "Organization/org-1"


async def test_public_endpoints_need_no_token(world: World) -> None:
    for path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration",
                 "/fhir/.well-known/jwks.json"):
        response = await world.http.get(path, headers={"Authorization": ""})
        assert response.status_code == 200, path
    config = (await world.http.get("/fhir/.well-known/smart-configuration")).json()
    assert config["token_endpoint"] == "http://test/fhir/auth/token"
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]


def _assertion(key: ec.EllipticCurvePrivateKey, client_id: str, jti: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": "http://test/fhir/auth/token",
              "exp": now + 240, "iat": now, "jti": jti}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})


async def test_backend_services_token_flow_and_replay(world: World) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    ClientRegistry(auth_database_path(world.settings.data_dir)).add(RegisteredClient(
        "emr-01929", {"keys": [{**public, "kid": "k1", "alg": "ES384"}]},
        "system/*.cruds", "Organization/org-01929"))
    form = {"grant_type": "client_credentials", "scope": "system/Observation.cruds",
            "client_assertion_type":
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(key, "emr-01929", str(uuid.uuid4()))}
    issued = await world.http.post("/fhir/auth/token", data=form,
                                   headers={"Authorization": ""})
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    created = await world.http.post("/fhir/Observation", json=observation(
        f"Patient/{world.alice}"), headers={**world.as_token(token), **FHIR})
    assert created.status_code == 201
    assert created.json()["meta"]["source"] == "Organization/org-01929"
    escalation = await world.http.post("/fhir/Patient", json=_patient("079190000001"),
                                       headers={**world.as_token(token), **FHIR})
    assert escalation.status_code == 403
    replay = await world.http.post("/fhir/auth/token", data=form,
                                   headers={"Authorization": ""})
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"


async def test_auth_off_serves_without_token_and_warns(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings.model_copy(update={"auth": "off"}))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://test"
    ) as http:
        response = await http.get("/fhir/Patient")
    assert response.status_code == 200
    assert any("access control is OFF" in r.getMessage() for r in caplog.records)


async def test_token_naming_its_patient_by_cccd_is_resolved_to_the_patient(world: World) -> None:
    token = token_for(world.settings, "patient/*.rs",
                      patient_identifier=(CCCD_SYSTEM, "019203107473"))
    own = await world.http.get("/fhir/Observation", headers=world.as_token(token))
    assert ids_of(own) == {world.alice_obs}
    nobody = token_for(world.settings, "patient/*.rs",
                       patient_identifier=(CCCD_SYSTEM, "079099999999"))
    refused = await world.http.get("/fhir/Observation", headers=world.as_token(nobody))
    assert refused.status_code == 403
    assert message_id(refused) == "MSG_TOKEN_PATIENT_UNKNOWN"

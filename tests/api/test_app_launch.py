"""API tests of SMART App Launch (standalone): the flow through the development identity
provider, consent, tokens, refresh, revocation and introspection, driven in-process page by
page, and the attacks on it: a code for another client, a replayed or expired code, a wrong
PKCE verifier, a redirect URI that does not match, a scope the app may not ask for, a refresh
token used twice, a forged consent form, a person without a health book."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from fhir_server.main import create_app
from fhir_server.security.clients import ClientRegistry, RegisteredClient, auth_database_path
from fhir_server.security.keys import load_id_token_key
from fhir_server.settings import Settings
from tests.builders import observation, patient
from tests.conftest import token_for

BASE = "http://localhost/fhir"
APP_REDIRECT = "https://app.example.vn/callback"
OTHER_REDIRECT = "https://app.example.vn/other"
CCCD = "001090012345"
FHIR = {"Content-Type": "application/fhir+json"}
APP_SCOPE = ("launch/patient openid fhirUser offline_access patient/*.rs "
             "patient/Observation.rs patient/Condition.rs")


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Launch:
    """One authorization request of an app, and what came back."""

    client_id: str = "so-suc-khoe"
    scope: str = "launch/patient openid fhirUser offline_access patient/*.rs"
    redirect_uri: str = APP_REDIRECT
    state: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    extra: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, str]:
        return {"response_type": "code", "client_id": self.client_id,
                "redirect_uri": self.redirect_uri, "scope": self.scope, "state": self.state,
                "nonce": self.nonce, "aud": BASE, "code_challenge": challenge(self.verifier),
                "code_challenge_method": "S256", **self.extra}


@dataclass
class World:
    """A running app with App Launch on (development provider), two apps and a citizen."""

    http: httpx.AsyncClient
    admin: dict[str, str]
    settings: Settings
    app: Any
    patient_id: str

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://localhost")

    async def sign_in(self, browser: httpx.AsyncClient, launch: Launch,
                      cccd: str = CCCD) -> httpx.Response:
        """Authorize, sign in at the development provider; return the answer after it."""
        answer = await browser.get("/fhir/auth/authorize", params=launch.params())
        if answer.status_code != 302 or "/dev-idp/" not in answer.headers["location"]:
            return answer
        upstream = dict(parse_qs(urlsplit(answer.headers["location"]).query))
        form = {name: values[0] for name, values in upstream.items()}
        answer = await browser.post("/dev-idp/authorize",
                                    data={**form, "cccd": cccd, "name": "Nguyễn Văn An"})
        assert answer.status_code == 302, answer.text
        return await browser.get(answer.headers["location"])

    async def consent_page(self, browser: httpx.AsyncClient, launch: Launch) -> httpx.Response:
        answer = await self.sign_in(browser, launch)
        assert answer.status_code == 302, answer.text
        return await browser.get(answer.headers["location"])

    async def code(self, launch: Launch, browser: httpx.AsyncClient | None = None,
                   approve: list[str] | None = None) -> str:
        """Run the whole authorization and return the code the app receives."""
        browser = browser or self.browser()
        page = await self.consent_page(browser, launch)
        if page.status_code == 302:  # remembered approval: straight back to the app
            return _code_of(page, launch)
        assert page.status_code == 200, page.text
        form = _consent_form(page.text, approve)
        return _code_of(await post_form(browser, "/fhir/auth/consent", form), launch)

    async def token(self, **form: str) -> httpx.Response:
        return await self.http.post("/fhir/auth/token", data=form)

    async def exchange(self, launch: Launch, code: str, **extra: str) -> httpx.Response:
        return await self.token(grant_type="authorization_code", code=code,
                                redirect_uri=launch.redirect_uri, client_id=launch.client_id,
                                code_verifier=launch.verifier, **extra)


def _code_of(answer: httpx.Response, launch: Launch) -> str:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(launch.redirect_uri + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [launch.state]
    return query["code"][0]


def _consent_form(html: str, approve: list[str] | None) -> list[tuple[str, str]]:
    import re

    hidden = dict(re.findall(r'name="(request|csrf)" value="([^"]+)"', html))
    scopes = re.findall(r'name="scope" value="([^"]+)"', html)
    chosen = scopes if approve is None else [s for s in scopes if s in approve]
    return [("request", hidden["request"]), ("csrf", hidden["csrf"]),
            ("decision", "approve")] + [("scope", s) for s in chosen]


async def post_form(http: httpx.AsyncClient, url: str,
                    form: list[tuple[str, str]]) -> httpx.Response:
    return await http.post(url, content=urlencode(form),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})


def register(settings: Settings, client: RegisteredClient) -> None:
    ClientRegistry(auth_database_path(settings.data_dir)).add(client)


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings of the world beyond App Launch on (tests override the fixture)."""
    return {}


@pytest.fixture
async def world(settings: Settings, overrides: dict[str, Any]) -> AsyncIterator[World]:
    settings = settings.model_copy(update={"base_url": BASE, "dev_identity_provider": True,
                                           **overrides})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app.state.identity_http = lambda: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app))
        register(settings, RegisteredClient(
            "so-suc-khoe", {}, APP_SCOPE, kind="public", name="Sổ sức khỏe",
            redirect_uris=(APP_REDIRECT, OTHER_REDIRECT)))
        register(settings, RegisteredClient(
            "other-app", {}, APP_SCOPE, kind="public", name="Other app",
            redirect_uris=("https://other.example.vn/cb",)))
        admin = {"Authorization": f"Bearer {token_for(settings, 'system/*.cruds')}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://localhost") as http:
            created = await http.post("/fhir/Patient", json=patient(CCCD),
                                      headers={**FHIR, **admin})
            pid = created.json()["id"]
            await http.post("/fhir/Observation", json=observation(f"Patient/{pid}"),
                            headers={**FHIR, **admin})
            yield World(http, admin, settings, app, pid)


async def test_standalone_launch_gives_a_token_bound_to_the_citizens_patient(
    world: World,
) -> None:
    launch = Launch()
    code = await world.code(launch)
    answer = await world.exchange(launch, code)
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["patient"] == world.patient_id
    assert token["token_type"] == "Bearer"
    assert set(token["scope"].split()) == set(launch.scope.split())
    assert answer.headers["cache-control"] == "no-store"
    summary = await world.http.get(f"/fhir/Patient/{world.patient_id}/$summary",
                                   headers={"Authorization": f"Bearer {token['access_token']}"})
    assert summary.status_code == 200, summary.text
    id_token = jwt.decode(token["id_token"],
                          load_id_token_key(world.settings.data_dir).private_key.public_key(),
                          algorithms=["RS256"], audience=launch.client_id, issuer=BASE)
    assert id_token["nonce"] == launch.nonce
    assert id_token["auth_time"] <= id_token["iat"]
    assert id_token["fhirUser"] == f"{BASE}/Patient/{world.patient_id}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def tokens(world: World, launch: Launch | None = None) -> dict[str, Any]:
    launch = launch or Launch()
    answer = await world.exchange(launch, await world.code(launch))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_refresh_token_rotates_and_the_new_access_token_works(world: World) -> None:
    first = await tokens(world)
    answer = await world.token(grant_type="refresh_token", refresh_token=first["refresh_token"],
                               client_id="so-suc-khoe")
    assert answer.status_code == 200, answer.text
    second = answer.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["patient"] == world.patient_id
    read = await world.http.get(f"/fhir/Patient/{world.patient_id}",
                                headers=bearer(second["access_token"]))
    assert read.status_code == 200


async def test_refresh_token_used_twice_revokes_the_whole_family(world: World) -> None:
    first = await tokens(world)
    rotated = (await world.token(grant_type="refresh_token", client_id="so-suc-khoe",
                                 refresh_token=first["refresh_token"])).json()
    replay = await world.token(grant_type="refresh_token", client_id="so-suc-khoe",
                               refresh_token=first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    for access in (first["access_token"], rotated["access_token"]):
        read = await world.http.get(f"/fhir/Patient/{world.patient_id}", headers=bearer(access))
        assert read.status_code == 401
    again = await world.token(grant_type="refresh_token", client_id="so-suc-khoe",
                              refresh_token=rotated["refresh_token"])
    assert again.json()["error"] == "invalid_grant"


async def test_refresh_token_of_another_client_is_refused(world: World) -> None:
    first = await tokens(world)
    answer = await world.token(grant_type="refresh_token", client_id="other-app",
                               refresh_token=first["refresh_token"])
    assert answer.json()["error"] == "invalid_grant"


async def test_refresh_cannot_widen_the_scope(world: World) -> None:
    first = await tokens(world, Launch(scope="launch/patient offline_access "
                                             "patient/Observation.rs"))
    answer = await world.token(grant_type="refresh_token", client_id="so-suc-khoe",
                               refresh_token=first["refresh_token"], scope="patient/*.rs")
    assert answer.json()["error"] == "invalid_scope"


async def test_revoked_refresh_token_stops_its_access_tokens(world: World) -> None:
    first = await tokens(world)
    headers = bearer(first["access_token"])
    assert (await world.http.get(f"/fhir/Patient/{world.patient_id}",
                                 headers=headers)).status_code == 200
    revoked = await world.http.post("/fhir/auth/revoke", data={
        "token": first["refresh_token"], "client_id": "so-suc-khoe"})
    assert revoked.status_code == 200
    read = await world.http.get(f"/fhir/Patient/{world.patient_id}", headers=headers)
    assert read.status_code == 401
    refresh = await world.token(grant_type="refresh_token", client_id="so-suc-khoe",
                                refresh_token=first["refresh_token"])
    assert refresh.json()["error"] == "invalid_grant"


async def test_revoked_access_token_is_refused_at_once(world: World) -> None:
    first = await tokens(world)
    headers = bearer(first["access_token"])
    await world.http.get(f"/fhir/Patient/{world.patient_id}", headers=headers)  # cached
    await world.http.post("/fhir/auth/revoke", data={
        "token": first["access_token"], "token_type_hint": "access_token",
        "client_id": "so-suc-khoe"})
    assert (await world.http.get(f"/fhir/Patient/{world.patient_id}",
                                 headers=headers)).status_code == 401


async def test_introspection_reports_smart_fields_and_inactive_after_revocation(
    world: World,
) -> None:
    first = await tokens(world)
    form = {"token": first["access_token"], "client_id": "so-suc-khoe"}
    active = (await world.http.post("/fhir/auth/introspect", data=form)).json()
    assert active["active"] is True
    assert active["patient"] == world.patient_id
    assert active["client_id"] == "so-suc-khoe"
    assert active["scope"] == first["scope"]
    assert active["fhirUser"] == f"{BASE}/Patient/{world.patient_id}"
    assert {"exp", "sub", "iss"} <= set(active)
    await world.http.post("/fhir/auth/revoke", data={"token": first["refresh_token"],
                                                     "client_id": "so-suc-khoe"})
    assert (await world.http.post("/fhir/auth/introspect", data=form)).json() == {
        "active": False}


async def test_introspection_by_another_client_learns_nothing(world: World) -> None:
    first = await tokens(world)
    answer = await world.http.post("/fhir/auth/introspect", data={
        "token": first["access_token"], "client_id": "other-app"})
    assert answer.json() == {"active": False}


async def test_replayed_code_is_refused_and_revokes_the_tokens_it_gave(world: World) -> None:
    launch = Launch()
    code = await world.code(launch)
    first = await world.exchange(launch, code)
    assert first.status_code == 200
    replay = await world.exchange(launch, code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    read = await world.http.get(f"/fhir/Patient/{world.patient_id}",
                                headers=bearer(first.json()["access_token"]))
    assert read.status_code == 401


async def test_code_for_another_client_is_refused(world: World) -> None:
    launch = Launch()
    code = await world.code(launch)
    answer = await world.token(grant_type="authorization_code", code=code,
                               redirect_uri=launch.redirect_uri, client_id="other-app",
                               code_verifier=launch.verifier)
    assert answer.json()["error"] == "invalid_grant"
    assert (await world.exchange(launch, code)).status_code == 200  # still its own


@pytest.mark.parametrize("overrides", [{"authorization_code_ttl": 0}])
async def test_expired_code_is_refused(world: World) -> None:
    launch = Launch()
    code = await world.code(launch)
    assert (await world.exchange(launch, code)).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("verifier", [None, "x" * 50, secrets.token_urlsafe(48)])
async def test_missing_or_wrong_pkce_verifier_is_refused(
    world: World, verifier: str | None
) -> None:
    launch = Launch()
    code = await world.code(launch)
    form = {"grant_type": "authorization_code", "code": code, "client_id": launch.client_id,
            "redirect_uri": launch.redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    answer = await world.token(**form)
    assert answer.status_code == 400
    assert answer.json()["error"] in ("invalid_request", "invalid_grant")


async def test_token_request_with_another_redirect_uri_is_refused(world: World) -> None:
    launch = Launch()
    code = await world.code(launch)
    answer = await world.token(grant_type="authorization_code", code=code,
                               redirect_uri=OTHER_REDIRECT, client_id=launch.client_id,
                               code_verifier=launch.verifier)
    assert answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("redirect_uri", ["https://evil.example.com/cb",
                                          APP_REDIRECT + "/extra", APP_REDIRECT + "?x=1"])
async def test_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(
    world: World, redirect_uri: str
) -> None:
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/authorize",
                                   params=Launch(redirect_uri=redirect_uri).params())
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert 'id="error"' in answer.text


@pytest.mark.parametrize("change", [
    {"code_challenge_method": "plain"}, {"code_challenge": ""}, {"state": ""},
    {"aud": "https://evil.example.com/fhir"}, {"response_type": "token"}])
async def test_bad_authorization_request_is_sent_back_to_the_app_as_an_error(
    world: World, change: dict[str, str]
) -> None:
    launch = Launch()
    params = {**launch.params(), **change}
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/authorize", params=params)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(APP_REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"][0] in ("invalid_request", "unsupported_response_type")
    assert "code" not in query


async def test_scope_the_client_may_not_ask_for_is_never_granted(world: World) -> None:
    launch = Launch(scope="launch/patient patient/*.cruds system/*.cruds user/*.rs "
                          "patient/Observation.rs")
    token = await tokens(world, launch)
    granted = set(token["scope"].split())
    assert granted == {"launch/patient", "patient/*.rs"}
    write = await world.http.post("/fhir/Observation", headers={
        **FHIR, **bearer(token["access_token"])},
        json=observation(f"Patient/{world.patient_id}"))
    assert write.status_code == 403


async def test_request_with_nothing_grantable_is_refused(world: World) -> None:
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/authorize", params=Launch(
            scope="system/*.cruds openid").params())
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_scope"]


async def test_reused_nonce_is_refused(world: World) -> None:
    first = Launch()
    await world.code(first)
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/authorize",
                                   params=Launch(nonce=first.nonce).params())
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_request"]


async def test_person_without_a_patient_gets_a_clear_page_and_no_code(world: World) -> None:
    launch = Launch()
    async with world.browser() as browser:
        answer = await world.sign_in(browser, launch, cccd="079999999999")
    assert answer.status_code == 403
    assert 'id="no-patient"' in answer.text
    assert "code=" not in answer.text


async def test_partial_approval_grants_only_the_ticked_scopes(world: World) -> None:
    launch = Launch(scope="launch/patient offline_access patient/Observation.rs "
                          "patient/Condition.rs")
    code = await world.code(launch, approve=["patient/Observation.rs"])
    token = (await world.exchange(launch, code)).json()
    assert set(token["scope"].split()) == {"launch/patient", "patient/Observation.rs"}
    assert "refresh_token" not in token  # offline_access was not ticked
    conditions = await world.http.get("/fhir/Condition", headers=bearer(token["access_token"]))
    assert conditions.status_code == 403


async def test_deny_sends_access_denied_to_the_app(world: World) -> None:
    launch = Launch()
    async with world.browser() as browser:
        page = await world.consent_page(browser, launch)
        form = [(n, v) for n, v in _consent_form(page.text, None) if n != "decision"]
        answer = await post_form(browser, "/fhir/auth/consent", [*form, ("decision", "deny")])
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [launch.state]


async def test_consent_form_cannot_be_forged_or_replayed(world: World) -> None:
    launch = Launch()
    async with world.browser() as browser:
        page = await world.consent_page(browser, launch)
        form = _consent_form(page.text, None)
        forged = [(n, "wrong" if n == "csrf" else v) for n, v in form]
        assert (await post_form(browser, "/fhir/auth/consent", forged)).status_code == 403
        assert (await post_form(browser, "/fhir/auth/consent", form)).status_code == 302
        assert (await post_form(browser, "/fhir/auth/consent", form)).status_code in (400, 403)
    async with world.browser() as stranger:  # another browser, same form
        assert (await post_form(stranger, "/fhir/auth/consent", form)).status_code in (
            400, 401)


async def test_approval_is_remembered_and_recorded_as_an_audited_consent(
    world: World,
) -> None:
    async with world.browser() as browser:
        await world.code(Launch(), browser)
        page = await world.consent_page(browser, Launch())  # same scope: no question asked
        assert page.status_code == 302
        assert page.headers["location"].startswith(APP_REDIRECT)
    consents = (await world.http.get("/fhir/Consent", params={
        "patient": f"Patient/{world.patient_id}"}, headers=world.admin)).json()
    [entry] = consents["entry"]
    resource = entry["resource"]
    assert resource["status"] == "active"
    assert resource["scope"]["coding"][0]["code"] == "patient-privacy"
    actor = resource["provision"]["actor"][0]["reference"]["identifier"]
    assert actor == {"system": "urn:fhir-server:client", "value": "so-suc-khoe"}
    await world.app.state.services.audit_trail.flush()
    events = (await world.http.get("/fhir/AuditEvent", params={
        "entity": f"Consent/{resource['id']}"}, headers=world.admin)).json()
    assert events.get("entry"), "the Consent's creation is audited"


async def test_citizen_revokes_an_app_from_the_apps_page(world: World) -> None:
    async with world.browser() as browser:
        launch = Launch()
        token = (await world.exchange(launch, await world.code(launch, browser))).json()
        page = await browser.get("/fhir/auth/apps")
        assert page.status_code == 200
        assert "Sổ sức khỏe" in page.text
        import re

        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await post_form(browser, "/fhir/auth/apps",
                                 [("csrf", csrf.group(1)), ("client_id", "so-suc-khoe")])
        assert answer.status_code == 302
        after = await browser.get(answer.headers["location"])
        assert "Sổ sức khỏe" not in after.text.split("</h1>", 1)[1].split('id="notice"')[0]
    read = await world.http.get(f"/fhir/Patient/{world.patient_id}",
                                headers=bearer(token["access_token"]))
    assert read.status_code == 401
    consent = (await world.http.get("/fhir/Consent", params={
        "patient": f"Patient/{world.patient_id}"}, headers=world.admin)).json()
    assert consent["entry"][0]["resource"]["status"] == "inactive"


async def test_apps_page_without_sign_in_starts_a_sign_in(world: World) -> None:
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/apps")
    assert answer.status_code == 302
    assert "/dev-idp/authorize" in answer.headers["location"]


async def test_smart_configuration_announces_app_launch(world: World) -> None:
    document = (await world.http.get("/fhir/.well-known/smart-configuration")).json()
    assert document["authorization_endpoint"] == BASE + "/auth/authorize"
    assert document["revocation_endpoint"] == BASE + "/auth/revoke"
    assert document["introspection_endpoint"] == BASE + "/auth/introspect"
    assert document["management_endpoint"] == BASE + "/auth/apps"
    assert {"launch-standalone", "client-public", "sso-openid-connect",
            "context-standalone-patient", "permission-offline"} <= set(document["capabilities"])
    assert "registration_endpoint" not in document
    assert document["code_challenge_methods_supported"] == ["S256"]
    jwks = (await world.http.get("/fhir/.well-known/jwks.json")).json()
    assert {key["alg"] for key in jwks["keys"]} == {"ES256", "RS256"}


async def test_app_launch_is_absent_without_an_identity_provider(client: httpx.AsyncClient
                                                                  ) -> None:
    document = (await client.get("/fhir/.well-known/smart-configuration")).json()
    assert "authorization_endpoint" not in document
    assert "launch-standalone" not in document["capabilities"]
    assert "issuer" not in document
    assert (await client.get("/fhir/auth/authorize")).status_code == 404
    assert (await client.get("/dev-idp/.well-known/openid-configuration")).status_code == 404


async def test_dynamic_registration_is_off_by_default(world: World) -> None:
    answer = await world.http.post("/fhir/auth/register", json={
        "redirect_uris": [APP_REDIRECT], "token_endpoint_auth_method": "none"})
    assert answer.status_code == 404


@pytest.mark.parametrize("overrides", [{"dynamic_registration": True}])
async def test_dynamically_registered_public_app_can_launch(world: World) -> None:
    document = (await world.http.get("/fhir/.well-known/smart-configuration")).json()
    assert document["registration_endpoint"] == BASE + "/auth/register"
    answer = await world.http.post("/fhir/auth/register", json={
        "redirect_uris": ["https://new.example.vn/cb"], "token_endpoint_auth_method": "none",
        "client_name": "Ứng dụng mới", "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"], "scope": "launch/patient patient/Observation.rs"})
    assert answer.status_code == 201, answer.text
    registered = answer.json()
    assert "client_secret" not in registered
    launch = Launch(client_id=registered["client_id"], redirect_uri="https://new.example.vn/cb",
                    scope="launch/patient patient/Observation.rs")
    token = await tokens(world, launch)
    assert token["scope"] == "launch/patient patient/Observation.rs"


@pytest.mark.parametrize("overrides", [{"dynamic_registration": True}])
@pytest.mark.parametrize("metadata", [
    {"redirect_uris": ["http://evil.example.com/cb"], "token_endpoint_auth_method": "none"},
    {"redirect_uris": ["https://a.example.vn/cb"], "token_endpoint_auth_method": "none",
     "scope": "system/*.cruds"},
    {"redirect_uris": ["https://a.example.vn/cb"], "token_endpoint_auth_method": "none",
     "grant_types": ["client_credentials"]},
])
async def test_dynamic_registration_refuses_unsafe_metadata(
    world: World, metadata: dict[str, Any]
) -> None:
    answer = await world.http.post("/fhir/auth/register", json=metadata)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_client_metadata"


async def test_confidential_app_authenticates_with_its_secret(world: World) -> None:
    from fhir_server.security.clients import secret_hash

    register(world.settings, RegisteredClient(
        "portal", {}, APP_SCOPE, kind="confidential", name="Portal",
        redirect_uris=("https://portal.example.vn/cb",), secret_hash=secret_hash("s3cret")))
    launch = Launch(client_id="portal", redirect_uri="https://portal.example.vn/cb")
    code = await world.code(launch)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": launch.verifier,
            "redirect_uri": launch.redirect_uri}
    unauthenticated = await world.token(**form, client_id="portal")
    assert unauthenticated.status_code in (400, 401)
    assert unauthenticated.json()["error"] == "invalid_client"
    wrong = await world.http.post("/fhir/auth/token", data=form, auth=("portal", "wrong"))
    assert wrong.status_code == 401
    answer = await world.http.post("/fhir/auth/token", data=form, auth=("portal", "s3cret"))
    assert answer.status_code == 200, answer.text


async def test_backend_service_introspects_any_token_with_its_bearer_token(
    world: World,
) -> None:
    first = await tokens(world)
    backend = bearer(token_for(world.settings, "system/*.rs"))
    answer = await world.http.post("/fhir/auth/introspect", headers=backend,
                                   data={"token": first["access_token"]})
    assert answer.json()["active"] is True
    assert answer.json()["patient"] == world.patient_id
    citizen = bearer(first["access_token"])
    refused = await world.http.post("/fhir/auth/introspect", headers=citizen,
                                    data={"token": first["access_token"]})
    assert refused.status_code == 403


async def test_revocation_is_audited(world: World) -> None:
    first = await tokens(world)
    await world.http.post("/fhir/auth/revoke", data={"token": first["refresh_token"],
                                                     "client_id": "so-suc-khoe"})
    await world.app.state.services.audit_trail.flush()
    events = (await world.http.get("/fhir/AuditEvent", params={
        "subtype": "http://dicom.nema.org/resources/ontology/DCM|110123"},
        headers=world.admin)).json()
    [event] = [e["resource"] for e in events["entry"]]
    assert event["agent"][0]["altId"] == "so-suc-khoe"


def _assertion(key: Any, client_id: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": BASE + "/auth/token",
              "exp": now + 240, "iat": now, "jti": secrets.token_urlsafe(16)}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})


async def test_confidential_app_authenticates_with_a_client_assertion(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP384R1())
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    register(world.settings, RegisteredClient(
        "portal-jwt", {"keys": [{**public, "kid": "k1", "alg": "ES384"}]}, APP_SCOPE,
        kind="confidential", redirect_uris=("https://portal.example.vn/cb",)))
    launch = Launch(client_id="portal-jwt", redirect_uri="https://portal.example.vn/cb")
    code = await world.code(launch)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": launch.verifier,
            "redirect_uri": launch.redirect_uri, "client_assertion_type":
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    stranger = ec.generate_private_key(ec.SECP384R1())
    forged = await world.token(**form, client_assertion=_assertion(stranger, "portal-jwt"))
    assert forged.json()["error"] == "invalid_client"
    assert (await world.token(**form, client_id="portal-jwt")).json()["error"] == (
        "invalid_client")
    answer = await world.token(**form, client_assertion=_assertion(key, "portal-jwt"))
    assert answer.status_code == 200, answer.text
    backend = await world.token(grant_type="client_credentials", scope="patient/*.rs",
                                client_assertion_type=form["client_assertion_type"],
                                client_assertion=_assertion(key, "portal-jwt"))
    assert backend.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize("overrides", [{"base_url": "http://fhir.example.vn/fhir"}])
async def test_oauth_over_plain_http_off_the_loopback_is_refused(
    world: World, overrides: dict[str, Any]
) -> None:
    answer = await world.token(grant_type="authorization_code", code="x", client_id="app")
    assert answer.status_code == 400
    assert answer.json()["error"] == "insecure_transport"


async def test_authorization_request_may_be_posted(world: World) -> None:
    async with world.browser() as browser:
        answer = await post_form(browser, "/fhir/auth/authorize",
                                 list(Launch().params().items()))
    assert answer.status_code == 302
    assert "/dev-idp/authorize" in answer.headers["location"]


async def test_sign_in_refused_upstream_sends_access_denied_to_the_app(world: World) -> None:
    launch = Launch()
    async with world.browser() as browser:
        answer = await browser.get("/fhir/auth/authorize", params=launch.params())
        upstream = parse_qs(urlsplit(answer.headers["location"]).query)
        back = await browser.get("/fhir/auth/callback", params={
            "error": "access_denied", "state": upstream["state"][0]})
    query = parse_qs(urlsplit(back.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == [launch.state]


async def test_sign_in_callback_from_another_browser_is_refused(world: World) -> None:
    async with world.browser() as victim, world.browser() as attacker:
        answer = await attacker.get("/fhir/auth/authorize", params=Launch().params())
        upstream = {k: v[0] for k, v in parse_qs(urlsplit(
            answer.headers["location"]).query).items()}
        signed = await attacker.post("/dev-idp/authorize", data={**upstream, "cccd": CCCD})
        callback = await victim.get(signed.headers["location"])
    assert callback.status_code == 400
    assert "fhir_session" not in callback.headers.get("set-cookie", "")

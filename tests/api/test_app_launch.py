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
async def world(tmp_path: Any, settings: Settings) -> AsyncIterator[World]:
    settings = settings.model_copy(update={"base_url": BASE, "dev_identity_provider": True})
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
    assert id_token["fhirUser"] == f"{BASE}/Patient/{world.patient_id}"

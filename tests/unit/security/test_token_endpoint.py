"""The backend-services token endpoint and the SMART configuration document."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fhir_server.security.client_assertion import CLIENT_ASSERTION_TYPE, MemoryJtiStore
from fhir_server.security.clients import ClientRegistry, RegisteredClient
from fhir_server.security.keys import load_server_key
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.token_endpoint import (
    OAuthError,
    issue_token,
    smart_configuration,
    token_endpoint_url,
)
from fhir_server.security.tokens import TokenVerifier

if TYPE_CHECKING:
    from conftest import Signer

BASE = "https://fhir.example.vn/fhir"
CLIENT_ID = "bv-cho-ray"
ALLOWED = "system/Observation.crus system/Patient.rs system/Encounter.cruds"

Issue = Callable[..., dict[str, Any]]


@pytest.fixture
def endpoint(tmp_path: Path, es384: Signer) -> tuple[Issue, TokenVerifier]:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    registry.add(RegisteredClient(CLIENT_ID, es384.jwks(), ALLOWED, "Organization/cho-ray"))
    server_key = load_server_key(tmp_path)
    store = MemoryJtiStore()

    def issue(**overrides: str | None) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": CLIENT_ID, "sub": CLIENT_ID}
        claims |= {"aud": token_endpoint_url(BASE), "exp": now + 240, "jti": str(uuid.uuid4())}
        form = {
            "grant_type": "client_credentials",
            "scope": "system/Observation.rs",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": es384.sign(claims),
            **overrides,
        }
        fields = {name: value for name, value in form.items() if value is not None}
        return issue_token(
            fields, clients=registry, jti_store=store, server_key=server_key, base_url=BASE
        )

    return issue, TokenVerifier(audience=BASE, server_key=server_key)


def oauth_error(issue: Issue, **overrides: str | None) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        issue(**overrides)
    return caught.value


def test_token_response_carries_a_verifiable_bearer_token(
    endpoint: tuple[Issue, TokenVerifier],
) -> None:
    issue, verifier = endpoint
    response = issue()
    assert response["token_type"] == "bearer" and response["expires_in"] == 300
    assert response["scope"] == "system/Observation.rs"
    context = verifier.verify(response["access_token"])
    assert context.client_id == CLIENT_ID and context.subject == CLIENT_ID
    assert context.organization == "Organization/cho-ray"
    assert context.scopes == parse_scopes("system/Observation.rs")


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("system/Observation.cruds", "system/Observation.crus"),
        ("system/*.rs", "system/Observation.rs system/Patient.rs system/Encounter.rs"),
        ("system/Patient.read system/Condition.rs", "system/Patient.read"),
        ("system/Encounter.*", "system/Encounter.*"),
    ],
)
def test_granted_scopes_are_the_requested_ones_narrowed_to_the_allowed(
    endpoint: tuple[Issue, TokenVerifier], requested: str, granted: str
) -> None:
    issue, _ = endpoint
    assert issue(scope=requested)["scope"] == granted


@pytest.mark.parametrize(
    "scope", ["system/Condition.rs", "patient/Observation.rs", "system/Obs.x", "openid", "", None]
)
def test_scope_not_allowed_malformed_or_missing_is_invalid_scope(
    endpoint: tuple[Issue, TokenVerifier], scope: str | None
) -> None:
    error = oauth_error(endpoint[0], scope=scope)
    assert (error.error, error.status) == ("invalid_scope", 400)


@pytest.mark.parametrize("grant_type", ["authorization_code", "password", "refresh_token"])
def test_other_grant_types_are_unsupported(
    endpoint: tuple[Issue, TokenVerifier], grant_type: str
) -> None:
    error = oauth_error(endpoint[0], grant_type=grant_type)
    assert (error.error, error.status) == ("unsupported_grant_type", 400)


@pytest.mark.parametrize(
    "overrides",
    [
        {"grant_type": None},
        {"client_assertion_type": None},
        {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"},
        {"client_assertion": None},
    ],
)
def test_incomplete_request_is_invalid_request(
    endpoint: tuple[Issue, TokenVerifier], overrides: dict[str, str | None]
) -> None:
    assert oauth_error(endpoint[0], **overrides).error == "invalid_request"


def test_bad_client_assertion_is_invalid_client(endpoint: tuple[Issue, TokenVerifier]) -> None:
    error = oauth_error(endpoint[0], client_assertion="x.y.z")
    assert (error.error, error.status) == ("invalid_client", 401)
    assert error.to_json() == {"error": "invalid_client", "error_description": error.description}


def test_smart_configuration_announces_backend_services() -> None:
    document = smart_configuration(BASE + "/")
    assert document["token_endpoint"] == BASE + "/auth/token"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["ES384", "RS384"]
    assert "client-confidential-asymmetric" in document["capabilities"]
    assert "permission-v2" in document["capabilities"]
    assert "system/*.cruds" in document["scopes_supported"]

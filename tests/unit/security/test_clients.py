"""The registry of backend-services clients in auth.sqlite3."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fhir_server.security.clients import (
    ClientExists,
    ClientRegistry,
    RegisteredClient,
    auth_database_path,
)
from fhir_server.security.keys import InvalidKey
from fhir_server.security.scopes import InvalidScope, parse_scopes

if TYPE_CHECKING:
    from conftest import Signer


def client(signer: Signer, client_id: str = "bv-cho-ray", **changes: Any) -> RegisteredClient:
    fields: dict[str, Any] = {
        "client_id": client_id,
        "jwks": signer.jwks(),
        "scope": "system/*.cruds",
        "organization": "Organization/cho-ray",
        **changes,
    }
    return RegisteredClient(**fields)


def test_added_client_can_be_got_back(tmp_path: Path, es384: Signer) -> None:
    registry = ClientRegistry(auth_database_path(tmp_path))
    registry.add(client(es384))
    assert registry.get("bv-cho-ray") == client(es384)
    assert registry.get("other") is None


def test_registry_persists_across_instances(tmp_path: Path, es384: Signer) -> None:
    ClientRegistry(auth_database_path(tmp_path)).add(client(es384))
    assert ClientRegistry(auth_database_path(tmp_path)).get("bv-cho-ray") is not None


def test_list_returns_clients_ordered_by_id(tmp_path: Path, es384: Signer) -> None:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    registry.add(client(es384, "b-client"))
    registry.add(client(es384, "a-client", organization=None))
    assert [c.client_id for c in registry.list()] == ["a-client", "b-client"]


def test_remove_reports_whether_the_client_existed(tmp_path: Path, es384: Signer) -> None:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    registry.add(client(es384))
    assert registry.remove("bv-cho-ray") is True
    assert registry.remove("bv-cho-ray") is False
    assert registry.get("bv-cho-ray") is None


def test_adding_an_existing_client_id_fails(tmp_path: Path, es384: Signer) -> None:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    registry.add(client(es384))
    with pytest.raises(ClientExists):
        registry.add(client(es384))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"client_id": "has space"}, ValueError),
        ({"client_id": ""}, ValueError),
        ({"jwks": {"keys": []}}, InvalidKey),
        ({"jwks": {"nokeys": 1}}, InvalidKey),
        ({"scope": ""}, ValueError),
        ({"scope": "system/*.cruds openid"}, InvalidScope),
        ({"scope": "system/*.rw"}, InvalidScope),
        ({"organization": "Patient/1"}, ValueError),
    ],
)
def test_unusable_client_is_refused(
    tmp_path: Path, es384: Signer, changes: dict[str, Any], error: type[Exception]
) -> None:
    registry = ClientRegistry(tmp_path / "auth.sqlite3")
    with pytest.raises(error):
        registry.add(client(es384, **changes))
    assert registry.list() == []


def test_client_whose_keys_suit_no_assertion_algorithm_is_refused(
    tmp_path: Path, es256: Signer
) -> None:
    with pytest.raises(InvalidKey):
        ClientRegistry(tmp_path / "auth.sqlite3").add(client(es256))


def test_allowed_scopes_are_parsed(es384: Signer) -> None:
    registered = client(es384, scope="system/Observation.cru system/Patient.rs")
    assert registered.allowed_scopes() == parse_scopes("system/Observation.cru system/Patient.rs")

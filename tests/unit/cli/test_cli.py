"""The ``fhir-server`` command's tools, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.cli import main
from fhir_server.security.clients import ClientRegistry, auth_database_path
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import TokenVerifier
from fhir_server.settings import Settings


def test_token_prints_a_token_the_server_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--scope", "patient/*.rs", "--patient", "p1",
                 "--data-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    base = Settings(data_dir=tmp_path).public_base_url()
    verifier = TokenVerifier(server_key=load_server_key(tmp_path), audience=base)
    context = verifier.verify(token)
    assert context.patient_id == "p1"


def test_client_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    public = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(),
                                as_dict=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "ES384"}]}))
    assert main(["client", "add", "--client-id", "bv-bach-mai", "--jwks", str(jwks),
                 "--scope", "system/*.cruds", "--organization", "Organization/o1",
                 "--data-dir", str(tmp_path)]) == 0
    assert main(["client", "list", "--data-dir", str(tmp_path)]) == 0
    assert "bv-bach-mai\tbackend\tsystem/*.cruds\tOrganization/o1" in capsys.readouterr().out
    assert main(["client", "remove", "--client-id", "bv-bach-mai",
                 "--data-dir", str(tmp_path)]) == 0
    assert main(["client", "remove", "--client-id", "bv-bach-mai",
                 "--data-dir", str(tmp_path)]) == 1


def test_client_add_registers_public_and_confidential_apps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scope = "launch/patient openid fhirUser offline_access patient/*.rs"
    common = ["--scope", scope, "--data-dir", str(tmp_path)]
    assert main(["client", "add", "--kind", "public", "--client-id", "so-suc-khoe",
                 "--name", "Sổ sức khỏe", "--redirect-uri", "vn.gov.vneid:/callback",
                 "--redirect-uri", "http://127.0.0.1:8000/cb", *common]) == 0
    assert main(["client", "add", "--kind", "confidential", "--client-id", "portal",
                 "--redirect-uri", "https://portal.example.vn/cb", *common]) == 0
    out = capsys.readouterr().out
    secret = out.split("client secret (shown once, keep it safe): ")[1].split()[0]
    registry = ClientRegistry(auth_database_path(tmp_path))
    public, portal = registry.get("so-suc-khoe"), registry.get("portal")
    assert public is not None and public.auth_method == "none"
    assert public.redirect_uris == ("vn.gov.vneid:/callback", "http://127.0.0.1:8000/cb")
    assert portal is not None and portal.check_secret(secret)
    assert not portal.check_secret(secret + "x")


@pytest.mark.parametrize("arguments", [
    ["--redirect-uri", "http://evil.example.com/cb", "--scope", "patient/*.rs"],
    ["--redirect-uri", "https://a.example.vn/cb#frag", "--scope", "patient/*.rs"],
    ["--redirect-uri", "https://a.example.vn/cb", "--scope", "system/*.cruds"],
    ["--scope", "patient/*.rs"],
])
def test_client_add_refuses_an_unsafe_app(
    tmp_path: Path, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["client", "add", "--kind", "public", "--client-id", "app",
                 "--data-dir", str(tmp_path), *arguments]) == 2
    assert "cannot add client app" in capsys.readouterr().err


def test_generate_then_load_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    assert main(["generate", "--patients", "3", "--seed", "9", "--out", str(out)]) == 0
    data = str(tmp_path / "data")
    assert main(["load", str(out), "--data-dir", data]) == 0
    first = capsys.readouterr().out
    assert "rejected 0" in first and "loaded 0 resources" not in first
    assert main(["load", str(out), "--data-dir", data]) == 0
    assert "loaded 0 resources" in capsys.readouterr().out


def test_validate_exits_non_zero_on_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    assert main(["validate", str(examples / "valid" / "Patient-vn-patient.json")]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "Patient", "gender": "xx"}))
    assert main(["validate", str(bad), "--format", "text"]) == 1
    assert "MSG_CODE_INVALID Patient.gender" in capsys.readouterr().out
    assert main(["validate", str(examples / "visit-bundle.json")]) == 0


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--profile",
                 "https://fhir.sskdt.vn/StructureDefinition/vn-patient"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["resourceType"]


def test_reindex_rebuilds_lost_index_rows(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    import httpx

    from fhir_server.main import create_app
    from tests.conftest import token_for

    out, data = tmp_path / "gen", tmp_path / "data"
    assert main(["generate", "--patients", "2", "--seed", "4", "--out", str(out)]) == 0
    assert main(["load", str(out), "--data-dir", str(data)]) == 0
    conn = sqlite3.connect(data / "fhir.sqlite3")
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'search_%'")]
    for table in tables:
        conn.execute(f'DELETE FROM "{table}"')
    conn.commit()
    conn.close()

    async def count_patients() -> int:
        settings = Settings(data_dir=data, base_url="http://test/fhir",
                            seed_search_parameters=False)
        app = create_app(settings)
        headers = {"Authorization": f"Bearer {token_for(settings, 'system/*.rs')}"}
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
        ) as http:
            found = await http.get("/fhir/Patient",
                                    params={"gender": "male,female,other,unknown"})
            return len(found.json().get("entry", []))

    assert asyncio.run(count_patients()) == 0
    assert main(["reindex", "--type", "Patient", "--data-dir", str(data)]) == 0
    assert asyncio.run(count_patients()) == 2


def test_concurrent_load_counts_every_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    assert main(["generate", "--patients", "6", "--seed", "2", "--out", str(out)]) == 0
    assert main(["load", str(out), "--data-dir", str(tmp_path / "one")]) == 0
    single = capsys.readouterr().out.split("loaded ")[1].split(" resources")[0]
    assert main(["load", str(out), "--data-dir", str(tmp_path / "four"),
                 "--concurrency", "4"]) == 0
    parallel = capsys.readouterr().out.split("loaded ")[1].split(" resources")[0]
    assert parallel == single != "0"


def test_load_in_two_processes_stores_what_one_process_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each process takes every other item; shared Organizations and each Patient stay single."""
    import sqlite3

    out = tmp_path / "gen"
    assert main(["generate", "--patients", "8", "--seed", "4", "--out", str(out)]) == 0
    assert main(["load", str(out), "--data-dir", str(tmp_path / "one")]) == 0
    single = capsys.readouterr().out.split("loaded ")[1].split(" resources")[0]
    assert main(["load", str(out), "--data-dir", str(tmp_path / "two"),
                 "--processes", "2", "--concurrency", "2"]) == 0
    report = capsys.readouterr().out
    assert report.split("loaded ")[1].split(" resources")[0] == single != "0"

    def counts(data: str) -> dict[str, int]:
        with sqlite3.connect(tmp_path / data / "fhir.sqlite3") as conn:
            rows = conn.execute("SELECT type, count(*) FROM resources GROUP BY type")
            return dict(rows.fetchall())

    assert counts("two") == counts("one")
    assert counts("two")["Patient"] == 8


def _value_indexes(data: Path) -> set[str]:
    import sqlite3

    from fhir_server.storage.sqlite.search_tables import DEFERRABLE_INDEXES

    with sqlite3.connect(data / "fhir.sqlite3") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    return names & set(DEFERRABLE_INDEXES)


def test_a_load_into_a_small_store_builds_the_value_indexes_at_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While loading, the value indexes are gone; after, they are back."""
    from fhir_server import loader
    from fhir_server.storage.sqlite.search_tables import DEFERRABLE_INDEXES

    out, data = tmp_path / "gen", tmp_path / "data"
    assert main(["generate", "--patients", "3", "--seed", "5", "--out", str(out)]) == 0
    seen_during_load: list[set[str]] = []
    load_item = loader._load_item

    async def spying(services: object, item: dict[str, object]) -> int:
        seen_during_load.append(_value_indexes(data))
        return await load_item(services, item)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_load_item", spying)
    assert main(["load", str(out), "--data-dir", str(data)]) == 0
    report = capsys.readouterr().out
    assert "search value indexes built after the load" in report
    assert seen_during_load and all(not names for names in seen_during_load)
    assert _value_indexes(data) == set(DEFERRABLE_INDEXES)

    # A store of SMALL_STORE resources or more keeps them (auto).
    monkeypatch.setattr(loader, "SMALL_STORE", 5)
    seen_during_load.clear()
    assert main(["load", str(out), "--data-dir", str(data)]) == 0
    assert "search value indexes" not in capsys.readouterr().out
    assert seen_during_load and all(n == set(DEFERRABLE_INDEXES) for n in seen_during_load)


def test_defer_indexes_off_keeps_them_and_on_defers_into_a_full_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen"
    assert main(["generate", "--patients", "2", "--seed", "6", "--out", str(out)]) == 0
    assert main(["load", str(out), "--data-dir", str(tmp_path / "a"),
                 "--defer-indexes", "off"]) == 0
    assert "search value indexes" not in capsys.readouterr().out
    assert main(["load", str(out), "--data-dir", str(tmp_path / "a"),
                 "--defer-indexes", "on"]) == 0
    assert "search value indexes built after the load" in capsys.readouterr().out


def test_a_store_left_without_value_indexes_gets_them_back_when_opened(tmp_path: Path) -> None:
    """A load that stops half-way (killed) leaves the indexes dropped: the next open builds them."""
    import asyncio

    from fhir_server.storage.sqlite.search_tables import DEFERRABLE_INDEXES
    from fhir_server.storage.sqlite.store import SqliteStore

    async def scenario() -> set[str]:
        store = SqliteStore(tmp_path / "fhir.sqlite3")
        await store.open()
        assert await store.holds_fewer_than(1)
        await store.defer_value_indexes()
        after_drop = _value_indexes(tmp_path)
        await store.close()
        reopened = SqliteStore(tmp_path / "fhir.sqlite3")
        await reopened.open()
        await reopened.close()
        return after_drop

    assert asyncio.run(scenario()) == set()
    assert _value_indexes(tmp_path) == set(DEFERRABLE_INDEXES)


@pytest.mark.parametrize(("options", "audience"), [
    (["--port", "9000"], "http://127.0.0.1:9000/fhir"),
    (["--base-url", "https://fhir.example.vn/fhir/"], "https://fhir.example.vn/fhir"),
])
def test_token_takes_the_server_address_and_says_its_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], audience: str
) -> None:
    assert main(["token", "--scope", "system/*.rs", "--data-dir", str(tmp_path),
                 *options]) == 0
    out = capsys.readouterr()
    token = out.out.strip().splitlines()[-1]
    assert audience in out.err
    verifier = TokenVerifier(server_key=load_server_key(tmp_path), audience=audience)
    assert verifier.verify(token).scopes


def test_token_reads_the_port_of_serve_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_SERVER_PORT", "9100")
    assert main(["token", "--scope", "system/*.rs", "--data-dir", str(tmp_path)]) == 0
    assert "http://127.0.0.1:9100/fhir" in capsys.readouterr().err

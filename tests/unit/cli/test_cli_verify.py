"""``fhir-server verify``: files checked as a third party would, stored resources checked
again with their proofs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.cli import main
from tests import builders as b
from tests import pki as k


@pytest.fixture
def trust(tmp_path: Path) -> Path:
    return k.pki().trust_list(tmp_path / "trust")


def _document() -> dict[str, object]:
    return {"resourceType": "Bundle", "id": "doc-1", "type": "collection",
            "entry": [{"fullUrl": "urn:uuid:1", "resource": b.patient(cccd="001090012345")}]}


def test_files_of_every_kind_are_checked(tmp_path: Path, trust: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    signer = k.pki().signer()
    files = {"bundle.json": json.dumps(k.sign_bundle(_document(), signer)).encode(),
             "envelope.xml": k.sign_envelope(b.envelope(b.visit()), signer),
             "paper.pdf": k.sign_pdf(k.blank_pdf(), signer)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in files]
    assert main(["verify", "--trust-list", str(trust), *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["verified"] * 3
    assert "(jws) by CN=Bệnh viện Thử nghiệm" in lines[0]


def test_a_changed_file_fails(tmp_path: Path, trust: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bundle = k.sign_bundle(_document(), k.pki().signer())
    bundle["entry"][0]["resource"]["gender"] = "female"  # type: ignore[index]
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    (tmp_path / "plain.json").write_text(json.dumps(_document()))
    assert main(["verify", "--trust-list", str(trust), str(tmp_path / "b.json")]) == 1
    assert "invalid" in capsys.readouterr().out
    assert main(["verify", "--trust-list", str(trust), str(tmp_path / "plain.json")]) == 1
    assert "no signature" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing.json")]) == 2


def test_stored_resources_are_checked_again(tmp_path: Path, trust: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_SIGNATURE_TRUST_LIST", str(trust))
    monkeypatch.setenv("FHIR_SERVER_SEED_SEARCH_PARAMETERS", "false")
    document = tmp_path / "doc.json"
    signed = k.sign_bundle(_document(), k.pki().signer(kind="ec"))
    document.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": signed, "request": {"method": "PUT", "url": "Bundle/doc-1"}}]}))
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["load", str(document), *data]) == 0
    capsys.readouterr()
    assert main(["verify", "--stored", "Bundle/doc-1", *data]) == 0
    assert capsys.readouterr().out.startswith("Bundle/doc-1: verified (jws)")
    assert main(["verify", "--stored", "Bundle/unknown", *data]) == 2

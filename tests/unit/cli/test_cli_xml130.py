"""``fhir-server generate --format xml130`` and ``fhir-server xml130 import|convert|export``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.bridges.xml130.envelope import decode_envelope
from fhir_server.bridges.xml130.tables import load_standard
from fhir_server.bridges.xml130.transaction import VisitKeys, record_id
from fhir_server.cli import main


def test_generated_envelopes_import_once_convert_and_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, data = tmp_path / "xml", str(tmp_path / "data")
    assert main(["generate", "--patients", "2", "--seed", "4", "--out", str(out),
                 "--format", "xml130"]) == 0
    files = sorted(out.glob("visit-*.xml"))
    assert files
    assert main(["xml130", "import", str(out), "--data-dir", data]) == 0
    assert f"created={len(files)} updated=0 unchanged=0" in capsys.readouterr().out
    assert main(["xml130", "import", str(out), "--data-dir", data]) == 0
    assert f"created=0 updated=0 unchanged={len(files)}" in capsys.readouterr().out
    assert main(["xml130", "convert", str(files[0]), "--out", str(tmp_path / "bundles"),
                 "--data-dir", data]) == 0
    bundle = json.loads(next((tmp_path / "bundles").glob("*.json")).read_text())
    assert bundle["type"] == "transaction"
    standard = load_standard("4750")
    envelope = decode_envelope(files[0].read_bytes(), standard.shapes())
    xml1 = envelope.visits[0].tables("XML1")[0].records[0]
    encounter = record_id(VisitKeys(xml1["MA_CSKCB"], xml1["MA_LK"], b"", ""), "XML1",
                          "encounter", 1)
    target = tmp_path / "back.xml"
    assert main(["xml130", "export", encounter, "--out", str(target), "--data-dir", data]) == 0
    back = decode_envelope(target.read_bytes(), standard.shapes()).visits[0]
    assert back.tables("XML1")[0].records[0]["MA_LK"] == xml1["MA_LK"]


def test_import_of_a_malformed_file_fails(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<nope/>")
    assert main(["xml130", "import", str(bad), "--data-dir", str(tmp_path / "d")]) == 1
    assert "malformed=1" in capsys.readouterr().out

"""``fhir-server export`` writes an export's NDJSON and manifest to a folder showing its
progress, and ``fhir-server import`` loads it into an empty server (references checked, cycles
included), whose own export then holds the same resources: export -> import -> export."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fhir_server.cli import main
from fhir_server.load_order import load_order, resolvable


def _resources(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The folder's resources, without what a store gives each write (version, time)."""
    found = {}
    for path in folder.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            meta = {k: v for k, v in resource.pop("meta", {}).items()
                    if k not in ("versionId", "lastUpdated")}
            if meta:
                resource["meta"] = meta
            key = (resource["resourceType"], resource["id"])
            assert key not in found, f"{key} twice"
            found[key] = resource
    return found


@pytest.fixture
def source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data directory holding the visits of six synthetic patients."""
    generated = tmp_path / "generated"
    assert main(["generate", "--patients", "6", "--seed", "4", "--out", str(generated)]) == 0
    data = tmp_path / "source"
    assert main(["load", str(generated), "--data-dir", str(data)]) == 0
    capsys.readouterr()
    return data


def test_export_import_export_gives_the_same_resources(
    tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with caplog.at_level(logging.INFO, "fhir_server.progress"):
        assert main(["export", str(first), "--data-dir", str(source)]) == 0
    assert "\r" not in capsys.readouterr().err  # off a terminal: lines, not a bar
    shown = [r for r in caplog.records if r.name == "fhir_server.progress"]
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["transactionTime"] and manifest["output"]
    assert sum(item["count"] for item in manifest["output"]) == len(_resources(first))
    total = len(_resources(first))
    assert shown[-1].getMessage().startswith(f"export: done, {total}/{total} resources (100 %)")
    target = tmp_path / "target"  # a new server, referential integrity on (the default)
    assert main(["import", str(first), "--data-dir", str(target)]) == 0
    assert "rejected 0" in capsys.readouterr().out
    assert main(["export", str(second), "--data-dir", str(target)]) == 0
    exported = _resources(first)
    assert {kind for kind, _ in exported} >= {"Patient", "Encounter", "Condition",
                                              "Observation", "Organization"}
    assert _resources(second) == exported


def test_export_takes_the_kick_off_s_parameters(
    tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(["export", str(out), "--data-dir", str(source), "--patients",
                 "--type", "Patient,Encounter", "--elements", "Encounter.status"]) == 0
    found = _resources(out)
    assert {kind for kind, _ in found} == {"Patient", "Encounter"}
    assert all(set(r) <= {"resourceType", "id", "meta", "status", "class"}
               for (kind, _), r in found.items() if kind == "Encounter")
    assert main(["export", str(tmp_path / "bad"), "--data-dir", str(source),
                 "--type", "NoSuchType"]) == 1
    assert "MSG_EXPORT_TYPE" in capsys.readouterr().err


def test_a_folder_loads_what_is_referred_to_first() -> None:
    names = ["Observation-1.ndjson", "Patient-1.ndjson", "Encounter-2.ndjson",
             "Organization-1.ndjson", "Encounter-1.ndjson", "notes.ndjson"]
    ordered = [name for _, name in sorted(load_order(Path(n)) for n in names)]
    assert ordered == ["Organization-1.ndjson", "Patient-1.ndjson", "Encounter-1.ndjson",
                       "Encounter-2.ndjson", "Observation-1.ndjson", "notes.ndjson"]


def test_items_in_a_reference_cycle_are_stored_together_unless_it_leads_nowhere() -> None:
    encounter, condition, lost = ("Encounter", "e"), ("Condition", "c"), ("Observation", "o")
    patient = ("Patient", "p")
    cycle = {encounter: {condition, patient}, condition: {encounter, patient}}
    assert resolvable(cycle, {patient}) == {encounter, condition}
    broken = {**cycle, lost: {("Specimen", "missing")}, ("Observation", "x"): {lost}}
    assert resolvable(broken, {patient}) == {encounter, condition}
    assert resolvable(cycle, set()) == set()

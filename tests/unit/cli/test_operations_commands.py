"""``fhir-server status`` and ``fhir-server facilities load``, run in-process."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from fhir_server.cli import main
from fhir_server.storage.sqlite.schema import SCHEMA_VERSION, NewerSchema, record_schema_version

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "facilities" / "facilities.csv"


def test_status_of_a_store_with_the_facility_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    assert main(["facilities", "load", str(SAMPLE), "--data-dir", str(data)]) == 0
    assert "306 created" in capsys.readouterr().out
    assert main(["facilities", "load", str(SAMPLE), "--data-dir", str(data)]) == 0
    assert "0 created, 306 already registered" in capsys.readouterr().out
    assert main(["status", "--data-dir", str(data)]) == 0
    text = capsys.readouterr().out
    assert f"schema version {SCHEMA_VERSION}" in text
    assert "306 current, 0 deleted" in text and "Organization" in text
    assert "last checkpoint" in text and "clients          0 registered" in text
    assert main(["status", "--data-dir", str(data), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["store"]["current"] == {"Organization": 306}
    assert figures["store"]["database_bytes"] > 0


def test_status_changes_nothing_in_an_empty_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", "--data-dir", str(tmp_path / "none")]) == 0
    text = capsys.readouterr().out
    assert "no store file yet" in text and "missing" in text
    assert not (tmp_path / "none").exists()


def test_a_facility_file_with_a_malformed_row_exits_1_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "f.csv"
    path.write_text("code,name,level,province\n01001,A,3,01\n01002,B,3,99\n")
    assert main(["facilities", "load", str(path), "--data-dir", str(tmp_path / "d")]) == 1
    out = capsys.readouterr().out
    assert "1 created" in out and "malformed: line 3: province '99'" in out


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    conn.execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    assert record_schema_version(conn) == SCHEMA_VERSION  # a new file gets the version
    conn.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    with pytest.raises(NewerSchema, match="upgrade the server"):
        record_schema_version(conn)
    assert os.path.exists(tmp_path / "s.sqlite3")

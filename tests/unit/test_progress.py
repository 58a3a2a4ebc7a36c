"""Progress of long work: a bar on a terminal, plain lines (log records) anywhere else."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_server.progress import track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_whole_lines_with_rate_and_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, "fhir_server.progress"), \
            track("load", 4, "items", interval_s=0, stream=stream) as progress:
        for _ in range(4):
            progress.advance()
            progress.note(rejected=1)
    assert stream.getvalue() == ""  # nothing drawn
    lines = [r for r in caplog.records if r.name == "fhir_server.progress"]
    assert [r.fields["done"] for r in lines] == [1, 2, 3, 4, 4]  # type: ignore[attr-defined]
    assert all("\r" not in r.getMessage() for r in lines)
    assert "load: 2/4 items (50 %)" in lines[1].getMessage()
    assert "s left" in lines[1].getMessage() and "rejected 1" in lines[1].getMessage()
    assert lines[-1].getMessage().startswith("load: done, 4/4 items (100 %)")


def test_lines_come_no_more_often_than_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "fhir_server.progress"), \
            track("reindex", None, "resources", interval_s=3600, stream=io.StringIO()) as p:
        for done in range(1, 1001):
            p.reached(done)
    lines = [r.getMessage() for r in caplog.records if r.name == "fhir_server.progress"]
    assert len(lines) == 1 and lines[0].startswith("reindex: done, 1000 resources")


def test_on_a_terminal_a_bar_shows_rate_and_remaining_time() -> None:
    stream = Terminal()
    with track("generate", 10, "patients", stream=stream) as progress:
        progress.reached(5)
        progress.reached(10)
    drawn = stream.getvalue()
    assert "\r" in drawn and "10/10" in drawn and "patients/s" in drawn and "100%" in drawn


def test_a_command_off_a_terminal_writes_plain_json_lines(tmp_path: Path) -> None:
    env = {**os.environ, "FHIR_SERVER_PROGRESS_INTERVAL_S": "0", "FHIR_SERVER_LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "generate", "--patients", "30", "--out",
         str(tmp_path / "out")], env=env, capture_output=True, timeout=120, check=True)
    assert b"\r" not in result.stderr
    lines = [json.loads(line) for line in result.stderr.decode().splitlines()]
    progress = [line for line in lines if line["logger"] == "fhir_server.progress"]
    assert len(progress) >= 2 and progress[-1]["done"] == progress[-1]["total"] == 30
    assert all(line["task"] == "generate" for line in progress)

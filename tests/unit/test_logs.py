"""The log set-up: both formats, and uvicorn's own lines in ours."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from fhir_server.logs import JsonFormatter, TextFormatter, configure_logging


def _record(message: str = "x", **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("fhir_server.access", logging.INFO, __file__, 1, message, (), None)
    if fields:
        record.fields = fields
    return record


def test_text_time_stamps_match_the_standard_formatter() -> None:
    ours = TextFormatter()
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = _record()
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)


def test_text_lines_are_the_message_alone() -> None:
    line = TextFormatter().format(_record("GET /fhir 200", status=200, client_id=None))
    assert line.endswith(" INFO fhir_server.access GET /fhir 200")


def test_json_line_is_one_object_with_the_fields() -> None:
    line = JsonFormatter().format(_record("GET /fhir 200", status=200, request_id="r1"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "info" and parsed["logger"] == "fhir_server.access"
    assert parsed["message"] == "GET /fhir 200"
    assert parsed["status"] == 200 and parsed["request_id"] == "r1"
    assert parsed["time"][10] == "T" and parsed["time"][-6] in "+-"


def test_json_line_holds_the_stack_trace_of_an_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    parsed = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in parsed["exception"]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json or text"):
        configure_logging("info", "xml")


def test_uvicorn_lines_come_out_in_the_json_format() -> None:
    code = ("import logging, logging.config\n"
            "from fhir_server.logs import uvicorn_log_config\n"
            "logging.config.dictConfig(uvicorn_log_config('info', 'json'))\n"
            "logging.getLogger('uvicorn.error').info('Started server process [%d]', 42)\n"
            "logging.getLogger('fhir_server').warning('mine')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("uvicorn.error", "Started server process [42]"), ("fhir_server", "mine")]

"""A real ``serve --workers 2``: /metrics sums the figures of both workers, and every line the
processes write (uvicorn's included) is one JSON object; access lines name the request and the
caller without its token or any resource content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token
from tests.builders import patient
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow
FAMILY = "Zyxwvutsr"  # health data: must appear in no log line


def _lines(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def _count(text: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fhir_requests_total" and sample.labels == labels:
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the server, make requests until both workers answered some; stop it."""
    root = tmp_path_factory.mktemp("observability")
    log_path = root / "server.log"
    server = ServerProcess(root / "data", workers=2, log_path=log_path)
    server.start()
    audience = f"{server.base}/fhir"
    token = mint_access_token(load_server_key(server.data_dir), issuer=audience,
                              audience=audience, subject="emr", scope="system/*.cruds",
                              client_id="hospital-19101")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    try:
        created = httpx.post(f"{server.base}/fhir/Patient", headers=headers,
                             json=patient(family=FAMILY))
        assert created.status_code == 201
        reads, request_ids = 0, []
        while reads < 60:  # new connections: the kernel spreads them over the workers
            response = httpx.get(f"{server.base}/fhir/Patient/nobody", headers=headers)
            assert response.status_code == 404
            reads += 1
            request_ids.append(response.headers["x-request-id"])
            pids = {line.get("pid") for line in _lines(log_path)
                    if line.get("interaction") == "read"}
            if reads >= 6 and len(pids) == 2:
                break
        scrapes = [httpx.get(f"{server.base}/metrics").text for _ in range(4)]
    finally:
        server.stop()
    yield {"log": _lines(log_path), "reads": reads, "request_ids": request_ids,
           "scrapes": scrapes, "token": token}


def test_metrics_count_the_requests_of_both_workers(served: dict[str, Any]) -> None:
    readers = {line["pid"] for line in served["log"] if line.get("interaction") == "read"}
    assert len(readers) == 2
    for text in served["scrapes"]:  # whichever worker answers the scrape
        assert _count(text, interaction="read", resource_type="Patient",
                      status="404") == served["reads"]
        assert _count(text, interaction="create", resource_type="Patient", status="201") == 1


def test_every_line_is_json_and_access_lines_name_request_and_caller(
    served: dict[str, Any],
) -> None:
    lines = served["log"]
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    assert {line["level"] for line in lines} >= {"info"}
    access = {line["request_id"]: line for line in lines
              if line["logger"] == "fhir_server.access"}
    for request_id in served["request_ids"]:
        line = access[request_id]
        assert line["method"] == "GET" and line["path"] == "/fhir/Patient/nobody"
        assert line["status"] == 404 and line["duration_ms"] >= 0
        assert line["interaction"] == "read" and line["resource_type"] == "Patient"
        assert line["client_id"] == "hospital-19101"
    everything = json.dumps(lines)
    assert served["token"] not in everything
    assert served["token"].split(".")[2] not in everything  # not even the signature
    assert FAMILY not in everything

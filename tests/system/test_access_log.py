"""The access log of a real server with several worker processes: one JSON line per request."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.system.server_process import ServerProcess


def test_every_worker_writes_one_access_line_per_request(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = ServerProcess(tmp_path / "data", workers=2, log_path=log_path)
    server.start()
    try:
        ids = []
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            response = httpx.get(f"{server.base}/fhir/Patient/nobody", headers=server.headers())
            assert response.status_code == 404
            ids.append(response.headers["x-request-id"])
    finally:
        server.stop()
    lines = [json.loads(line.split(" fhir_server.access ", 1)[1])
             for line in log_path.read_text().splitlines() if " fhir_server.access " in line]
    logged = {line["request_id"]: line for line in lines}
    for request_id in ids:
        line = logged[request_id]
        assert line["method"] == "GET" and line["path"] == "/fhir/Patient/nobody"
        assert line["status"] == 404 and line["duration_ms"] >= 0

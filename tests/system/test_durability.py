"""System tests with real server processes: kill -9 mid-write, several workers on one file."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.builders import patient
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}


def _writer(
    base: str, headers: dict[str, str], acknowledged: list[str], stop: threading.Event
) -> None:
    with httpx.Client(base_url=base, timeout=5, headers=headers) as http:
        number = 0
        while not stop.is_set() and number < 100_000:
            number += 1
            try:
                response = http.post("/fhir/Patient", json=patient(cccd=f"{number:012d}"))
            except httpx.HTTPError:
                return
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", workers=2)
    server.start()
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_writer, args=(server.base, server.headers(), acknowledged, stop))
        for _ in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        server.kill()
    assert len(acknowledged) >= 50
    server.start()
    try:
        with httpx.Client(base_url=server.base, timeout=5, headers=server.headers()) as http:
            missing = [i for i in acknowledged if http.get(f"/fhir/Patient/{i}").status_code != 200]
    finally:
        server.stop()
    assert missing == []


def test_concurrent_if_match_updates_across_workers_have_one_winner(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", workers=2)
    server.start()
    try:
        with httpx.Client(base_url=server.base, timeout=10, headers=server.headers()) as http:
            for round_number in range(10):
                body = http.post(
                    "/fhir/Patient", json=patient(cccd=f"{round_number:012d}"), headers=FHIR
                ).json()

                def put(gender: str, body: dict[str, object] = body) -> int:
                    with httpx.Client(
                        base_url=server.base, timeout=10, headers=server.headers()
                    ) as own:
                        return own.put(
                            f"/fhir/Patient/{body['id']}",
                            json={**body, "gender": gender},
                            headers={"If-Match": 'W/"1"'},
                        ).status_code

                with ThreadPoolExecutor(max_workers=2) as pool:
                    statuses = sorted(pool.map(put, ["female", "other"]))
                assert statuses == [200, 412]
                final = http.get(f"/fhir/Patient/{body['id']}").json()
                assert final["meta"]["versionId"] == "2"
    finally:
        server.stop()

"""A server killed with ``kill -9`` in the middle of a bulk export resumes it when it starts
again (its process is gone, so the job is claimed at once), and the export is whole."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.builders import observation, patient
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow
SLOW = {"FHIR_SERVER_EXPORT_PAGE_SIZE": "1", "FHIR_SERVER_EXPORT_CPU_SHARE": "0.02",
        "FHIR_SERVER_EXPORT_CHECKPOINT_S": "0.05"}


def _store(http: httpx.Client, people: int) -> set[str]:
    entries = []
    for n in range(people):
        person = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        entries.append({"fullUrl": person, "resource": patient(cccd=f"0010900{n:05d}"),
                        "request": {"method": "POST", "url": "Patient"}})
        entries += [{"resource": observation(person, value=float(k)),
                     "request": {"method": "POST", "url": "Observation"}} for k in range(3)]
    answer = http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                      "entry": entries})
    assert answer.status_code == 200, answer.text
    return {e["response"]["location"].split("/_history")[0] for e in answer.json()["entry"]}


def _progress(http: httpx.Client, location: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        status = http.get(location)
        assert status.status_code == 202, status.text
        # "N% (written of about total resources)", once the export has counted
        found = re.search(r"\(([\d,]+) of", status.headers["x-progress"])
        written = int(found[1].replace(",", "")) if found else 0
        if written >= at_least:
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_export_resumes_after_the_server_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env=SLOW)
    server.start()
    try:
        with httpx.Client(base_url=server.base, timeout=10, headers=server.headers()) as http:
            stored = _store(http, 20)
            started = http.get("/fhir/$export", params={"_type": "Patient,Observation"},
                               headers={"Prefer": "respond-async"})
            assert started.status_code == 202, started.text
            location = started.headers["content-location"].removeprefix(server.base)
            _progress(http, location, 10)
        server.kill()
        server.env = {}
        server.start()
        with httpx.Client(base_url=server.base, timeout=10, headers=server.headers()) as http:
            deadline = time.monotonic() + 60
            while (done := http.get(location)).status_code == 202:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert done.status_code == 200, done.text
            keys = []
            for item in done.json()["output"]:
                text = http.get(item["url"].removeprefix(server.base)).content
                keys += [f"{r['resourceType']}/{r['id']}"
                         for r in map(orjson.loads, text.splitlines())]
    finally:
        server.kill()
    assert len(keys) == len(set(keys)) == len(stored)
    assert set(keys) == stored

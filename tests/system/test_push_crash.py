"""Crash safety of the visit push: kill -9 during a stream of transaction Bundles."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.storage.sqlite.bodies import json_bytes
from fhir_server.synthetic import generate
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}
RECORD = "https://fhir.sskdt.vn/sid/record/"


def _visit_key(bundle: dict[str, Any]) -> str:
    encounter = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    return str(encounter["resource"]["identifier"][0]["value"])


def _stored_records(db: Path) -> Counter[str]:
    """Count stored resources per visit, from their record identifiers."""
    conn = sqlite3.connect(db)
    counts: Counter[str] = Counter()
    rows = conn.execute(
        "SELECT v.content FROM resources r JOIN versions v ON v.rid = r.rid "
        "AND v.version = r.version WHERE r.deleted = 0"
    )
    for (content,) in rows:
        for identifier in orjson.loads(json_bytes(content)).get("identifier", []):
            system = identifier.get("system", "")
            if system.startswith(RECORD) or "/sid/ma-lk/" in system:
                counts[identifier["value"].split("/")[0]] += 1
    conn.close()
    return counts


def _push(
    base: str,
    headers: dict[str, str],
    bundles: list[bytes],
    acknowledged: list[int],
    stop: threading.Event,
    start: int,
    step: int,
) -> None:
    with httpx.Client(base_url=base, timeout=10, headers=headers) as http:
        for number in range(start, len(bundles), step):
            if stop.is_set():
                return
            try:
                response = http.post("/fhir", content=bundles[number])
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acknowledged.append(number)


def test_kill_9_during_pushes_leaves_every_bundle_whole_or_absent(tmp_path: Path) -> None:
    generate(40, 11, tmp_path / "gen")
    lines = (tmp_path / "gen" / "visits-00001.ndjson").read_bytes().splitlines()
    parsed = [orjson.loads(line) for line in lines]
    expected = {_visit_key(b): len(b["entry"]) - 2 for b in parsed}  # minus Patient, Org
    server = ServerProcess(tmp_path / "data", workers=2)
    server.start()
    acknowledged: list[int] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_push, args=(server.base, server.headers(), lines, acknowledged, stop, i, 4)
        )
        for i in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < len(lines) // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        server.kill()
    assert acknowledged, "no bundle was acknowledged before the kill"
    stored = _stored_records(tmp_path / "data" / "fhir.sqlite3")
    for number in acknowledged:
        key = _visit_key(parsed[number])
        assert stored[key] == expected[key], f"acknowledged visit {key} is incomplete"
    partial = {k: n for k, n in stored.items() if n != expected[k]}
    assert partial == {}

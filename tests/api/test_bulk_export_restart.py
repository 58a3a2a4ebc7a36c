"""Exports survive a restart: a server that stops in the middle of one resumes it at its next
start from the last checkpoint (the same snapshot, nothing repeated or missed), and an export
that cannot go on is marked failed with an OperationOutcome, never silently lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_server.jobs.store import JobStore
from fhir_server.main import create_app
from fhir_server.settings import Settings
from tests.api.bulk_export import files, finished, kick_off, local
from tests.api.two_patients import populate
from tests.conftest import token_for


@asynccontextmanager
async def _served(settings: Settings, headers: dict[str, str]
                  ) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of ``settings``, run from its start to its stop."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=headers) as http:
        yield http


async def _job_with_checkpoint(data_dir: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    jobs = JobStore(data_dir / "jobs.sqlite3")
    jobs.open()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = jobs.conn.execute("SELECT id FROM jobs").fetchall()
            job = jobs.get(rows[0][0]) if rows else None
            if job is not None and job.checkpoint and job.checkpoint["at"]["written"] >= 5:
                return {"id": job.id, "checkpoint": job.checkpoint}
            assert time.monotonic() < deadline, f"no checkpoint: {job}"
            await asyncio.sleep(0.05)
    finally:
        jobs.close()


async def test_an_export_stopped_midway_resumes_at_the_next_start(settings: Settings) -> None:
    slow = settings.model_copy(update={"export_page_size": 1, "export_cpu_share": 0.01,
                                       "export_checkpoint_s": 0.05})
    headers = {"Authorization": f"Bearer {token_for(slow, 'system/*.cruds')}"}
    async with _served(slow, headers) as http:
        worlds = [await populate(http, slow) for _ in range(4)]
        expected = {f"Patient/{p.patient}" for w in worlds for p in (w.a, w.b)}
        started = await kick_off(http, params={"_type": "Patient,Observation"})
        location = local(started.headers["content-location"])
        job = await _job_with_checkpoint(slow.data_dir)
        assert (await http.get(location)).status_code == 202
    # The server stopped in the middle; it starts again (at full pace).
    async with _served(settings, headers) as http:
        done = await finished(http, location)
        assert done.status_code == 200, done.text
        found = await files(http, done.json())
    keys = [f"{r['resourceType']}/{r['id']}" for items in found.values() for r in items]
    assert len(keys) == len(set(keys))
    assert {k for k in keys if k.startswith("Patient/")} == expected
    assert len([k for k in keys if k.startswith("Observation/")]) == 4 * len(worlds)
    assert job["checkpoint"]["files"], "the stopped run had written files"


async def test_an_export_that_cannot_go_on_is_marked_failed_with_an_operation_outcome(
    client: httpx.AsyncClient, settings: Settings,
) -> None:
    await populate(client, settings)
    exports = Path(settings.data_dir) / "exports"
    exports.parent.mkdir(parents=True, exist_ok=True)
    exports.write_bytes(b"not a folder")  # nowhere to write the files
    started = await kick_off(client, params={"_type": "Patient"})
    failed = await finished(client, started.headers["content-location"])
    assert failed.status_code == 500
    outcome = failed.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "MSG_JOB_FAILED"
    assert orjson.loads(failed.content) == outcome

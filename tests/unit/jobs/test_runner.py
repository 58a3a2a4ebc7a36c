"""The job runner: it runs claimed jobs, resumes a stopped process's jobs from their last
checkpoint, stops a cancelled job within a step, and records failures; and the pace keeps a
job's share of the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.jobs.model import Job, JobState
from fhir_server.jobs.pace import Pace
from fhir_server.jobs.runner import JobControl, JobFailed, JobRunner, is_dead, worker_name
from fhir_server.jobs.store import JobStore
from fhir_server.security.policy import AccessRequest


class Counting:
    """A kind that counts to ``request["to"]``, one step at a time, checkpointing each."""

    name = "count"
    share = 1.0

    def __init__(self, step_s: float = 0.0) -> None:
        self.step_s = step_s
        self.started: list[int] = []
        self.discarded: list[str] = []

    async def run(self, job: Job, control: JobControl) -> dict[str, Any]:
        done = int((job.checkpoint or {}).get("done", 0))
        self.started.append(done)
        if job.request.get("fail"):
            raise JobFailed({"resourceType": "OperationOutcome", "issue": []})
        while done < int(job.request["to"]):
            await asyncio.sleep(self.step_s)
            done += 1
            await control.checkpoint({"done": done}, f"{done}")
        return {"done": done}

    async def discard(self, job: Job) -> None:
        self.discarded.append(job.id)

    def question(self, job: Job) -> AccessRequest:
        return AccessRequest("operation", None, operation="export")

    def expiry_s(self) -> float:
        return 60.0


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.open()
    yield store
    store.close()


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _state(jobs: JobStore, job_id: str) -> JobState | None:
    job = jobs.get(job_id)
    return None if job is None else job.state


async def test_a_runner_runs_a_created_job_to_completion(jobs: JobStore) -> None:
    kind = Counting()
    runner = JobRunner(jobs, {"count": kind}, poll_s=0.05)
    runner.start()
    try:
        job = jobs.create("count", {}, "a", {"to": 3})
        runner.wake()
        await _until(lambda: _state(jobs, job.id) is JobState.COMPLETED)
        done = jobs.get(job.id)
        assert done is not None and done.result == {"done": 3} and done.progress == "3"
    finally:
        await runner.stop()


async def test_a_stopped_runner_s_job_resumes_from_its_checkpoint(jobs: JobStore) -> None:
    kind = Counting(step_s=0.02)
    first = JobRunner(jobs, {"count": kind}, poll_s=0.05)
    first.start()
    job = jobs.create("count", {}, "a", {"to": 30})
    first.wake()
    await _until(lambda: int((jobs.get(job.id) or job).progress or 0) >= 5)
    await first.stop()
    assert _state(jobs, job.id) is JobState.RUNNING
    second = JobRunner(jobs, {"count": kind}, poll_s=0.05)
    second.start()
    try:
        await _until(lambda: _state(jobs, job.id) is JobState.COMPLETED)
    finally:
        await second.stop()
    assert kind.started[0] == 0 and kind.started[1] >= 5
    done = jobs.get(job.id)
    assert done is not None and done.result == {"done": 30}


async def test_a_cancelled_job_stops_and_its_output_is_discarded(jobs: JobStore) -> None:
    kind = Counting(step_s=0.05)
    runner = JobRunner(jobs, {"count": kind}, poll_s=0.05)
    runner.start()
    try:
        job = jobs.create("count", {}, "a", {"to": 1000})
        runner.wake()
        await _until(lambda: job.id in runner.running)
        assert await runner.cancel(job.id) is not None
        assert job.id not in runner.running and kind.discarded == [job.id]
        assert _state(jobs, job.id) is JobState.CANCELLED
        assert await runner.cancel(job.id) is None
    finally:
        await runner.stop()


async def test_a_job_cancelled_by_another_process_stops_at_its_next_checkpoint(
    jobs: JobStore,
) -> None:
    kind = Counting(step_s=0.02)
    runner = JobRunner(jobs, {"count": kind}, poll_s=0.05)
    runner.start()
    try:
        job = jobs.create("count", {}, "a", {"to": 1000})
        runner.wake()
        await _until(lambda: job.id in runner.running)
        jobs.cancel(job.id)  # as another worker's DELETE would
        await _until(lambda: job.id not in runner.running, timeout=1.0)
        assert _state(jobs, job.id) is JobState.CANCELLED
    finally:
        await runner.stop()


async def test_a_failing_job_is_recorded_failed_with_its_outcome(jobs: JobStore) -> None:
    runner = JobRunner(jobs, {"count": Counting()}, poll_s=0.05)
    runner.start()
    try:
        job = jobs.create("count", {}, "a", {"to": 1, "fail": True})
        runner.wake()
        await _until(lambda: _state(jobs, job.id) is JobState.FAILED)
        failed = jobs.get(job.id)
        assert failed is not None and failed.error == {"resourceType": "OperationOutcome",
                                                       "issue": []}
        assert failed.expires is not None and failed.expires > time.time()
    finally:
        await runner.stop()


async def test_expired_jobs_are_discarded_and_forgotten(jobs: JobStore) -> None:
    kind = Counting()
    job = jobs.create("count", {}, "a", {"to": 1})
    jobs.cancel(job.id)
    await asyncio.sleep(0.01)
    runner = JobRunner(jobs, {"count": kind}, poll_s=0.05, sweep_s=0.0)
    runner.start()
    try:
        await _until(lambda: jobs.get(job.id) is None)
        assert kind.discarded == [job.id]
    finally:
        await runner.stop()


def test_a_runner_of_this_process_is_dead_once_stopped_and_others_by_their_process() -> None:
    name = worker_name()
    assert is_dead(name)  # never started
    host, pid, started, nonce = name.split(":")
    assert is_dead(f"{host}:999999999:{started}:{nonce}")
    assert not is_dead(f"another-host:{pid}:{started}:{nonce}")
    assert not is_dead("")


async def test_the_pace_keeps_a_job_s_share_of_the_time() -> None:
    pace = Pace(0.25)
    started = time.monotonic()
    for _ in range(10):
        busy_until = time.monotonic() + 0.01
        while time.monotonic() < busy_until:
            pass
        await pace.pause()
    elapsed = time.monotonic() - started
    assert pace.slept == pytest.approx(3 * pace.worked)  # work / (work + sleep) = 1/4
    assert elapsed >= pace.worked + pace.slept
    with pytest.raises(ValueError):
        Pace(0)

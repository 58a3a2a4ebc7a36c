"""The job runner of a server process: claims jobs from the job store and runs them as tasks.

Every worker process of a server has one (started in the application's lifespan). It looks
for work every ``poll_s`` seconds, and at once when a job is created in its own process
(:meth:`JobRunner.wake`). A job is claimed under a lease (``JobStore.claim``) that the
running job renews at each checkpoint; a job whose worker process is gone (its process id no
longer runs, or its lease ran out) is claimed again by the next runner and resumed from its
last checkpoint. A process that stops gives its leases up, so the next start resumes its
jobs at once. Finished jobs are removed (with what they produced) once they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from fhir_server.errors import FhirError, Issue
from fhir_server.jobs.model import Job, JobState
from fhir_server.jobs.pace import Pace
from fhir_server.jobs.store import JobStore
from fhir_server.metrics.catalogue import JOBS_RUNNING, job_ended
from fhir_server.outcomes import operation_outcome
from fhir_server.security.policy import AccessRequest

__all__ = ["JobControl", "JobFailed", "JobKind", "JobRunner", "JobStopped"]

log = logging.getLogger("fhir_server.jobs")
_HOST = socket.gethostname()
#: The runners alive in this process (their worker names), for telling a stopped runner's
#: jobs from a running one's when both are in one process (tests start apps in-process).
_LIVE: set[str] = set()


class JobStopped(Exception):
    """The job is no longer this worker's to run: it was cancelled or taken over."""


class JobFailed(Exception):
    """The job cannot complete; ``outcome`` (an OperationOutcome) says why."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class JobControl:
    """What a running job is given: its checkpoints (which renew its lease and tell it when
    to stop) and its pace."""

    def __init__(self, store: JobStore, job: Job, worker: str, lease_s: float,
                 pace: Pace) -> None:
        self.store = store
        self.job = job
        self.worker = worker
        self.lease_s = lease_s
        self.pace = pace
        self._checked = time.monotonic()

    async def checkpoint(self, state: dict[str, Any] | None, progress: str) -> None:
        """Record where the job is (what a resumed run starts from); raise ``JobStopped``
        when it was cancelled or another worker took it over."""
        if not self.store.renew(self.job.id, self.worker, self.lease_s, progress=progress,
                                checkpoint=state):
            raise JobStopped(self.job.id)
        self._checked = time.monotonic()

    async def check(self, every_s: float = 0.5) -> None:
        """Raise ``JobStopped`` if the job was cancelled (asked at most every ``every_s``)."""
        if time.monotonic() - self._checked >= every_s:
            if not self.store.renew(self.job.id, self.worker, self.lease_s):
                raise JobStopped(self.job.id)
            self._checked = time.monotonic()


class JobKind(Protocol):
    """A kind of job: how to run it (and resume it from ``job.checkpoint``), and how to
    remove what it produced."""

    name: str
    #: The pace of its runs in a server (share of the event loop's time).
    share: float

    async def run(self, job: Job, control: JobControl) -> dict[str, Any]:
        """Do (or finish) the work; return the result. Raise ``JobFailed`` to fail."""
        ...

    async def discard(self, job: Job) -> None:
        """Remove what the job produced (cancelled or expired)."""
        ...

    def question(self, job: Job) -> AccessRequest:
        """What the access policy is asked about requests for the job (its status, its
        results): what started it."""
        ...

    def expiry_s(self) -> float:
        """How long a finished job and what it produced are kept."""
        ...


def _start_time(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def worker_name() -> str:
    """A name for a runner: host, process id and start time, and a nonce of its own."""
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_start_time(pid)}:{uuid.uuid4().hex[:8]}"


def is_dead(worker: str) -> bool:
    """Whether the runner named ``worker`` is known to be gone: a runner of this process
    that stopped, or a process of this host that no longer runs (one on another host is
    judged by its lease alone)."""
    host, _, rest = worker.partition(":")
    pid, _, rest = rest.partition(":")
    started = rest.rpartition(":")[0]
    if not worker or host != _HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return worker not in _LIVE
    return _start_time(int(pid)) != started


class JobRunner:
    """Claims and runs the jobs of ``kinds`` (by name) from ``store``; see the module."""

    def __init__(self, store: JobStore, kinds: Mapping[str, JobKind], *, poll_s: float = 1.0,
                 lease_s: float = 30.0, sweep_s: float = 60.0, slots: int = 1) -> None:
        self.store = store
        self.kinds = dict(kinds)
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.sweep_s = sweep_s
        self.slots = slots
        self.worker = worker_name()
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._swept = 0.0

    def start(self) -> None:
        """Start looking for work."""
        _LIVE.add(self.worker)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop: running jobs are interrupted and their leases given up (they resume at the
        next start, here or in another process)."""
        _LIVE.discard(self.worker)
        tasks = [t for t in (self._loop_task, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None

    def wake(self) -> None:
        """Look for work now (a job was just created)."""
        self._wake.set()

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a job (its run stops within a step) and remove what it produced; return
        the job as it was, None if unknown or already cancelled."""
        job = self.store.cancel(job_id)
        if job is None:
            return None
        task = self.running.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        kind = self.kinds.get(job.kind)
        if kind is not None:
            await kind.discard(job)
        if not job.state.finished:  # a finished one was counted when it ended
            job_ended(job.kind, JobState.CANCELLED.value)
        return job

    async def _loop(self) -> None:
        while True:
            try:
                self._claim()
                self._sweep_if_due()
            except Exception:  # a bad row or a locked file must not end the runner
                log.exception("the job runner's step failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    def _claim(self) -> None:
        while len(self.running) < self.slots:
            job = self.store.claim(self.worker, list(self.kinds), self.lease_s, is_dead)
            if job is None:
                return
            task = asyncio.get_running_loop().create_task(self._run(job))
            self.running[job.id] = task
            task.add_done_callback(self._forget(job.id))

    def _forget(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self.running.pop(job_id, None)

        return forget

    def _sweep_if_due(self) -> None:
        if time.monotonic() - self._swept < self.sweep_s:
            return
        self._swept = time.monotonic()
        for job in self.store.expired():
            asyncio.get_running_loop().create_task(self._remove(job))

    async def _remove(self, job: Job) -> None:
        kind = self.kinds.get(job.kind)
        if kind is not None:
            await kind.discard(job)
        self.store.delete(job.id)

    async def _run(self, job: Job) -> None:
        running = JOBS_RUNNING.labels(job.kind)
        running.inc()
        try:
            state = await self._outcome(job)
        finally:
            running.dec()
        if state is not None:
            job_ended(job.kind, state.value)

    async def _outcome(self, job: Job) -> JobState | None:
        """Run ``job`` and record how it ended; return that state (None: stopped here)."""
        kind = self.kinds[job.kind]
        control = JobControl(self.store, job, self.worker, self.lease_s, Pace(kind.share))
        try:
            result = await kind.run(job, control)
            self.store.finish(job.id, self.worker, JobState.COMPLETED, _expiry(kind),
                              result=result)
            return JobState.COMPLETED
        except JobStopped:
            log.info("job %s stopped: cancelled or taken over", job.id)
            return None
        except asyncio.CancelledError:
            self.store.release(job.id, self.worker)
            raise
        except JobFailed as failure:
            error = failure.outcome
        except FhirError as exc:
            error = operation_outcome(exc.issues)
        except Exception:
            log.exception("job %s failed", job.id)
            error = _internal_error()
        self.store.finish(job.id, self.worker, JobState.FAILED, _expiry(kind), error=error)
        return JobState.FAILED


def _expiry(kind: JobKind) -> float:
    return time.time() + kind.expiry_s()


def _internal_error() -> dict[str, Any]:
    return operation_outcome([Issue("fatal", "exception", "MSG_JOB_FAILED",
                                    "The job failed on an internal error; it has been logged")])

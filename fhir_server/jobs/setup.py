"""Start-up of the background jobs of a server process: the job store of the data
directory and a runner with every kind of job the server has (bulk export)."""

from __future__ import annotations

from pathlib import Path

from fhir_server.interactions.context import Services
from fhir_server.jobs.export.job import ExportKind
from fhir_server.jobs.runner import JobRunner
from fhir_server.jobs.store import JobStore
from fhir_server.settings import Settings

__all__ = ["jobs_database_path", "start_jobs", "stop_jobs"]


def jobs_database_path(settings: Settings) -> Path:
    """The job store's file: ``jobs.sqlite3`` in the data directory."""
    return settings.data_dir / "jobs.sqlite3"


def start_jobs(services: Services) -> JobRunner:
    """Open the job store and start this process's runner (it resumes what was running)."""
    settings = services.settings
    store = JobStore(jobs_database_path(settings))
    store.open()
    runner = JobRunner(store, {"export": ExportKind(services)}, poll_s=settings.jobs_poll_s,
                       lease_s=settings.jobs_lease_s)
    runner.start()
    return runner


async def stop_jobs(runner: JobRunner) -> None:
    """Stop the runner (running jobs give their leases up) and close the job store."""
    await runner.stop()
    runner.store.close()

"""What the status and file requests of an export answer with: the job they name, the
output manifest of a completed export (https://hl7.org/fhir/uv/bulkdata/export.html
#response---output-manifest), and the file a manifest lists."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fhir_server.errors import NotFound
from fhir_server.jobs.model import Job, JobState
from fhir_server.jobs.store import JobStore

__all__ = ["EXPIRES_KEY", "manifest", "output_file", "retry_after", "status_url", "visible_job"]

#: The manifest states when its files are removed under this key of its ``extension``
#: object (the IG reserves ``extension`` for a server's own fields).
EXPIRES_KEY = "expires"


def status_url(base_url: str, job_id: str) -> str:
    """The polling location of a job (the kick-off's ``Content-Location``)."""
    return f"{base_url}/$export-status/{job_id}"


def _file_url(base_url: str, job_id: str, name: str) -> str:
    return f"{base_url}/$export-file/{job_id}/{name}"


def visible_job(store: JobStore, job_id: str) -> Job:
    """The export job ``job_id``; raise the ``NotFound`` of an unknown job for one that
    never was, was cancelled (the IG: 404 after a DELETE) or expired."""
    job = store.get(job_id)
    gone = job is None or job.kind != "export" or job.state is JobState.CANCELLED or (
        job.expires is not None and job.expires < time.time())
    if gone or job is None:
        raise NotFound("No such export", message_id="MSG_JOB_UNKNOWN")
    return job


def retry_after(job: Job) -> int:
    """Seconds a client should wait before polling again: a second early on, longer as
    the export goes on (at most 30)."""
    return max(1, min(30, int((time.time() - job.created) / 10)))


def manifest(base_url: str, job: Job, expires: str) -> dict[str, Any]:
    """The output manifest of a completed export (``expires``: when its files go)."""
    result = job.result or {}
    listed = {
        "transactionTime": result.get("transactionTime"),
        "request": result.get("request"),
        "requiresAccessToken": True,
        "output": [{**({"type": item["type"]} if "outputOrganizedBy" not in result else {}),
                    "url": _file_url(base_url, job.id, item["name"]), "count": item["count"]}
                   for item in result.get("output", [])],
        "error": [{"type": "OperationOutcome", "url": _file_url(base_url, job.id, item["name"]),
                   "count": item["count"]} for item in result.get("error", [])],
        "extension": {EXPIRES_KEY: expires},
    }
    if "outputOrganizedBy" in result:
        listed["outputOrganizedBy"] = result["outputOrganizedBy"]
    return listed


def output_file(folder: Path, job: Job, name: str) -> Path:
    """The file ``name`` of a completed export; raise ``NotFound`` for a name its manifest
    does not list (or a file gone from disk)."""
    result = job.result or {}
    listed = {item["name"] for item in [*result.get("output", []), *result.get("error", [])]}
    path = folder / name
    if job.state is not JobState.COMPLETED or name not in listed or not path.is_file():
        raise NotFound(f"The export has no file {name[:80]}", message_id="MSG_JOB_FILE_UNKNOWN")
    return path

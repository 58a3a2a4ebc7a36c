"""``fhir-server export``: a bulk export into a folder, as the server itself, showing its
progress (``progress.track``: a bar on a terminal, log lines elsewhere); and
``fhir-server import``, which loads such a folder back (``fhir-server load``).

The export is the server's own job (``jobs.export``, kind ``export-cli`` so that no server
process takes it): the same kick-off checks, snapshot, searches and files, run at full pace
by a runner in this process; the folder gets the NDJSON files and ``manifest.json``. The
caller is the server (``security.caller.SERVER``): everything is exported.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from fhir_server.jobs.export.job import ExportKind
from fhir_server.jobs.export.request import ExportRequest
from fhir_server.jobs.model import Job, JobState, caller_record, owner_key
from fhir_server.jobs.runner import JobRunner
from fhir_server.jobs.setup import jobs_database_path
from fhir_server.jobs.store import JobStore
from fhir_server.loader import open_services
from fhir_server.operations.export import export_request
from fhir_server.progress import Progress
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import AccessRequest, authorize
from fhir_server.settings import Settings

__all__ = ["export_to_folder"]

_KIND = "export-cli"


class _Shown:
    """The job's observer (resources written, of about how many) told to a ``Progress``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.total: int | None = None

    def __call__(self, written: int, total: int) -> None:
        if total != self.total:
            self.total = total
            self.progress.set_total(max(total, written))
        self.progress.reached(written)


def _values(args: argparse.Namespace) -> dict[str, list[str]]:
    named = {"_type": args.type, "_since": args.since, "_until": args.until,
             "_elements": args.elements}
    values = {name: [value] for name, value in named.items() if value}
    if args.type_filter:
        values["_typeFilter"] = list(args.type_filter)
    return values


async def _wait(jobs: JobStore, job_id: str) -> Job:
    while True:
        job = jobs.get(job_id)
        assert job is not None
        if job.state.finished:
            return job
        await asyncio.sleep(0.1)


async def export_to_folder(settings: Settings, args: argparse.Namespace,
                           progress: Progress | None = None) -> Job:
    """Run an export into ``args.out`` and return the finished job; ``progress`` is told
    the resources written (of about how many) after every page."""
    out = Path(args.out).resolve()
    level = "group" if args.group else "patient" if args.patients else "system"
    async with open_services(settings) as services:
        request = await export_request(
            services, authorize(SERVER, _question(level, args.group), services.registry),
            _values(args), level, group=args.group, url=f"fhir-server export {out}")
        jobs = JobStore(jobs_database_path(settings))
        jobs.open()
        kind = ExportKind(services, name=_KIND, share=1.0, folder=lambda _: out,
                          observer=_Shown(progress) if progress is not None else None)
        runner = JobRunner(jobs, {_KIND: kind}, poll_s=0.1)
        runner.start()
        try:
            job = jobs.create(_KIND, caller_record(SERVER), owner_key(SERVER),
                              request.to_json())
            runner.wake()
            done = await _wait(jobs, job.id)
        finally:
            await runner.stop()
            jobs.close()
    if done.state is JobState.COMPLETED:
        (out / "manifest.json").write_bytes(orjson.dumps(_manifest(out, done.result or {}),
                                                         option=orjson.OPT_INDENT_2))
    return done


def _question(level: str, group: str | None) -> AccessRequest:
    return ExportRequest(level=level, types=(), group=group).question()


def _manifest(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a folder: the IG's fields, the files as ``file:`` URLs."""
    def listed(key: str) -> list[dict[str, Any]]:
        return [{"type": item["type"], "url": (out / item["name"]).as_uri(),
                 "count": item["count"]} for item in result.get(key, [])]

    return {"transactionTime": result.get("transactionTime"), "request": result.get("request"),
            "requiresAccessToken": False, "output": listed("output"),
            "error": listed("error")}

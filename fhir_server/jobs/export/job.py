"""The bulk export job (kind ``export``): pages of the export's searches, as they were at its
snapshot, written to NDJSON, with checkpoints a resumed run starts again from.

A run authorizes its caller again (the one access policy, with the caller stored in the
job), plans its searches, and goes type by type or patient by patient. After every page it
keeps to its pace (its share of the loop), stops if the job was cancelled, and every
``checkpoint_s`` syncs its files and records where it is: the segment and row id (type by
type) or the last patient done (patient by patient), the files' sizes and the counts. A run
that resumes cuts its files back to the checkpoint and goes on from there; since it reads the
same snapshot, it writes what the interrupted run would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from fhir_server.errors import FhirError, Issue, NotFound
from fhir_server.interactions.context import Services
from fhir_server.jobs.export.changes import ChangeSet
from fhir_server.jobs.export.files import ERROR_STREAM, LocalFiles
from fhir_server.jobs.export.lines import Lines, block_header
from fhir_server.jobs.export.members import Members, collect_members, group_criteria
from fhir_server.jobs.export.pages import read_page
from fhir_server.jobs.export.plan import Plan, Segment
from fhir_server.jobs.export.request import ExportRequest
from fhir_server.jobs.model import Job
from fhir_server.jobs.runner import JobControl, JobFailed
from fhir_server.metrics.catalogue import EXPORTED_RESOURCES
from fhir_server.outcomes import operation_outcome
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.model import TotalMode
from fhir_server.security.policy import Access, AccessRequest, authorize
from fhir_server.storage.port import StoredResource, WriteLog

__all__ = ["ExportKind", "Observer", "export_folder"]

#: Called after each page with the resources written so far and the expected total.
Observer = Callable[[int, int], None]
_MEMBERS_FILE = ".members.sqlite3"


def export_folder(services: Services, job_id: str) -> Path:
    """Where the files of a job of the server live."""
    return services.settings.data_dir / "exports" / job_id


class ExportKind:
    """The ``JobKind`` of bulk exports; ``folder`` chooses a job's folder (the server's
    ``exports/<job>``, or the folder ``fhir-server export`` was given)."""

    def __init__(self, services: Services, *, name: str = "export", share: float | None = None,
                 folder: Callable[[str], Path] | None = None,
                 observer: Observer | None = None, checkpoint_s: float | None = None) -> None:
        settings = services.settings
        self.services = services
        self.name = name
        self.share = settings.export_cpu_share if share is None else share
        self.folder = folder or (lambda job_id: export_folder(services, job_id))
        self.observer = observer
        self.checkpoint_s = settings.export_checkpoint_s if checkpoint_s is None else checkpoint_s

    async def run(self, job: Job, control: JobControl) -> dict[str, Any]:
        """Run (or resume) the export; return its result (what the manifest lists)."""
        files = LocalFiles(self.folder(job.id), self.services.settings.export_file_resources)
        run = ExportRun(self, job, control, files)
        try:
            return await run.run()
        finally:
            files.close()
            run.close()

    async def discard(self, job: Job) -> None:
        """Remove the job's files."""
        LocalFiles(self.folder(job.id), 1).discard()

    def question(self, job: Job) -> AccessRequest:
        """What started the export (asked again of its status and file requests)."""
        return ExportRequest.from_json(job.request).question()

    def expiry_s(self) -> float:
        """How long a finished export's files are kept."""
        return float(self.services.settings.export_expiry_s)


@dataclass
class Progress:
    """Where a run is (the checkpoint's ``at``) and what it has done."""

    segment: int = 0
    after: int = 0
    patient: str = ""
    written: int = 0
    total: int = -1
    members: int = -1

    def text(self) -> str:
        """The status's ``X-Progress`` (under 100 characters)."""
        if self.members >= 0:
            return f"{self.written:,} resources; patients: {self.members:,}"[:99]
        if self.total > 0:
            share = min(99, 100 * self.written // self.total)
            return f"{share}% ({self.written:,} of about {self.total:,} resources)"
        return f"{self.written:,} resources"


class ExportRun:
    """One run of an export job (see the module)."""

    def __init__(self, kind: ExportKind, job: Job, control: JobControl,
                 files: LocalFiles) -> None:
        self.kind = kind
        self.services = kind.services
        self.job = job
        self.control = control
        self.files = files
        self.request = ExportRequest.from_json(job.request)
        self.lines = Lines(self.request.elements)
        saved = job.checkpoint or {}
        self.progress = Progress(**saved.get("at", {}))
        self.files.restore(saved.get("files"))
        self.first = not saved
        self._synced = time.monotonic()
        self._members: Members | None = None

    def close(self) -> None:
        if self._members is not None:
            self._members.close()

    @property
    def registry(self) -> Any:
        return self.services.registry

    def _access(self) -> Access:
        try:
            return authorize(self.job.caller, self.request.question(), self.registry,
                             self.services.sharing)
        except FhirError as exc:
            raise JobFailed(operation_outcome(exc.issues)) from None

    async def run(self) -> dict[str, Any]:
        store = self.services.store
        if not isinstance(store, WriteLog):
            raise JobFailed(_outcome("MSG_EXPORT_UNAVAILABLE",
                                     "This store cannot export a consistent snapshot"))
        access = self._access()
        if self.first and self.request.warnings:
            self.files.write(ERROR_STREAM, [_line(operation_outcome_of(w))
                                            for w in self.request.warnings])
        changes = ChangeSet(store, self.request.position, self.registry)
        plan = Plan(self.request, access, self.registry, self.services.settings.export_page_size)
        if self.request.by_patient:
            await self._by_patient(plan, changes)
        else:
            await self._by_type(plan, changes)
        await self.files.sync()
        return self._result()

    # -- type by type --------------------------------------------------------------------------

    async def _by_type(self, plan: Plan, changes: ChangeSet) -> None:
        segments = plan.by_type()
        if self.progress.total < 0:
            self.progress.total = await self._expected(segments)
            await self._checkpoint(force=True)
        while self.progress.segment < len(segments):
            segment = segments[self.progress.segment]
            page = await read_page(self.services.store, segment, changes, self.progress.after,
                                   self.registry)
            self._write_typed(page.resources)
            if page.upto is None:
                self.progress.segment, self.progress.after = self.progress.segment + 1, 0
            else:
                self.progress.after = page.upto
            await self._step()

    async def _expected(self, segments: list[Segment]) -> int:
        """About how many resources the export holds (for the progress: one count per
        segment, alternatives counted apart)."""
        total = 0
        for segment in segments:
            query = replace(segment.query, count=0, total=TotalMode.ACCURATE)
            total += (await self.services.store.search(query)).total or 0
            await self.control.pace.pause()
        return total

    def _write_typed(self, resources: list[StoredResource]) -> None:
        by_type: dict[str, list[bytes]] = {}
        for stored in resources:
            by_type.setdefault(stored.resource_type, []).append(self.lines.line(stored))
        for kind, lines in by_type.items():
            self.files.write(kind, lines)
        self.progress.written += len(resources)
        EXPORTED_RESOURCES.inc(len(resources))

    # -- patient by patient --------------------------------------------------------------------

    async def _by_patient(self, plan: Plan, changes: ChangeSet) -> None:
        members = self._members = Members(self.files.folder / _MEMBERS_FILE)
        if self.progress.members < 0:
            self.progress.members = await self._collect(plan.access, members)
            await self._checkpoint(force=True)
        while batch := members.after(self.progress.patient, 100):
            for patient in batch:
                await self._patient(plan, changes, patient, members)
                self.progress.patient = patient
                await self._checkpoint()

    async def _collect(self, access: Access, members: Members) -> int:
        named: list[tuple[str, ...] | None] = [self.request.patients or None]
        filters: tuple[str, ...] = ()
        if self.request.group is not None:
            try:
                group = await self.services.store.read("Group", self.request.group)
            except NotFound:
                raise JobFailed(_outcome("MSG_NO_EXIST", "The Group is gone")) from None
            access.check_readable(group.resource())
            criteria = group_criteria(group.resource(), self.registry)
            named.append(criteria.named)
            filters = criteria.filters
        return await collect_members(self.services.store, access, self.registry, members,
                                     named, filters)

    async def _patient(self, plan: Plan, changes: ChangeSet, patient: str,
                       members: Members) -> None:
        block: list[bytes] = []
        for segment in plan.of_patient(patient):
            after: int | None = 0
            while after is not None:
                page = await read_page(self.services.store, segment, changes, after,
                                       self.registry, patient)
                kept = [r for r in page.resources if self._first_member(r, patient, members)]
                if self.request.organize_by:
                    block += [self.lines.line(stored) for stored in kept]
                    self.progress.written += len(kept)
                    EXPORTED_RESOURCES.inc(len(kept))
                else:
                    self._write_typed(kept)
                after = page.upto
                await self._step(checkpoint=False)  # only between patients
        if block:
            self.files.write("output", [block_header(patient), *block], together=True)

    def _first_member(self, stored: StoredResource, patient: str, members: Members) -> bool:
        """Whether ``patient`` is the first member (in id order) in whose compartment the
        resource is: a resource in two members' compartments goes out once."""
        if stored.resource_type == "Patient":
            return True
        others = compartment_patients(stored.resource(), self.registry)
        return not any(other < patient and other in members for other in others)

    # -- pace, checkpoints, result ----------------------------------------------------------------

    async def _step(self, checkpoint: bool = True) -> None:
        observer = self.kind.observer
        if observer is not None:
            observer(self.progress.written, self.progress.total)
        await self.control.pace.pause()
        await self.control.check()
        if checkpoint:
            await self._checkpoint()

    async def _checkpoint(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._synced < self.kind.checkpoint_s:
            return
        files = await self.files.sync()
        state = {"at": vars(self.progress).copy(), "files": files}
        await self.control.checkpoint(state, self.progress.text())
        self._synced = time.monotonic()
        self.control.pace.restart()

    def _result(self) -> dict[str, Any]:
        parts = self.files.parts()
        result: dict[str, Any] = {
            "transactionTime": self.request.transaction_time,
            "request": self.request.url,
            "output": [{"type": p.stream, "name": p.name, "count": p.count} for p in parts
                       if p.stream != ERROR_STREAM],
            "error": [{"type": "OperationOutcome", "name": p.name, "count": p.count}
                      for p in parts if p.stream == ERROR_STREAM],
        }
        if self.request.organize_by:
            result["outputOrganizedBy"] = self.request.organize_by
        return result


def operation_outcome_of(issue: dict[str, Any]) -> dict[str, Any]:
    """An OperationOutcome holding one issue (a line of the error file)."""
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _line(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value) + b"\n"


def _outcome(message_id: str, text: str) -> dict[str, Any]:
    return operation_outcome([Issue("error", "processing", message_id, text)])

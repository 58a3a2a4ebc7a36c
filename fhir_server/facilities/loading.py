"""``fhir-server facilities load FILE.csv``: the facility list into the store, idempotently.

The rows are checked first (``csv_rows``); the good ones are written as transaction Bundles
of :data:`CHUNK` conditional updates keyed by the facility code, through the same path as a
visit push (validation against the Vietnamese profile, the write lock, the audit trail), so a
row that did not change makes no new version and a changed row makes one. A malformed row is
reported with its line number and not loaded; the others are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.conformance.terminology import Terminology, default_terminology
from fhir_server.errors import FhirError
from fhir_server.facilities.csv_rows import FacilityRow, MalformedRow, read_facility_rows
from fhir_server.facilities.organization import organization_entry
from fhir_server.interactions.context import Services
from fhir_server.progress import Progress
from fhir_server.router.request import FhirRequest
from fhir_server.security.caller import SERVER

__all__ = ["CHUNK", "FacilityLoad", "load_facilities"]

_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")
#: Rows per transaction: large enough that the fsync per commit does not dominate.
CHUNK = 200


@dataclass
class FacilityLoad:
    """What a load did: rows created, rows already there (changed ones updated), rows
    malformed, and chunks the server refused (with the line numbers they held)."""

    created: int = 0
    present: int = 0
    malformed: list[MalformedRow] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether any row was not loaded."""
        return bool(self.malformed or self.refused)

    def describe(self) -> str:
        """The summary printed at the end."""
        lines = [f"facilities: {self.created} created, {self.present} already registered "
                 f"(changed ones updated), {len(self.malformed)} malformed rows"]
        lines += [f"  malformed: {row.describe()}" for row in self.malformed]
        lines += [f"  refused: {text}" for text in self.refused]
        return "\n".join(lines)


async def commit_push(services: Services, transaction: dict[str, Any]) -> dict[str, Any]:
    """Run a transaction Bundle through the router as the server itself (which keeps the
    registry's ``meta.source``); return the response Bundle.

    The one place this module enters the request path.
    """
    assert services.handle is not None, "the services were made without the router"
    answer = await services.handle(services, FhirRequest("POST", "bundle", body=transaction),
                                   SERVER)
    return answer.body if isinstance(answer.body, dict) else {}


async def load_facilities(services: Services, path: Path,
                          progress: Progress | None = None) -> FacilityLoad:
    """Load the facilities of the CSV file ``path``; ``progress`` is told each row done."""
    terminology = default_terminology()
    rows, malformed = read_facility_rows(path, terminology)
    result = FacilityLoad(malformed=malformed)
    if progress is not None:
        progress.set_total(len(rows))
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        await _load_chunk(services, chunk, terminology, result)
        if progress is not None:
            progress.advance(len(chunk))
            progress.note(created=result.created, malformed=len(malformed))
    return result


async def _load_chunk(services: Services, rows: Sequence[FacilityRow], terminology: Terminology,
                      result: FacilityLoad) -> None:
    entries = [organization_entry(row, terminology) for row in rows]
    try:
        answer = await commit_push(services, {"resourceType": "Bundle", "type": "transaction",
                                              "entry": entries})
    except FhirError as exc:  # the Bundle names the entry at fault: name its line
        found = _ENTRY.search(" ".join((exc.diagnostics, *exc.issues[0].expression))
                              if exc.issues else exc.diagnostics)
        where = (f"line {rows[int(found.group(1))].line}" if found
                 else f"lines {rows[0].line}-{rows[-1].line}")
        result.refused.append(f"{where}: {exc.diagnostics} (the rows of this chunk, "
                              f"lines {rows[0].line}-{rows[-1].line}, were not loaded)")
        return
    for entry in answer.get("entry", []):
        if entry["response"]["status"].startswith("201"):
            result.created += 1
        else:
            result.present += 1

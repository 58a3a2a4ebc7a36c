"""`fhir-server generate`: deterministic synthetic visits written as NDJSON transaction Bundles.

The same `patients` and `seed` always give byte-identical files: every random value comes from
one `random.Random(seed)` drawn in a fixed order, and "now" is fixed at 2026-06-30T00:00+07:00.
Patients are drawn one after another, so a smaller run is a prefix of a larger one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson

from fhir_server.synthetic.bundles import visit_bundle
from fhir_server.synthetic.facilities import FacilityDirectory, facility_pool
from fhir_server.synthetic.identifiers import ma_lk, random_urn
from fhir_server.synthetic.patients import PatientFacts, draw_patient
from fhir_server.synthetic.tables import load_tables
from fhir_server.synthetic.visit import Visit, draw_schedule

__all__ = [
    "BUNDLES_PER_FILE",
    "GenerateSummary",
    "generate",
    "synthetic_visits",
    "visit_bundles",
]

BUNDLES_PER_FILE = 10_000
PROGRESS_EVERY = 1_000
_PART_PATTERN = "visits-[0-9][0-9][0-9][0-9][0-9].ndjson"


@dataclass(frozen=True)
class GenerateSummary:
    """What a run wrote: counts, and the NDJSON files in order."""

    patients: int
    visits: int
    bundles: int
    resources: int
    files: list[Path] = field(default_factory=list)


class _NdjsonParts:
    """Writes lines into visits-00001.ndjson, visits-00002.ndjson ..., `limit` lines each."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory, self.limit = directory, limit
        self.files: list[Path] = []
        self._handle: BinaryIO | None = None
        self._lines = 0

    def write(self, line: bytes) -> None:
        if self._handle is None or self._lines == self.limit:
            self._open_next()
        assert self._handle is not None
        self._handle.write(line)
        self._lines += 1

    def _open_next(self) -> None:
        self.close()
        path = self.directory / f"visits-{len(self.files) + 1:05d}.ndjson"
        self.files.append(path)
        self._handle = path.open("wb", buffering=1 << 20)
        self._lines = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> _NdjsonParts:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _visits(
    rng: random.Random, patient: PatientFacts, directory: FacilityDirectory, serial: int
) -> list[Visit]:
    """The patient's visits; MA_LK serials continue from `serial`, the visits so far."""
    visits: list[Visit] = []
    for slot in draw_schedule(rng, patient.birth_date):
        facility = directory.pick(rng, patient.province.code, slot.visit_type.levels)
        key = ma_lk(facility.code, slot.start.date(), serial + len(visits) + 1)
        urn = random_urn(rng)
        visits.append(Visit(key, slot.visit_type, facility, patient, slot.start, slot.end, urn))
    return visits


def _clear_old_parts(out: Path) -> None:
    # A previous, larger run would otherwise leave parts that a loader globbing the folder reads.
    for stale in out.glob(_PART_PATTERN):
        stale.unlink()


def synthetic_visits(
    patients: int, seed: int, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[Visit, dict[str, Any]]]:
    """Yield each visit of `patients` patients drawn from `seed` with its Bundle, in order;
    `progress` gets the patients done every ``PROGRESS_EVERY``."""
    rng = random.Random(seed)
    tables = load_tables()
    directory = FacilityDirectory(facility_pool(tables))
    visits = 0
    issued: set[str] = set()
    for done in range(1, patients + 1):
        for visit in _visits(rng, draw_patient(rng, tables, issued), directory, visits):
            yield visit, visit_bundle(rng, visit)
            visits += 1
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == patients):
            progress(done)


def visit_bundles(
    patients: int, seed: int, progress: Callable[[int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the visit Bundles of `patients` patients drawn from `seed`, in order (what
    :func:`generate` writes)."""
    for _, bundle in synthetic_visits(patients, seed, progress):
        yield bundle


def generate(
    patients: int, seed: int, out: Path, progress: Callable[[int], None] | None = None
) -> GenerateSummary:
    """Write `patients` patients' visits as NDJSON transaction Bundles into `out`.

    Returns the counts and files written. Raises ValueError for a negative patient count.
    Existing `visits-NNNNN.ndjson` files in `out` are replaced.
    """
    if patients < 0:
        raise ValueError("patients must not be negative")
    out.mkdir(parents=True, exist_ok=True)
    _clear_old_parts(out)
    visits = resources = 0
    with _NdjsonParts(out, BUNDLES_PER_FILE) as parts:
        for bundle in visit_bundles(patients, seed, progress):
            resources += len(bundle["entry"])
            parts.write(orjson.dumps(bundle, option=orjson.OPT_APPEND_NEWLINE))
            visits += 1
    return GenerateSummary(patients, visits, visits, resources, parts.files)

"""The parts of an export: its request (parameters to ``ExportRequest``), its files (parts,
checkpoints, resume), its lines (``_elements``), and its change set (what was written after
its snapshot, by row id and by patient)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.jobs.export.changes import ChangeSet
from fhir_server.jobs.export.files import LocalFiles
from fhir_server.jobs.export.lines import Lines
from fhir_server.jobs.export.request import ExportRequest, exportable_types, parse_export
from fhir_server.search.indexing import compartment_types
from fhir_server.security.policy import AccessRequest
from fhir_server.storage.port import Change, StoredResource
from tests.builders import observation, patient
from tests.unit.search.search_builders import registry

# -- the request -------------------------------------------------------------------------------


def test_types_may_be_repeated_or_comma_separated_and_default_to_the_level_s() -> None:
    values = {"_type": ["Patient,Observation", "Encounter", "Patient"]}
    assert parse_export(values, "system", registry()).types == ("Patient", "Observation",
                                                                "Encounter")
    every = parse_export({}, "patient", registry()).types
    assert set(every) == exportable_types("patient") <= compartment_types()
    assert "AuditEvent" not in parse_export({}, "system", registry()).types
    assert "Organization" in parse_export({}, "system", registry()).types


def test_a_type_outside_the_compartment_is_refused_at_patient_level_or_dropped_leniently(
) -> None:
    with pytest.raises(NotSupported):
        parse_export({"_type": ["Organization,Patient"]}, "patient", registry())
    lenient = parse_export({"_type": ["Organization,Patient"]}, "patient", registry(),
                           lenient=True)
    assert lenient.types == ("Patient",)
    assert [w["details"]["coding"][0]["code"] for w in lenient.warnings] == ["MSG_EXPORT_TYPE"]
    with pytest.raises(BadRequest):  # nothing left to export
        parse_export({"_type": ["Organization"]}, "patient", registry(), lenient=True)


def test_the_request_round_trips_through_json_and_names_its_question() -> None:
    request = parse_export({"_type": ["Observation"], "_since": ["2026-01-01T00:00:00Z"],
                            "_typeFilter": ["Observation?category=laboratory"],
                            "patient": ["Patient/a"], "organizeOutputBy": ["Patient"]},
                           "group", registry(), group="g1", url="http://x/fhir/Group/g1/$export")
    again = ExportRequest.from_json(orjson.loads(orjson.dumps(request.to_json())))
    assert again == request
    assert again.question() == AccessRequest("operation", "Group", "g1", operation="export")
    assert again.by_patient and again.patients == ("a",)
    assert not parse_export({}, "system", registry()).by_patient


# -- files -------------------------------------------------------------------------------------


def test_parts_hold_at_most_per_file_lines_and_a_block_stays_in_one_part(
    tmp_path: Path,
) -> None:
    files = LocalFiles(tmp_path, per_file=3)
    files.restore(None)
    files.write("Patient", [b"1\n", b"2\n", b"3\n", b"4\n"])
    files.write("output", [b"a\n", b"b\n"], together=True)
    files.write("output", [b"c\n", b"d\n"], together=True)  # would not fit: a new part
    files.write("output", [b"e\n", b"f\n", b"g\n", b"h\n"], together=True)  # too big for any
    assert [(p.name, p.count) for p in files.parts()] == [
        ("Patient-1.ndjson", 3), ("Patient-2.ndjson", 1), ("output-1.ndjson", 2),
        ("output-2.ndjson", 2), ("output-3.ndjson", 4)]
    assert (tmp_path / "Patient-1.ndjson").read_bytes() == b"1\n2\n3\n"
    files.close()


async def test_a_resumed_writer_cuts_its_parts_back_to_the_checkpoint(tmp_path: Path) -> None:
    files = LocalFiles(tmp_path, per_file=2)
    files.restore(None)
    files.write("Patient", [b"1\n", b"2\n", b"3\n"])
    state = await files.sync()
    files.write("Patient", [b"4\n", b"5\n"])  # after the checkpoint: lost in a crash
    files.write("Encounter", [b"e\n"])
    await files.sync()
    files.close()
    resumed = LocalFiles(tmp_path, per_file=2)
    resumed.restore(state)
    assert sorted(p.name for p in tmp_path.glob("*.ndjson")) == ["Patient-1.ndjson",
                                                                 "Patient-2.ndjson"]
    resumed.write("Patient", [b"4\n"])
    resumed.close()
    assert (tmp_path / "Patient-2.ndjson").read_bytes() == b"3\n4\n"
    resumed.discard()
    assert not tmp_path.exists()


# -- lines -------------------------------------------------------------------------------------


def _stored(resource: dict[str, Any]) -> StoredResource:
    content = orjson.dumps({**resource, "id": "x", "meta": {"versionId": "1"}})
    return StoredResource(resource["resourceType"], "x", 1, "2026-01-01", content)


def test_a_line_is_the_stored_bytes_unless_elements_cut_it() -> None:
    stored = _stored(observation())
    assert Lines(()).line(stored) == stored.content + b"\n"
    cut = orjson.loads(Lines(("Patient.gender", "subject")).line(stored))
    assert set(cut) == {"resourceType", "id", "meta", "status", "code", "subject"}
    assert cut["meta"]["tag"][-1]["code"] == "SUBSETTED" and cut["meta"]["versionId"] == "1"
    person = orjson.loads(Lines(("Patient.gender",)).line(_stored(patient())))
    assert "gender" in person and "name" not in person


# -- the change set ----------------------------------------------------------------------------


class WriteLogStub:
    """A write order: versions after position 10, and what each resource was at 10."""

    def __init__(self, changes: list[Change], before: dict[tuple[str, str], Any]) -> None:
        self.changes = changes
        self.before = before

    async def write_position(self) -> tuple[int, str | None]:
        return 10 + len(self.changes), None

    async def changes_after(self, seq: int, limit: int) -> list[Change]:
        return [c for c in self.changes if c.seq > seq][:limit]

    async def version_at(self, kind: str, id: str, seq: int) -> StoredResource | None:
        found = self.before.get((kind, id))
        if found is None:
            return None
        return StoredResource(kind, id, 1, "t", orjson.dumps(found), deleted=found == {})


async def test_the_change_set_says_what_changed_and_what_it_was_by_range_and_patient() -> None:
    before = {("Observation", "o1"): {**observation("Patient/p1"), "id": "o1"},
              ("Observation", "o2"): {**observation("Patient/p2"), "id": "o2"},
              ("Patient", "p1"): {**patient(), "id": "p1"}, ("Observation", "gone"): {}}
    changes = [Change(11, 5, "Observation", "o1"), Change(12, 9, "Observation", "o2"),
               Change(13, 2, "Patient", "p1"), Change(14, 40, "Observation", "new"),
               Change(15, 5, "Observation", "o1"), Change(16, 7, "Observation", "gone")]
    found = ChangeSet(WriteLogStub(changes, before), 10, registry())
    await found.refresh()
    assert len(found) == 5 and found.read_up_to == 16
    assert found.changed("Observation", "new") and not found.changed("Observation", "o3")
    assert [c.id for c in found.within(["Observation"], 0, None)] == ["o1", "o2"]
    assert [c.id for c in found.within(["Observation"], 5, 9)] == ["o2"]
    assert {c.id for c in found.within(["Observation", "Patient"], 0, 5)} == {"p1", "o1"}
    assert {c.id for c in found.of_patient("p1", ["Observation", "Patient"], 0, None)} == {
        "o1", "p1"}
    assert found.of_patient("p1", ["Observation"], 5, None) == []
    first = found.within(["Observation"], 0, 5)[0]
    was = await found.as_it_was(first)
    assert was is not None and was.resource()["subject"]["reference"] == "Patient/p1"

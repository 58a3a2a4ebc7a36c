"""Compact audit records: what the SQLite audit log stores and what it serves back."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.audit_record import AuditRecord, new_event_id
from fhir_server.resources import ID_PATTERN
from fhir_server.storage.sqlite import audit_log

_ids = st.text("abcdef0123456789-", min_size=1, max_size=8)
_types = st.sampled_from(["Observation", "Encounter", "Condition", "Patient"])
records = st.builds(
    AuditRecord,
    interaction=st.sampled_from(["read", "search-type", "create", "$everything", "token"]),
    status=st.sampled_from([200, 201, 403, 404, 500]),
    id=st.just("e-1"),
    recorded=st.integers(0, 4_000_000_000_000_000),
    has_caller=st.booleans(),
    issuer=st.just("https://issuer.example"),
    subject=st.just("subject-1"),
    patient_id=st.none() | _ids,
    organization=st.none() | st.just("Organization/bm"),
    client_id=st.none() | st.just("bv-bach-mai"),
    touched=st.lists(st.tuples(_types, _ids).map(lambda p: f"{p[0]}/{p[1]}/_history/1"),
                     max_size=4).map(tuple),
    patients=st.lists(_ids, max_size=3, unique=True).map(tuple),
    address=st.none() | st.just("10.0.0.1"),
    query=st.none() | st.just("code=x"),
)


@given(records)
def test_a_compact_record_reads_back_as_the_same_audit_event(record: AuditRecord) -> None:
    stored = orjson.dumps(record.compact())
    assert AuditRecord.from_compact(orjson.loads(stored)) == record
    event = orjson.loads(audit_log.content_of(stored, "2026-01-01T00:00:00.000000+00:00"))
    assert event == {**record.to_event(), "meta": {
        "versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000000+00:00"}}


@given(records)
def test_a_record_is_searchable_by_what_its_audit_event_names(record: AuditRecord) -> None:
    """The search rows of a compact record equal those of its AuditEvent stored whole."""
    assert record.refs() == set(audit_log._refs(record.to_event()))


def test_records_and_events_share_one_log() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(audit_log.AUDIT_SCHEMA_SQL)
    record = AuditRecord("read", 200, new_event_id(1_700_000_000_000_000), 1_700_000_000_000_000,
                         patients=("p1",), touched=("Observation/o1/_history/2",))
    event = {"resourceType": "AuditEvent", "id": "posted-1", "recorded": "2024-01-01",
             "type": {"code": "x"}, "agent": [{"requestor": True}], "source": {}}
    conn.execute("BEGIN")
    audit_log.append(conn, [record, event])
    conn.execute("COMMIT")
    read = audit_log.read(conn, record.id)
    assert read is not None and read.resource()["entity"][0]["what"] == {"reference": "Patient/p1"}
    posted = audit_log.read(conn, "posted-1")
    assert posted is not None and posted.resource()["meta"]["versionId"] == "1"
    assert audit_log.exists(conn, [record.id, "posted-1", "other"]) == {record.id, "posted-1"}


def test_event_ids_are_valid_fhir_ids_that_sort_by_time() -> None:
    ids = [new_event_id(micros) for micros in range(0, 10_000_000_000, 1_000_000_000)]
    assert all(ID_PATTERN.match(value) for value in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@given(records)
def test_the_outcome_column_is_the_records_outcome(record: AuditRecord) -> None:
    row = audit_log._record_row(1, record, "2026-01-01T00:00:00.000000+00:00")
    assert row[5:7] == (record.action, record.outcome.value)


def test_reference_rows_are_found_before_and_after_they_move_into_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reference rows wait unindexed, then move into ``audit_refs``; searches see both."""
    monkeypatch.setattr(audit_log, "MERGE_ROWS", 7)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(audit_log.AUDIT_SCHEMA_SQL)
    where, args = audit_log._ref_in(audit_log._PATIENT, "Patient/p1")
    expected: list[int] = []
    for batch in range(5):
        records = [AuditRecord("read", 200, new_event_id(n), n, patients=(f"p{n % 2}",),
                               client_id="c1") for n in range(batch * 3, batch * 3 + 3)]
        conn.execute("BEGIN")
        if audit_log.append(conn, records):
            audit_log.merge_recent_refs(conn)
        conn.execute("COMMIT")
        expected += [batch * 3 + i + 1 for i in range(3) if (batch * 3 + i) % 2 == 1]
        found = [row[0] for row in conn.execute(
            f"SELECT a.seq FROM audit_events a WHERE {where} ORDER BY a.seq", args)]
        assert found == expected
        waiting = conn.execute("SELECT count(*) FROM audit_refs_recent").fetchone()[0]
        assert waiting < 7  # two rows per record: a merge happens every fourth record
    merged = conn.execute("SELECT count(*) FROM audit_refs").fetchone()[0]
    assert merged + waiting == 30 and merged > 0

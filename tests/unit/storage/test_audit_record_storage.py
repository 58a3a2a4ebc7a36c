"""Compact audit records: what the SQLite audit log stores and what it serves back."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.audit_record import AuditRecord, new_event_id
from fhir_server.resources import ID_PATTERN
from fhir_server.search.model import Clause, ParamType, TokenValue
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
    purpose=st.none() | st.sampled_from(["TREAT", "BTG", "PATRQT"]),
    reason=st.none() | st.just("bất tỉnh, cấp cứu"),
    policies=st.lists(_ids.map(lambda i: f"Consent/{i}"), max_size=2, unique=True).map(tuple),
    user=st.none() | st.just("Practitioner/dr-1"),
)


@given(records)
def test_a_compact_record_reads_back_as_the_same_audit_event(record: AuditRecord) -> None:
    stored = orjson.dumps(record.compact())
    assert AuditRecord.from_compact(orjson.loads(stored), record.id, record.recorded) == record
    event = orjson.loads(audit_log.content_of(stored, "2026-01-01T00:00:00.000000+00:00",
                                              record.id, record.recorded))
    assert event == {**record.to_event(), "meta": {
        "versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000000+00:00"}}


@given(records)
def test_a_record_is_searchable_by_what_its_audit_event_names(record: AuditRecord) -> None:
    """The search rows of a compact record equal those of its AuditEvent stored whole."""
    assert record.refs() == set(audit_log._refs(record.to_event()))


def test_a_version_1_compact_record_still_reads_back() -> None:
    """Logs written before version 2 kept the id and recorded time inside the array."""
    old = [1, "read", 200, "e-1", 1_700_000_000_123_000, False, None, None, None, None, "c1",
           ["Patient/p1"], ["p1"], "10.0.0.1", None, None, "fhir-server"]
    record = AuditRecord.from_compact(old, "ignored", 0)
    assert (record.id, record.recorded, record.client_id) == ("e-1", 1_700_000_000_123_000, "c1")
    assert record.compact()[0] == 3


def test_a_version_2_compact_record_reads_back_without_a_purpose() -> None:
    """Logs written before version 3 have no purpose, reason or policies."""
    old = [2, "read", 200, False, None, None, None, None, "c1", ["Patient/p1"], ["p1"],
           "10.0.0.1", None, None, "fhir-server"]
    record = AuditRecord.from_compact(old, "e-2", 7)
    assert (record.id, record.client_id, record.purpose, record.policies) == (
        "e-2", "c1", None, ())
    assert "purposeOfEvent" not in record.to_event()


def test_the_audit_event_says_why_and_under_which_consent() -> None:
    record = AuditRecord("read", 200, "e-3", 7, True, "iss", "dr", None, "Organization/bm",
                         None, ("Observation/o1",), ("p1",), purpose="BTG",
                         reason="unconscious", policies=("Consent/btg-1",))
    event = record.to_event()
    assert event["purposeOfEvent"] == [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}],
        "text": "unconscious"}]
    assert event["agent"][0]["policy"] == ["Consent/btg-1"]


def _log() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    audit_log.create_schema(conn)
    conn.execute("COMMIT")
    return conn


def test_records_and_events_share_one_log() -> None:
    conn = _log()
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
    row = audit_log._record_row(1, record, "2026-01-01T00:00:00.000000+00:00", [])
    assert row[5:7] == (record.action, record.outcome.value)


def test_reference_rows_are_found_before_and_after_they_move_into_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reference rows wait in their event's row, then move into ``audit_refs`` once eight
    wait; searches see both."""
    monkeypatch.setattr(audit_log, "MERGE_ROWS", 8)
    conn = _log()
    where, args = audit_log._ref_in(audit_log._PATIENT, "Patient/p1")
    expected: list[int] = []
    merges = 0
    for batch in range(5):
        records = [AuditRecord("read", 200, new_event_id(n), n, patients=(f"p{n % 2}",),
                               client_id="c1") for n in range(batch * 3, batch * 3 + 3)]
        conn.execute("BEGIN")
        if audit_log.append(conn, records):
            audit_log.merge_recent_refs(conn)
            merges += 1
        conn.execute("COMMIT")
        expected += [batch * 3 + i + 1 for i in range(3) if (batch * 3 + i) % 2 == 1]
        found = [row[0] for row in conn.execute(
            f"SELECT a.seq FROM {audit_log._EVENTS} WHERE {where} ORDER BY a.seq", args)]
        assert found == expected
        merged_up_to, waiting = conn.execute("SELECT seq, waiting FROM audit_merged").fetchone()
        assert waiting == 2 * ((batch + 1) * 3 - merged_up_to) < 8  # two rows per record
    merged = conn.execute("SELECT count(*) FROM audit_refs").fetchone()[0]
    assert merges == 2 and merged == 2 * merged_up_to == 24  # a patient and an agent row each
    waiting = conn.execute("SELECT count(*) FROM audit_refs_all").fetchone()[0]
    assert waiting == 30


def test_a_log_with_waiting_rows_in_the_old_table_moves_them_on_open() -> None:
    """Logs written before the ``refs`` column kept waiting rows in ``audit_refs_recent``."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript("""
        CREATE TABLE audit_events (
          seq INTEGER PRIMARY KEY, id TEXT NOT NULL, last_updated TEXT NOT NULL,
          at INTEGER NOT NULL, at_high INTEGER NOT NULL, action TEXT, outcome TEXT,
          type TEXT NOT NULL, subtype TEXT NOT NULL, address TEXT, content BLOB NOT NULL);
        CREATE TABLE audit_refs (kind INTEGER NOT NULL, ref TEXT NOT NULL, seq INTEGER NOT NULL,
          PRIMARY KEY (kind, ref, seq)) WITHOUT ROWID;
        CREATE TABLE audit_refs_recent (kind INTEGER NOT NULL, ref TEXT NOT NULL,
          seq INTEGER NOT NULL);
        CREATE VIEW audit_refs_all AS SELECT kind, ref, seq FROM audit_refs
          UNION ALL SELECT kind, ref, seq FROM audit_refs_recent;
        INSERT INTO audit_events VALUES (1, 'e1', 'x', 0, 1000, 'R', '0', '', '', NULL, '{}');
        INSERT INTO audit_events VALUES (2, 'e2', 'x', 0, 1000, 'R', '0', '', '', NULL, '{}');
        INSERT INTO audit_refs VALUES (0, 'Patient/p1', 1);
        INSERT INTO audit_refs_recent VALUES (0, 'Patient/p1', 2);
    """)
    conn.execute("BEGIN")
    audit_log.create_schema(conn)
    conn.execute("COMMIT")
    where, args = audit_log._ref_in(audit_log._PATIENT, "Patient/p1")
    found = [row[0] for row in conn.execute(f"SELECT a.seq FROM {audit_log._EVENTS} WHERE {where}",
                                            args)]
    assert sorted(found) == [1, 2]
    assert conn.execute("SELECT seq FROM audit_merged").fetchone()[0] == 2
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "audit_refs_recent" not in tables
    record = AuditRecord("read", 200, "e3", 5_000, patients=("p1",))
    conn.execute("BEGIN")
    audit_log.append(conn, [record])
    conn.execute("COMMIT")
    found = [row[0] for row in conn.execute(f"SELECT a.seq FROM {audit_log._EVENTS} WHERE {where}",
                                            args)]
    assert sorted(found) == [1, 2, 3]


def test_type_searches_find_short_and_whole_code_systems() -> None:
    """Known systems are stored as one character; rows written before hold them whole."""
    conn = _log()
    conn.execute("BEGIN")
    audit_log.append(conn, [AuditRecord("read", 200, "new", 1_000),
                            AuditRecord("token", 200, "login", 2_000)])
    rest = "\x1fhttp://terminology.hl7.org/CodeSystem/audit-event-type|rest\x1f"
    conn.execute("INSERT INTO audit_events (seq, id, last_updated, at, at_high, type, subtype, "
                 "content) VALUES (9, 'old', 'x', 0, 1000, ?, ?, '{}')",
                 (rest, "\x1fhttp://hl7.org/fhir/restful-interaction|read\x1f"))
    conn.execute("COMMIT")
    stored = conn.execute("SELECT type FROM audit_events WHERE id = 'new'").fetchone()[0]
    assert stored == "\x1f\x01|rest\x1f"

    def ids(code: str, system: str | None, value: str | None) -> set[str]:
        clause = Clause(code, ParamType.TOKEN, (TokenValue(system, value),))
        where, args = audit_log._value(clause, clause.values[0])
        return {row[0] for row in conn.execute(
            f"SELECT a.id FROM {audit_log._EVENTS} WHERE {where}", args)}

    event_type = "http://terminology.hl7.org/CodeSystem/audit-event-type"
    assert ids("type", event_type, "rest") == {"new", "old"}
    assert ids("type", event_type, None) == {"new", "old"}
    assert ids("type", None, "rest") == {"new", "old"}
    assert ids("subtype", "http://hl7.org/fhir/restful-interaction", "read") == {"new", "old"}
    assert ids("type", "http://dicom.nema.org/resources/ontology/DCM", "110114") == {"login"}
    assert ids("type", "http://other.example", "rest") == set()


def test_a_merge_counter_is_added_to_a_log_that_had_none() -> None:
    conn = _log()
    conn.executescript("DROP TABLE audit_merged; CREATE TABLE audit_merged (seq INTEGER NOT NULL);"
                       "INSERT INTO audit_merged VALUES (0);")
    conn.execute("BEGIN")
    audit_log.create_schema(conn)
    audit_log.append(conn, [AuditRecord("read", 200, "e1", 1_000, patients=("p1",))])
    conn.execute("COMMIT")
    assert conn.execute("SELECT seq, waiting FROM audit_merged").fetchone() == (0, 1)

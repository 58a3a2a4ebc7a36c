"""A request's AuditEvents across patients, stored as one row of the SQLite audit log.

A page of several patients leaves one AuditEvent per patient (``AuditNote.records``); the
audit log stores them as one ``audit_events`` row and one narrow ``audit_groups`` row per
event (``AuditRecord.groups``). Whatever is asked of the log, the answer is the one a row per
event gives: these tests store the same events both ways and compare.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import pytest

from fhir_server.audit_record import (
    MAX_GROUPS,
    AuditRecord,
    audit_record,
    event_id_in_group,
    group_of_event_id,
    new_event_id,
)
from fhir_server.search.model import (
    Clause,
    ParamType,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
    TotalMode,
    Visibility,
)
from fhir_server.security.audit import AuditNote
from fhir_server.storage.port import HistoryQuery
from fhir_server.storage.sqlite import audit_log

_RECORDED = 1_700_000_000_000_000


def _page(reader: str, patients: list[str], nobody: bool = True) -> AuditRecord:
    """The record of a page of ``patients``' Observations (and a Practitioner of nobody's)."""
    first, *others = patients
    record = audit_record("search-type", status=200, touched=[f"Observation/o-{first}"],
                          patients=[first], query="code=x", policies=[f"Consent/c-{first}"],
                          client_id=reader, recorded=None)
    groups = [([f"Observation/o-{p}"], [p], [f"Consent/c-{p}"]) for p in others]
    return record.regrouped([*groups, *([(["Practitioner/dr-1"], [], [])] if nobody else [])])


def _log(records: list[Any]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    audit_log.create_schema(conn)
    if audit_log.append(conn, records):
        audit_log.merge_recent_refs(conn)
    conn.execute("COMMIT")
    return conn


def _both(records: list[AuditRecord]) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The records as stored (grouped), and as a row per event (as logs did before)."""
    return _log(list(records)), _log([e for r in records for e in r.event_records()])


def _shown(conn: sqlite3.Connection, query: SearchQuery) -> list[dict[str, Any]]:
    """Every event of the search, page after page, without ``meta`` (the store's time)."""
    found: list[dict[str, Any]] = []
    while True:
        result = audit_log.search(conn, query)
        found += [{k: v for k, v in m.resource().items() if k != "meta"} for m in result.matches]
        if result.next_cursor is None:
            return found
        query = dataclasses.replace(query, cursor=result.next_cursor)


def _ref(code: str, reference: str) -> Clause:
    kind, id = reference.split("/")
    return Clause(code, ParamType.REFERENCE, (ReferenceValue(kind, id),))


def test_a_page_of_several_patients_is_one_row_and_one_narrow_row_per_event() -> None:
    record = _page("app", ["p1", "p2", "p3"])
    grouped, per_event = _both([record])
    assert grouped.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)
    assert grouped.execute("SELECT k FROM audit_groups ORDER BY k").fetchall() == [
        (0,), (1,), (2,), (3,)]
    assert per_event.execute("SELECT count(*) FROM audit_events").fetchone() == (4,)
    # The agent is named once, not once per event: 8 references to move into the index, not 11.
    assert grouped.execute("SELECT waiting FROM audit_merged").fetchone() == (8,)
    assert per_event.execute("SELECT waiting FROM audit_merged").fetchone() == (11,)


@pytest.mark.parametrize("query", [
    SearchQuery("AuditEvent", count=200, total=TotalMode.ACCURATE),
    SearchQuery("AuditEvent", count=2, total=TotalMode.ACCURATE),  # pages split a row
    SearchQuery("AuditEvent", sort=(SortKey("date", descending=True),), count=3),
    SearchQuery("AuditEvent", clauses=(_ref("patient", "Patient/p2"),)),
    SearchQuery("AuditEvent", clauses=(_ref("entity", "Observation/o-p3"),)),
    SearchQuery("AuditEvent", clauses=(_ref("entity", "Practitioner/dr-1"),)),
    SearchQuery("AuditEvent", clauses=(_ref("agent", "Patient/p1"),)),
    SearchQuery("AuditEvent", clauses=(_ref("patient", "Patient/p1"),), count=1),
    SearchQuery("AuditEvent", clauses=(
        Clause("patient", ParamType.REFERENCE, (ReferenceValue(None, "p2"),)),)),
    SearchQuery("AuditEvent", compartment=("Patient", "p3")),
    SearchQuery("AuditEvent", visibility=Visibility(patient="p1")),
    SearchQuery("AuditEvent", visibility=Visibility(patient="p4")),
], ids=lambda query: repr(query)[:60])
def test_a_grouped_row_answers_every_search_as_a_row_per_event(query: SearchQuery) -> None:
    citizen = dataclasses.replace(_page("citizen", ["p1"]), has_caller=True, patient_id="p1",
                                  issuer="https://idp", subject="cccd-1")
    records = [_page("app", ["p1", "p2", "p3"]), _page("app", ["p3", "p4"], nobody=False),
               _page("other", ["p4"]), citizen]
    grouped, per_event = _both(records)
    shown = _shown(grouped, query)
    assert shown == _shown(per_event, query)
    assert shown
    assert audit_log.search(grouped, query).total == audit_log.search(per_event, query).total


def test_a_citizens_view_names_only_her() -> None:
    grouped, _ = _both([_page("app", ["p1", "p2", "p3"])])
    for patient in ("p1", "p2", "p3"):
        events = _shown(grouped, SearchQuery("AuditEvent", visibility=Visibility(patient=patient)))
        assert len(events) == 1
        named = {x["what"]["reference"] for x in events[0]["entity"] if "what" in x}
        assert named == {f"Patient/{patient}", f"Observation/o-{patient}"}
        assert events[0]["agent"][0]["policy"] == [f"Consent/c-{patient}"]


def test_each_event_of_a_grouped_row_reads_and_has_a_history_by_its_id() -> None:
    record = _page("app", ["p1", "p2"])
    grouped, per_event = _both([record, _page("app", ["p3"])])
    ids = [event.id for event in record.event_records()]
    assert ids == [event_id_in_group(record.id, k) for k in range(3)]
    for id in ids:
        stored, expected = audit_log.read(grouped, id), audit_log.read(per_event, id)
        assert stored is not None and expected is not None
        assert stored.id == id
        assert stored.resource()["entity"] == expected.resource()["entity"]
        history = audit_log.history(grouped, HistoryQuery("AuditEvent", id=id))
        assert [entry.id for entry in history.entries] == [id]
        (only,) = _shown(grouped, SearchQuery("AuditEvent", clauses=(
            Clause("_id", ParamType.TOKEN, (TokenValue(None, id),)),)))
        assert only["id"] == id
    assert audit_log.read(grouped, event_id_in_group(record.id, 3)) is None
    assert audit_log.exists(grouped, [*ids, event_id_in_group(record.id, 5)]) == set(ids)


def test_the_type_history_pages_event_by_event_newest_first() -> None:
    grouped, per_event = _both([_page("app", ["p1", "p2"]), _page("app", ["p3", "p4", "p5"])])

    def ids(conn: sqlite3.Connection) -> list[str]:
        found, before = [], None
        while True:
            page = audit_log.history(conn, HistoryQuery("AuditEvent", count=2,
                                                        before_seq=before))
            found += [entry.id for entry in page.entries]
            if page.next_seq is None:
                return found
            before = page.next_seq

    newest_first = ids(grouped)
    assert len(newest_first) == 7 and newest_first == sorted(newest_first, reverse=True)
    assert set(newest_first) == set(ids(per_event))


def test_a_log_of_rows_per_event_opens_with_the_groups_table_and_reads_as_before() -> None:
    """A log written before groups (no ``audit_groups``) gains the table when it opens; its
    rows are one event each, beside the grouped rows written after."""
    old = AuditRecord("read", 200, "0189f1b2-0000-7abc-8def-000000000007", _RECORDED,
                      patients=("p1",), touched=("Observation/o1",))
    conn = _log([old])
    conn.execute("DROP TABLE audit_groups")
    conn.execute("BEGIN")
    audit_log.create_schema(conn)
    audit_log.append(conn, [_page("app", ["p1", "p2"])])
    conn.execute("COMMIT")
    events = _shown(conn, SearchQuery("AuditEvent", clauses=(_ref("patient", "Patient/p1"),)))
    assert [len(e["entity"]) for e in events] == [2, 3]  # the read; the page's event (a query)
    assert audit_log.read(conn, old.id) is not None


def test_an_event_id_gives_its_records_id_and_place() -> None:
    base = new_event_id(_RECORDED)
    assert group_of_event_id(base) is None
    for k in (1, 17, MAX_GROUPS - 1):
        assert group_of_event_id(event_id_in_group(base, k)) == (base, k)
    assert group_of_event_id("posted-1") is None


def test_a_notes_records_are_the_events_of_its_grouped_records() -> None:
    note = AuditNote("search-type")
    note.touched = [(f"Patient/p{n}", frozenset({f"p{n}"})) for n in range(MAX_GROUPS + 5)]
    note.touched.append(("Practitioner/dr-1", frozenset()))
    grouped = note.grouped_records(None, 200, "name=x")
    assert [record.event_count for record in grouped] == [MAX_GROUPS, 6]
    split = [event for record in grouped for event in record.event_records()]
    assert [event.patients for event in split] == [
        (f"p{n}",) for n in sorted(range(MAX_GROUPS + 5), key=str)] + [()]
    assert len({event.id for event in split}) == len(split)
    assert [(e.touched, e.patients) for e in note.records(None, 200, "name=x")] == [
        (e.touched, e.patients) for e in split]

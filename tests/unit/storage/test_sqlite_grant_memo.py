"""The SQLite store remembers the Consent grants it read only while the patient's grants do
not change (``storage.sqlite.consent_sql.GrantMemo``, counted in ``consent_change`` by
triggers): a Consent written, changed or deleted by another connection (another worker
process, or this process's writer) is read by the next query; commits of anything else
(AuditEvents, another patient's Consents) keep what was read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhir_server.search.model import Grant
from fhir_server.storage.sqlite.consent_sql import GrantMemo
from fhir_server.storage.sqlite.search_tables import SCHEMA_SQL, grant_row

ORG = "Organization/x"


def _grant(patient: str, actor: str, permit: bool = True) -> Grant:
    return Grant("c1", patient, actor, permit, "patient-privacy", 0, 2**62)


def _store(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.executescript(SCHEMA_SQL)
    reader = sqlite3.connect(path, isolation_level=None)
    return writer, reader


def _write(writer: sqlite3.Connection, rule: int, grant: Grant) -> None:
    writer.execute("INSERT INTO consent_grant VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                   "?, ?, ?, ?, ?)", grant_row(1, rule, grant))


def test_grants_are_read_again_after_their_patients_change(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path / "fhir.sqlite3")
    memo = GrantMemo()
    _write(writer, 0, _grant("p1", ORG))
    _write(writer, 1, _grant("p1", "Organization/other"))
    first = memo.read(reader, ["p1"], [ORG])
    assert [g.actor for g in first] == [ORG]  # naming the caller only
    assert memo.read(reader, ["p1"], [ORG]) is first  # nothing changed: remembered
    _write(writer, 2, _grant("p1", "*", permit=False))
    again = memo.read(reader, ["p1"], [ORG])
    assert {(g.actor, bool(g.permit)) for g in again} == {(ORG, True), ("*", False)}
    writer.execute("UPDATE consent_grant SET permit = 0 WHERE actor = ?", (ORG,))
    assert {bool(g.permit) for g in memo.read(reader, ["p1"], [ORG])} == {False}
    writer.execute("DELETE FROM consent_grant")
    assert memo.read(reader, ["p1"], [ORG]) == []
    assert memo.read(reader, ["p1"], None) == []


def test_other_commits_keep_what_was_read(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path / "fhir.sqlite3")
    memo = GrantMemo()
    _write(writer, 0, _grant("p1", ORG))
    first = memo.read(reader, ["p1"], [ORG])
    writer.execute("CREATE TABLE other (x)")
    writer.execute("INSERT INTO other VALUES (1)")  # an AuditEvent, a pushed visit...
    _write(writer, 1, _grant("p2", ORG))  # another patient's Consent
    assert memo.read(reader, ["p1"], [ORG]) is first
    assert [g.patient for g in memo.read(reader, ["p1", "p2"], [ORG])] == ["p1", "p2"]


def test_the_memo_is_shared_by_connections_and_callers_apart(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path / "fhir.sqlite3")
    other_reader = sqlite3.connect(tmp_path / "fhir.sqlite3", isolation_level=None)
    memo = GrantMemo()
    _write(writer, 0, _grant("p1", ORG))
    _write(writer, 1, _grant("p1", "Organization/y"))
    mine = memo.read(reader, ["p1"], [ORG])
    theirs = memo.read(other_reader, ["p1"], ["Organization/y"])
    assert [g.actor for g in mine] == [ORG]
    assert [g.actor for g in theirs] == ["Organization/y"]  # nothing of another caller's
    _write(writer, 2, _grant("p1", ORG, permit=False))  # read by any connection next
    assert len(memo.read(other_reader, ["p1"], [ORG])) == 2
    assert len(memo.read(reader, ["p1"], [ORG])) == 2

"""The SQLite store remembers the Consent grants it read only while nothing is committed
(``storage.sqlite.consent_sql.GrantMemo``): a Consent written by another connection (another
worker process, or this process's writer) is read by the next query."""

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


def test_grants_are_read_again_after_any_commit(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path / "fhir.sqlite3")
    memo = GrantMemo()
    _write(writer, 0, _grant("p1", ORG))
    _write(writer, 1, _grant("p1", "Organization/other"))
    first = memo.read(reader, ["p1"], [ORG])
    assert [g.actor for g in first] == [ORG]  # naming the caller only
    assert memo.read(reader, ["p1"], [ORG]) is first  # nothing committed: remembered
    _write(writer, 2, _grant("p1", "*", permit=False))
    again = memo.read(reader, ["p1"], [ORG])
    assert {(g.actor, bool(g.permit)) for g in again} == {(ORG, True), ("*", False)}
    writer.execute("DELETE FROM consent_grant")
    assert memo.read(reader, ["p1"], [ORG]) == []
    assert memo.read(reader, ["p1"], None) == []

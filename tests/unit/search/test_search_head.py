"""The page of a starts-with string search read from ``search_string_head`` (the rows of a
value's first characters in ``rid`` order): the same pages as the list and the walk, read in
proportion to the page, chosen where it reads less, and kept from callers whose visibility
restricts the rows."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.model import SearchQuery, Visibility
from fhir_server.storage.sqlite import search_sql
from fhir_server.storage.sqlite.schema import CORE_SCHEMA_SQL
from fhir_server.storage.sqlite.search_tables import SCHEMA_SQL
from tests.unit.search.search_builders import Database, patient, registry, unions
from tests.unit.search.search_builders import query as search_query
from tests.unit.search.test_search_pages import _pages as _all_pages
from tests.unit.search.test_search_pages import _people, _steps

_HEAD_PAGE = search_sql._head_page
HEAD_QUERIES = [
    ("Patient", "name=nguyen&_count=7"),
    ("Patient", "name=ng&_count=4"),
    ("Patient", "name=nguyen thi&_count=3"),
    ("Patient", "name=nguyen&birthdate=ge1990&_count=5"),
    ("Patient", "name=le&birthdate=ge1970&_count=6"),
    ("Patient", "family=tr&_count=5"),
    ("Patient", "given=g3&_count=2"),
    ("Patient", "name=nguyen&_count=5&_revinclude=Observation:subject"),
    ("Patient", "name=zz&_count=5"),  # no rows: the list, never the head
]


def _twins(db: Database) -> None:
    """Patients with two names that fold alike (two rows of one folded value, a resource to
    be read once), a deleted one whose rows stay, and a Practitioner of the same name (rows
    of the same parameter code, of another type)."""
    for number in range(6):
        db.add(patient(f"twin{number}", name=[{"family": "Nguyễn", "given": ["An"]},
                                                {"family": "Nguyen", "given": ["An"]},
                                                {"text": "NGUYEN AN"}]))
    gone = db.add(patient("gone", name=[{"family": "Nguyễn"}]))
    db.conn.execute("UPDATE resources SET deleted = 1 WHERE rid = ?", (gone,))
    db.add({"resourceType": "Practitioner", "id": "doctor",
            "name": [{"family": "Nguyễn", "given": ["Bác"]}]})


@pytest.fixture(scope="module")
def db() -> Database:
    database = Database()
    _people(database, 0, 40)
    _twins(database)
    _people(database, 40, 40)
    return database


def _pages(db: Database, kind: str, text: str) -> Iterator[list[str]]:
    """Every page forward and back, with its included resources."""
    return _all_pages(db, kind, text, included=True)


def _heads(monkeypatch: pytest.MonkeyPatch, plan: str) -> list[bool]:
    """Set the plan (``head``: wherever it applies; ``none``: never); returns the list of
    whether each search read its page from the head."""
    used: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        found = None if plan == "none" else _HEAD_PAGE(*args, **kwargs)
        used.append(found is not None)
        return found

    monkeypatch.setattr(search_sql, "_head_page", spy)
    monkeypatch.setattr(search_sql, "_LIST_ROW", 10**6 if plan == "head" else 3)
    monkeypatch.setattr(search_sql, "_MATCH_ROW", 0 if plan == "head" else 12)
    return used


@pytest.mark.parametrize(("kind", "text"), HEAD_QUERIES, ids=[t for _, t in HEAD_QUERIES])
@pytest.mark.parametrize("lead", ["listed", "walked"])
def test_the_head_gives_the_pages_the_list_and_the_walk_give(
    db: Database, kind: str, text: str, lead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_sql, "candidates",
                        lambda conn, query: 10**6 if lead == "listed" else 1)
    _heads(monkeypatch, "none")
    before = list(_pages(db, kind, text))
    used = _heads(monkeypatch, "head")
    assert list(_pages(db, kind, text)) == before
    assert used and all(used) == ("zz" not in text)
    pages = [page for page in before if page[:1] not in (["back"], ["included"])]
    matched = [ident for page in pages for ident in page]
    assert len(matched) == len(set(matched))  # each resource once
    assert "gone" not in matched and "doctor" not in matched


def test_twins_are_read_once_and_the_practitioner_by_its_own_type(db: Database) -> None:
    twins = [f"twin{number}" for number in range(6)]
    assert db.ids("Patient", "name=nguyen an&_count=20") == twins
    assert db.ids("Practitioner", "name=nguy") == ["doctor"]


def test_the_page_from_the_head_sorts_nothing_and_stops_at_the_page(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _heads(monkeypatch, "head")
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        db.search("Patient", "name=nguyen&birthdate=ge1990&_count=5")
    finally:
        db.conn.set_trace_callback(None)
    page = next(sql for sql in statements if sql.startswith("SELECT * FROM (SELECT h.rid"))
    plan = [row[3] for row in db.conn.execute(f"EXPLAIN QUERY PLAN {page}")]
    assert plan[0] == "SEARCH h USING COVERING INDEX search_string_head (param=? AND <expr>=?)"
    assert not any("TEMP B-TREE" in step for step in plan)


def test_a_page_from_the_head_reads_as_much_in_a_store_four_times_larger(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _heads(monkeypatch, "head")
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 40)
    database = Database()
    _people(database, 0, 150)
    text = "name=nguyen&birthdate=ge1970&_count=5"
    small = _steps(database.conn, lambda: database.search("Patient", text))
    _people(database, 150, 450)
    large = _steps(database.conn, lambda: database.search("Patient", text))
    assert all(used)
    assert large <= small * 1.5 + 5, (small, large)


def test_the_head_is_read_where_it_reads_less_than_the_list(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the walk's bound, the head is read when its rows, as many as the page needs of
    the lead's, cost less than the lead's whole list: a head most of whose rows match
    (``name=ng``, ``name=nguyen``), not one of which a rare value holds a few (``name=nguyen
    thi`` when the head ``ng`` is mostly other names)."""
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 10**6)
    used = _heads(monkeypatch, "auto")
    database = Database()
    _people(database, 0, 600)  # 240 Nguyễn, 120 of them Nguyễn Thị; 3 rows each
    database.add(patient("rare", name=[{"family": "Nguyễn Thị Zẻ"}]))
    for text, head in [("name=nguyen&_count=5", True), ("name=ng&_count=5", True),
                       ("name=nguyen thi z&_count=5", False)]:
        used.clear()
        database.search("Patient", text)
        assert used == [head], text


def test_a_caller_whose_visibility_restricts_rows_keeps_the_plans_of_before(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _heads(monkeypatch, "head")
    query = search_query("Patient", "name=nguyen&_count=3")
    bound = dataclasses.replace(query, visibility=Visibility(patient="p5"))
    found = search_sql.run_search(db.conn, bound, registry(), unions())
    assert used == [False]
    assert [stored.id for stored in found.matches] == ["p5"]
    everything: SearchQuery = dataclasses.replace(query, visibility=Visibility())
    search_sql.run_search(db.conn, everything, registry(), unions())
    assert used == [False, True]


def test_without_the_head_index_the_pages_are_the_same(
    db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bulk load drops the value indexes and builds them at its end (``DEFERRABLE_INDEXES``):
    a search in between reads the same pages, more slowly."""
    _heads(monkeypatch, "head")
    copy = sqlite3.connect(tmp_path / "copy.sqlite3", isolation_level=None)
    db.conn.backup(copy)
    without = Database.__new__(Database)
    without.conn, without.clock = copy, 0
    before = {text: list(_pages(db, kind, text)) for kind, text in HEAD_QUERIES}
    copy.execute("DROP INDEX search_string_head")
    for kind, text in HEAD_QUERIES:
        assert list(_pages(without, kind, text)) == before[text]
    copy.close()
    assert "search_string_head" in CORE_SCHEMA_SQL + SCHEMA_SQL

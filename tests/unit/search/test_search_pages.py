"""A page costs in proportion to the page: the two plans of ``search_sql._page`` agree, and the
walk in page order reads about as much for a store four times larger."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.storage.sqlite import search_sql
from tests.unit.search.search_builders import LOINC, Database, observation, patient
from tests.unit.search.search_builders import query as search_query

FAMILIES = ["Nguyễn", "Trần", "Lê", "Nguyễn Thị", "Phạm"]


def _people(db: Database, start: int, count: int) -> None:
    """Patients of several families (some without a birth date), each with observations of
    dates of several precisions (some without a date or a value)."""
    for number in range(start, start + count):
        fields: dict[str, Any] = {
            "name": [{"family": FAMILIES[number % 5], "given": [f"G{number % 7}"]}],
            "gender": "female" if number % 3 else "male",
        }
        if number % 4:
            fields["birthDate"] = f"{1950 + number % 60}-0{1 + number % 9}-1{number % 10}"
        else:
            fields.pop("birthDate", None)
        person = patient(f"p{number}", **fields)
        if not number % 4:
            del person["birthDate"]
        db.add(person)
        for visit in range(number % 3):
            when: str | None = [f"{1990 + number % 30}-0{1 + number % 9}-1{number % 10}",
                                f"{1990 + number % 29}", None][visit]
            extra: dict[str, Any] = {"subject": {"reference": f"Patient/p{number}"},
                                     "effectiveDateTime": when}
            if when is None:
                del extra["effectiveDateTime"]
            if number % 5 == 0:
                extra["valueQuantity"] = None
            item = observation(f"o{number}-{visit}", **extra)
            db.add({key: value for key, value in item.items() if value is not None})


@pytest.fixture(scope="module")
def db() -> Database:
    database = Database()
    _people(database, 0, 60)
    return database


QUERIES = [
    ("Patient", "name=nguyen&_count=7"),
    ("Patient", "name=nguyen&birthdate=ge1990&_count=5"),
    ("Patient", f"_has:Observation:patient:code={LOINC}|8867-4&_count=4"),
    ("Patient", "birthdate:missing=true&_count=3"),
    ("Patient", "_sort=-birthdate&_count=6"),
    ("Patient", "gender=female&_sort=-family&_count=5"),
    ("Patient", "_sort=-name&_count=5"),
    ("Patient", "_sort=birthdate&_count=8"),
    ("Observation", "_sort=-date&_count=7"),
    ("Observation", f"code={LOINC}|8867-4&_sort=-date&_count=5"),
    ("Observation", "subject:Patient.name=tran&_count=4"),
    ("Observation", "value-quantity:missing=true&_count=3"),
    ("Observation", "_sort=-_id&_count=9"),
]


def _pages(db: Database, kind: str, text: str, included: bool = False) -> Iterator[list[str]]:
    """Every page forward (with its included resources when ``included``), then every page
    again following the previous links back."""
    found = db.search(kind, text)
    forward = [found]
    while forward[-1].next_cursor:
        forward.append(db.search(kind, f"{text}&_cursor={forward[-1].next_cursor}"))
    for page in forward:
        yield [stored.id for stored in page.matches]
        if included:
            yield ["included", *sorted(stored.id for stored in page.included)]
    back = forward[-1]
    while back.prev_cursor:
        back = db.search(kind, f"{text}&_cursor={back.prev_cursor}")
        yield ["back", *(stored.id for stored in back.matches)]


@pytest.mark.parametrize(("kind", "text"), QUERIES, ids=[f"{k}?{t}" for k, t in QUERIES])
def test_walk_in_page_order_gives_the_pages_the_listed_matches_give(
    db: Database, kind: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = list(_pages(db, kind, text))
    total = db.search(kind, f"{text}&_total=accurate").total
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 1)
    assert list(_pages(db, kind, text)) == listed
    assert db.search(kind, f"{text}&_total=accurate").total == total
    assert sum(len(page) for page in listed if page[:1] != ["back"]) == total


def _steps(conn: sqlite3.Connection, run: Any) -> int:
    """SQLite virtual machine steps (in hundreds) that ``run()`` takes."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        run()
    finally:
        conn.set_progress_handler(None, 0)
    return count[0]


@pytest.mark.parametrize("text", ["Patient?name=nguyen", "Observation?_sort=-date",
                                  f"Observation?code={LOINC}|8867-4&_sort=-date",
                                  "Patient?name=nguyen&birthdate=ge1970",
                                  f"Patient?_has:Observation:patient:code={LOINC}|8867-4",
                                  "Patient?_has:Observation:patient:_id=o7-1",
                                  "Patient?gender=female&_revinclude=Observation:patient"])
def test_a_page_reads_as_much_in_a_store_four_times_larger(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 40)
    kind, query = text.split("?", 1)
    database = Database()
    _people(database, 0, 150)
    small = _steps(database.conn, lambda: database.search(kind, query))
    _people(database, 150, 450)
    large = _steps(database.conn, lambda: database.search(kind, query))
    assert large <= small * 1.5 + 5, (small, large)


def test_with_listed_matches_the_cost_grows_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter-check of the test above: the plan of few matches (list, then order) does
    grow with the matches, so the test above would see a plan that did."""
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 10**6)
    database = Database()
    _people(database, 0, 150)
    text = f"code={LOINC}|8867-4&_sort=-date"
    small = _steps(database.conn, lambda: database.search("Observation", text))
    _people(database, 150, 450)
    large = _steps(database.conn, lambda: database.search("Observation", text))
    assert large > small * 2.5, (small, large)


def test_the_walks_sort_nothing_but_ties(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 1)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        for kind, text in [("Patient", "name=nguyen"), ("Observation", "_sort=-date"),
                           ("Patient", "_sort=-family")]:
            db.search(kind, text)
    finally:
        db.conn.set_trace_callback(None)
    plans = [row[3] for sql in statements if sql.startswith("SELECT * FROM")
             for row in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    assert plans
    assert "USE TEMP B-TREE FOR ORDER BY" not in plans


def test_the_walk_begins_where_it_reads_fewer_rows_than_the_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Past ``2 * sqrt(count * size)`` rows of the lead a walk of ``count * size / matches``
    rows is the shorter read (a bound greater by ``sqrt(2)`` for each further clause, up to
    two, which the walk's rows must pass too); the size of a type of a database file is
    counted once and remembered."""
    monkeypatch.setattr(search_sql, "LEAST_CANDIDATES", 1)
    database = Database()
    _people(database, 0, 100)
    query = search_query("Patient", "_count=20")
    assert search_sql.candidates(database.conn, query) == 88  # 2 * isqrt(20 * 100)
    narrowed = search_query("Patient", "_count=20&name=x&birthdate=ge1990")
    assert search_sql.candidates(database.conn, narrowed) == 126  # 2 * isqrt(20 * 100 * 2)
    narrowed = search_query("Patient", "_count=20&name=x&birthdate=ge1990&gender=male&active=true")
    assert search_sql.candidates(database.conn, narrowed) == 178  # at most twice: * 4
    on_file = sqlite3.connect(tmp_path / "copy.sqlite3")
    database.conn.backup(on_file)
    assert search_sql.candidates(on_file, query) == 88
    on_file.execute("DELETE FROM resources WHERE rid > 30")
    assert search_sql.candidates(on_file, query) == 88  # remembered
    monkeypatch.setattr(search_sql, "_SIZE_TTL_S", -1.0)
    assert search_sql.candidates(on_file, query) < 88


def _counts_of_lists(database: Database, kind: str, text: str) -> tuple[list[str], int]:
    """The page's ids and the number of counts of a lead's list its search ran."""
    statements: list[str] = []
    database.conn.set_trace_callback(statements.append)
    try:
        ids = database.ids(kind, text)
    finally:
        database.conn.set_trace_callback(None)
    return ids, sum(sql.startswith("SELECT COUNT(*) FROM (SELECT 1 FROM") for sql in statements)


def test_the_count_of_a_lead_is_remembered_and_a_stale_one_changes_no_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The count that chooses a plan is reused for ``_COUNT_TTL_S`` per database file: the
    same search again counts nothing, and after the list has grown past the bound the
    remembered count still gives the page a fresh count gives (a slower plan, not another
    answer)."""
    monkeypatch.setattr(search_sql, "_counts", {})
    monkeypatch.setattr(search_sql, "LEAST_CANDIDATES", 1)
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 40)
    database = Database(str(tmp_path / "store.sqlite3"))
    _people(database, 0, 60)
    text = "name=nguyen&birthdate=ge1970&_count=5"
    first, counted = _counts_of_lists(database, "Patient", text)
    assert counted == 1
    assert next(iter(search_sql._counts.values()))[0] < 40  # the page from the list
    again, counted = _counts_of_lists(database, "Patient", text)
    assert (again, counted) == (first, 0)
    _people(database, 1000, 200)  # the Nguyễn rows now pass the bound of 40
    stale, counted = _counts_of_lists(database, "Patient", text)
    assert counted == 0
    monkeypatch.setattr(search_sql, "_COUNT_TTL_S", -1.0)
    fresh, counted = _counts_of_lists(database, "Patient", text)
    assert counted == 1
    assert stale == fresh == first  # the page is the lowest rids, which did not change
    assert next(iter(search_sql._counts.values()))[0] == 40  # walks from now on


def test_counts_of_leads_are_kept_for_files_only_and_at_most_counts_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(search_sql, "_counts", {})
    monkeypatch.setattr(search_sql, "_COUNTS_KEPT", 2)
    in_memory = Database()
    _people(in_memory, 0, 20)
    for name in ("nguyen", "tran", "le"):
        assert _counts_of_lists(in_memory, "Patient", f"name={name}")[1] == 1
    assert search_sql._counts == {}
    on_file = Database(str(tmp_path / "store.sqlite3"))
    _people(on_file, 0, 20)
    for name in ("nguyen", "tran", "le"):
        on_file.ids("Patient", f"name={name}")
    assert len(search_sql._counts) == 2
    assert _counts_of_lists(on_file, "Patient", "name=le")[1] == 0  # the newest kept
    assert _counts_of_lists(on_file, "Patient", "name=nguyen")[1] == 1  # the oldest dropped


PATIENTS_QUERIES = [
    *QUERIES,
    ("Patient", "name=nguyen&_revinclude=Observation:subject&_count=3"),
    ("Observation", "_include=Observation:subject&_count=4"),
]


@pytest.mark.parametrize(("kind", "text"), PATIENTS_QUERIES)
def test_each_resource_of_a_page_names_the_patients_of_its_compartments(
    db: Database, kind: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the page's AuditEvents name (``StoredResource.patients``, read with the page by
    ``compartments_of``) is the compartment rows as indexed, for matches and included
    resources alike, and none for a resource in no compartment; on both plans and on every
    page."""
    indexed: dict[str, set[str]] = {}
    for reference, named in db.conn.execute(
            "SELECT r.type || '/' || r.id, c.patient FROM search_compartment c "
            "JOIN resources r ON r.rid = c.rid"):
        indexed.setdefault(reference, set()).add(named)
    for least in (10**9, 1):  # the page from the lead's list, then the walk
        monkeypatch.setattr(search_sql, "LEAST_CANDIDATES", least)
        found = db.search(kind, text)
        pages = [found]
        while pages[-1].next_cursor:
            pages.append(db.search(kind, f"{text}&_cursor={pages[-1].next_cursor}"))
        seen = [stored for page in pages for stored in (*page.matches, *page.included)]
        assert seen
        for stored in seen:
            reference = f"{stored.resource_type}/{stored.id}"
            assert stored.patients == frozenset(indexed.get(reference, ()))
    assert any(indexed.get(f"Patient/p{n}") == {f"p{n}"} for n in range(60))


def test_a_store_connection_reads_its_database_file_once(tmp_path: Path) -> None:
    """``_database_path`` runs its ``PRAGMA`` once per ``StoreConnection`` (the store's own),
    every time on another connection; "" for a database in memory."""
    for factory, pragmas in ((search_sql.StoreConnection, 1), (sqlite3.Connection, 3)):
        conn = sqlite3.connect(tmp_path / "store.sqlite3", factory=factory)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        found = {search_sql._database_path(conn) for _ in range(3)}
        assert found == {str(tmp_path / "store.sqlite3")}
        assert sum("PRAGMA database_list" in sql for sql in statements) == pragmas
        conn.close()
    in_memory = sqlite3.connect(":memory:", factory=search_sql.StoreConnection)
    assert search_sql._database_path(in_memory) == search_sql._database_path(in_memory) == ""

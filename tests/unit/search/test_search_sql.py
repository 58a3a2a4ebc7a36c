"""The SQLite search compiler and executor, on an in-memory database."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_server.errors import BadRequest, Gone
from fhir_server.search import cursor as cursor_module
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.model import Include
from fhir_server.storage.sqlite import search_sql
from fhir_server.storage.sqlite.search_sql import _filter, find_ids, include_sql, run_search
from fhir_server.storage.sqlite.search_tables import check_param_keys
from tests.unit.search.search_builders import (
    BLOOD_PRESSURE,
    Database,
    observation,
    patient,
    query,
    registry,
    unions,
)
from tests.unit.search.test_search_matching import CASES


@pytest.mark.parametrize(("case", "resource", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_sql_applies_r4_search_semantics(
    case: str, resource: dict[str, Any], text: str, expected: bool
) -> None:
    db = Database()
    db.add(resource)
    db.add(patient("other", name=[{"family": "Trần"}], birthDate="1970", gender="female"))
    found = resource["id"] in db.ids(resource["resourceType"], text)
    assert found is expected


def test_registered_codes_have_distinct_param_keys() -> None:
    codes = [definition.code for definition in registry()]
    check_param_keys([*codes, *(str(position) for position in range(8))])


def test_deleted_resource_never_matches_and_its_rows_are_gone() -> None:
    db = Database()
    db.add(patient("p1"))
    db.delete("Patient", "p1")
    assert db.ids("Patient", "name=nguyen") == []
    assert db.conn.execute("SELECT COUNT(*) FROM search_string").fetchone()[0] == 0


def test_update_replaces_the_index_rows() -> None:
    db = Database()
    db.add(patient("p1"))
    db.add(patient("p1", name=[{"family": "Lê"}]))
    assert db.ids("Patient", "family=nguyen") == []
    assert db.ids("Patient", "family=le") == ["p1"]


def test_find_ids_returns_every_match_without_paging() -> None:
    db = Database()
    for number in range(30):
        db.add(patient(f"p{number}"))
    assert len(find_ids(db.conn, query("Patient", "name=nguyen"))) == 30


def test_sort_by_date_descending_then_id() -> None:
    db = Database()
    for ident, when in [("a", "2024-01-01"), ("b", "2024-03-01"), ("c", "2024-02-01")]:
        db.add(observation(ident, effectiveDateTime=when))
    db.add(observation("d", effectiveDateTime=None))
    assert db.ids("Observation", "patient=p1&_sort=-date") == ["b", "c", "a", "d"]
    assert db.ids("Observation", "patient=p1&_sort=date") == ["d", "a", "c", "b"]
    assert db.ids("Observation", "_sort=-_id") == ["d", "c", "b", "a"]


@pytest.mark.parametrize("sort", ["", "&_sort=-date", "&_sort=status,-_lastUpdated"])
def test_keyset_pages_cover_every_match_once_forward_and_back(sort: str) -> None:
    db = Database()
    for number in range(23):
        db.add(observation(f"o{number:02d}", effectiveDateTime=f"2024-01-{number % 9 + 1:02d}"))
    text = f"patient=p1&_count=5{sort}"
    pages = [db.search("Observation", text)]
    while pages[-1].next_cursor:
        pages.append(db.search("Observation", f"{text}&_cursor={pages[-1].next_cursor}"))
    seen = [stored.id for page in pages for stored in page.matches]
    assert len(pages) == 5 and sorted(seen) == sorted(set(seen)) and len(seen) == 23
    assert pages[0].prev_cursor is None
    back = db.search("Observation", f"{text}&_cursor={pages[2].prev_cursor}")
    assert [s.id for s in back.matches] == [s.id for s in pages[1].matches]
    first = db.search("Observation", f"{text}&_cursor={back.prev_cursor}")
    assert [s.id for s in first.matches] == [s.id for s in pages[0].matches]
    assert first.prev_cursor is None
    again = db.search("Observation", f"{text}&_cursor={back.next_cursor}")
    assert [s.id for s in again.matches] == [s.id for s in pages[2].matches]


def test_paging_survives_concurrent_writes() -> None:
    db = Database()
    for number in range(10):
        db.add(patient(f"p{number}"))
    first = db.search("Patient", "_count=5")
    db.add(patient("new"))  # a write between pages neither shifts nor repeats rows
    second = db.search("Patient", f"_count=5&_cursor={first.next_cursor}")
    assert [s.id for s in second.matches] == [f"p{n}" for n in range(5, 10)]


def test_tampered_cursor_is_a_bad_request() -> None:
    db = Database()
    db.add(patient())
    cursor = db.search("Patient", "_count=0&_total=accurate").next_cursor or "eyJ4IjoxfQ.AAAA"
    with pytest.raises(BadRequest) as raised:
        db.search("Patient", f"_cursor={cursor[:-2]}xx")
    assert raised.value.message_id == "MSG_CURSOR_INVALID"


def test_cursor_of_another_query_is_a_bad_request() -> None:
    db = Database()
    for number in range(3):
        db.add(patient(f"p{number}"))
    page = db.search("Patient", "_count=1&gender=male")
    with pytest.raises(BadRequest):
        db.search("Patient", f"_count=1&gender=female&_cursor={page.next_cursor}")


def test_expired_cursor_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database()
    for number in range(3):
        db.add(patient(f"p{number}"))
    page = db.search("Patient", "_count=1")
    monkeypatch.setattr(cursor_module, "CURSOR_LIFETIME_S", -1)
    with pytest.raises(Gone) as raised:
        db.search("Patient", f"_count=1&_cursor={page.next_cursor}")
    assert raised.value.message_id == "MSG_CURSOR_EXPIRED"


def test_total_only_when_asked() -> None:
    db = Database()
    for number in range(7):
        db.add(patient(f"p{number}"))
    assert db.search("Patient", "_count=2").total is None
    assert db.search("Patient", "_count=2&_total=accurate").total == 7
    assert db.search("Patient", "_summary=count").matches == ()


def test_include_and_revinclude_fetch_referenced_and_referring_resources() -> None:
    db = Database()
    db.add({"resourceType": "Organization", "id": "bv", "name": "Bệnh viện Bạch Mai"})
    db.add(patient("p1", managingOrganization={"reference": "Organization/bv"}))
    db.add(observation("o1"))
    db.add(observation("o2"))
    result = db.search(
        "Patient", "_id=p1&_include=Patient:organization&_revinclude=Observation:subject"
    )
    assert [s.id for s in result.matches] == ["p1"]
    assert sorted(s.id for s in result.included) == ["bv", "o1", "o2"]


def test_include_iterate_follows_included_resources() -> None:
    db = Database()
    db.add({"resourceType": "Organization", "id": "bv"})
    db.add(patient("p1", managingOrganization={"reference": "Organization/bv"}))
    db.add(observation("o1"))
    plain = db.search("Observation", "_include=Observation:subject&_include=Patient:organization")
    assert sorted(s.id for s in plain.included) == ["p1"]
    text = "_include=Observation:subject&_include:iterate=Patient:organization"
    assert sorted(s.id for s in db.search("Observation", text).included) == ["bv", "p1"]


def test_include_wildcard() -> None:
    db = Database()
    db.add(patient("p1"))
    db.add(observation("o1", encounter={"reference": "Encounter/e1"}))
    db.add({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}})
    result = db.search("Observation", "_include=Observation:*")
    assert sorted(s.id for s in result.included) == ["e1", "p1"]


def test_chained_and_reverse_chained_parameters() -> None:
    db = Database()
    db.add({"resourceType": "Organization", "id": "bv", "name": "Bạch Mai"})
    db.add(patient("p1", managingOrganization={"reference": "Organization/bv"}))
    db.add(patient("p2", name=[{"family": "Trần"}]))
    db.add(observation("o1"))
    assert db.ids("Observation", "subject:Patient.name=nguyen") == ["o1"]
    assert db.ids("Observation", "patient.organization.name=bach") == ["o1"]
    assert db.ids("Observation", "patient.name=tran") == []
    assert db.ids("Patient", "_has:Observation:patient:code=8867-4") == ["p1"]
    nested = "_has:Patient:organization:_has:Observation:patient:status=final"
    assert db.ids("Organization", nested) == ["bv"]


def test_compartment_search_sees_only_that_patients_resources() -> None:
    db = Database()
    db.add(observation("o1"))
    db.add(observation("o2", subject={"reference": "Patient/p2"}))
    base = query("Observation", "")
    from dataclasses import replace

    result = run_search(db.conn, replace(base, compartment=("Patient", "p2")), registry())
    assert [s.id for s in result.matches] == ["o2"]


def test_system_search_over_several_types() -> None:
    db = Database()
    db.add(patient("p1"))
    db.add(observation("o1"))
    db.add({"resourceType": "Organization", "id": "x"})
    assert sorted(db.ids(None, "_type=Patient,Observation")) == ["o1", "p1"]


@pytest.mark.parametrize(
    "text",
    [
        "name=x'); DROP TABLE resources; --",
        "identifier=a' OR '1'='1|b",
        "_id=' OR 1=1 --",
        "_sort=-date",
    ],
)
def test_values_are_bound_never_spliced_into_sql(text: str) -> None:
    db = Database()
    db.add(patient("p1"))
    db.search("Patient", text.replace("-date", "-birthdate"))
    assert db.ids("Patient", "name=nguyen") == ["p1"]
    assert db.search("Patient", "name=x' OR 1=1 --").matches == ()


def _coded(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]}


def test_union_parameters_keep_no_rows_and_search_their_members_rows() -> None:
    """combo-code is code | component-code: the store keeps only the members' rows."""
    from fhir_server.storage.sqlite.search_tables import param_key

    db = Database()
    db.add(observation("heart", code=_coded("8867-4", "Heart rate")))
    db.add(observation("bp", code=_coded("85354-9", "Blood pressure"), valueQuantity=None,
                       component=[{"code": _coded("8480-6", "Systolic"),
                                   "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
                                  {"code": _coded("9279-1", "Respiratory rate")}]))
    db.add(observation("none", code=None, valueQuantity=None))
    combo = [param_key(code) for code in ("combo-code", "combo-value-quantity")]
    for table in ("search_token", "search_text", "search_quantity"):
        stored = db.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE param IN (?, ?)", combo)
        assert stored.fetchone()[0] == 0
    assert db.ids("Observation", "combo-code=8480-6") == ["bp"]
    assert db.ids("Observation", "combo-code=85354-9,8867-4&_sort=_id") == ["bp", "heart"]
    assert db.ids("Observation", "combo-code:text=systol") == ["bp"]
    assert db.ids("Observation", "combo-code:not=8480-6&_sort=_id") == ["heart", "none"]
    assert db.ids("Observation", "combo-code:missing=true") == ["none"]
    assert db.ids("Observation", "combo-value-quantity=gt100") == ["bp"]
    assert db.ids("Observation", "combo-value-quantity=72") == ["heart"]
    # Sorted by the lowest (highest) code of each, code and components together: bp has
    # 8480-6 and 9279-1 in its components, around heart's 8867-4 and its own 85354-9.
    assert db.ids("Observation", "combo-code:missing=false&_sort=combo-code") == ["bp", "heart"]
    assert db.ids("Observation", "combo-code:missing=false&_sort=-combo-code") == ["bp", "heart"]


def test_rows_of_a_union_written_before_are_harmless() -> None:
    """A store written before the unions holds combo-code rows; they are simply not read."""
    from fhir_server.search.indexing import index_resource
    from fhir_server.storage.sqlite.search_tables import replace_index

    db = Database()
    rid = db.add(observation("old"))
    replace_index(db.conn, rid, index_resource(observation("old"), registry()))  # all rows
    db.add(observation("new"))
    assert db.ids("Observation", "combo-code=8867-4&_sort=_id") == ["new", "old"]
    assert db.ids("Observation", "combo-code:not=8867-4") == []


def _bp_and_heart(db: Database) -> None:
    db.add(observation("heart"))  # code 8867-4, 72 /min: the Observation is the element
    db.add(observation("bp", code=_coded("85354-9", "Blood pressure"), valueQuantity=None,
                       component=BLOOD_PRESSURE))  # 8480-6 120, 8462-4 80: two elements
    db.add(observation("none", valueQuantity=None))  # a code and no value: no element


def test_a_composite_union_keeps_no_elements_and_searches_its_members() -> None:
    """combo-code-value-quantity is code-value-quantity (the Observation, through its code
    and value-quantity rows) or component-code-value-quantity (its components' elements)."""
    from fhir_server.storage.sqlite.search_tables import param_key

    db = Database()
    _bp_and_heart(db)
    kept = db.conn.execute("SELECT COUNT(*) FROM search_composite WHERE param = ?",
                           [param_key("combo-code-value-quantity")]).fetchone()[0]
    assert kept == 0
    assert db.ids("Observation", "combo-code-value-quantity=8867-4$72") == ["heart"]
    assert db.ids("Observation", "combo-code-value-quantity=8480-6$120") == ["bp"]
    assert db.ids("Observation", "combo-code-value-quantity=8480-6$80") == []  # not across
    assert db.ids("Observation", "combo-code-value-quantity=85354-9$120") == []
    assert db.ids("Observation",
                  "combo-code-value-quantity=8462-4$lt100,8867-4$gt70&_sort=_id") == [
        "bp", "heart"]
    assert db.ids("Observation", "combo-code-value-quantity:missing=true") == ["none"]
    assert db.ids("Observation",
                  "combo-code-value-quantity:missing=false&_sort=_id") == ["bp", "heart"]


def test_elements_of_a_composite_union_written_before_are_harmless() -> None:
    """A store written before keeps combo-code-value-quantity's elements; they are not read,
    and the members' rows, which it has as well, give the same answers."""
    from fhir_server.search.indexing import index_resource
    from fhir_server.storage.sqlite.search_tables import replace_index

    db = Database()
    _bp_and_heart(db)
    for rid, in db.conn.execute("SELECT rid FROM resources").fetchall():
        stored = db.conn.execute("SELECT content FROM versions WHERE rid = ?", [rid])
        replace_index(db.conn, rid, index_resource(orjson.loads(stored.fetchone()[0]),
                                                   registry()))  # every row, as before
    assert db.conn.execute("SELECT COUNT(*) FROM search_composite").fetchone()[0] == 5
    assert db.ids("Observation", "combo-code-value-quantity=8480-6$120") == ["bp"]
    assert db.ids("Observation", "combo-code-value-quantity=8480-6$80") == []
    assert db.ids("Observation", "combo-code-value-quantity:missing=true") == ["none"]
    assert db.ids("Observation", "component-code-value-quantity=8480-6$120") == ["bp"]


def _plan(db: Database, sql: str, params: list[Any]) -> str:
    return " ".join(row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_reference_searches_read_the_target_first_index() -> None:
    db = Database()
    db.add(observation("o1", subject={"reference": "Patient/p1"}))
    db.add(observation("o2", subject={"reference": "http://other.vn/fhir/Organization/9"}))
    db.add(observation("o3", subject={"reference": "http://other.vn/canonical"}))
    assert db.ids("Observation", "subject=Patient/p1") == ["o1"]
    assert db.ids("Observation", "subject=http://other.vn/fhir/Organization/9") == ["o2"]
    assert db.ids("Observation", "subject=http://other.vn/canonical") == ["o3"]
    for text in ("subject=Patient/p1", "subject=http://other.vn/canonical"):
        where, params = _filter(query("Observation", text), {})
        plan = _plan(db, f"SELECT r.id FROM resources r WHERE {where}", params)
        assert "search_reference_target (id=? AND param=?" in plan
    assert sorted(db.ids("Observation", "subject:missing=false")) == ["o1", "o2", "o3"]
    assert db.ids("Observation", "subject:missing=true") == []
    # :missing names no target: each Observation's own rows are probed by rid.
    where, params = _filter(query("Observation", "subject:missing=false"), {})
    plan = _plan(db, f"SELECT r.id FROM resources r WHERE {where}", params)
    assert "search_reference USING PRIMARY KEY (rid=? AND param=?)" in plan
    assert "search_reference_target" not in plan


@pytest.mark.parametrize("reverse", [True, False], ids=["revinclude", "include"])
def test_include_steps_read_from_the_frontier_outwards(reverse: bool) -> None:
    db = Database()
    patient_rid = db.add(patient("p1"))
    db.add(patient("p2"))
    observation_rid = db.add(observation("o1", subject={"reference": "Patient/p1"}))
    db.add(observation("o2", subject={"reference": "Patient/p2"}))
    frontier = [patient_rid] if reverse else [observation_rid]
    sql, params = include_sql(registry(), Include("Observation", "subject"), frontier, reverse)
    assert [row[2] for row in db.conn.execute(sql, params)] == ["o1" if reverse else "p1"]
    steps = [row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    # The first step reads the frontier by its rids; nothing walks a whole resource type.
    first = "SEARCH t USING INTEGER PRIMARY KEY" if reverse else "SEARCH ref USING PRIMARY KEY"
    assert steps[0].startswith(first)
    assert not any(step.endswith("(type=?)") or step.startswith("SCAN r") for step in steps)
    if reverse:
        assert any("search_reference_target (id=? AND param=?" in step for step in steps)


def test_a_page_carries_the_patients_of_its_resources_as_indexed() -> None:
    """Matches and includes come with the patients of their compartments (what the page's
    AuditEvents name), equal to what the resource itself gives; a resource of no patient
    has none."""
    db = Database()
    db.add(patient("p1"))
    db.add(patient("p2", link=[{"other": {"reference": "Patient/p1"}, "type": "seealso"}]))
    db.add(observation("o1"))
    db.add(observation("o2", subject={"reference": "Patient/p2"},
                       performer=[{"reference": "Patient/p1"}]))
    db.add({"resourceType": "Organization", "id": "org1", "name": "BV"})
    found = db.search("Observation", "_include=Observation:subject&_include=Observation:performer")
    pages = [*found.matches, *found.included]
    assert {s.id for s in pages} == {"o1", "o2", "p1", "p2"}
    for stored in pages:
        assert stored.patients == compartment_patients(stored.resource(), registry())
    assert {s.id: s.patients for s in pages}["o2"] == {"p1", "p2"}
    (org,) = db.search("Organization", "name=bv").matches
    assert org.patients == frozenset()


def test_a_page_read_from_the_leads_list_is_the_walks_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``name=vu`` matches each Patient twice (family and whole name), half of them born
    since 1990: the page read from the name's list in ``rid`` order (stopped when full) is
    the page a walk of every Patient finds."""
    db = Database()
    for number in range(120):
        db.add(patient(f"p{number:03d}", name=[{"family": "Vũ", "given": ["Văn", "An"]}],
                       birthDate="1995" if number % 2 else "1980"))
    lead: tuple[str, list[object]] = (
        "SELECT rid FROM search_string WHERE param = ?", [search_sql.param_key("name")])
    assert search_sql._bounded_count(db.conn, lead, 1000) > 120  # rows, not Patients
    text = "name=vu&birthdate=ge1990&_count=10"
    listed = db.ids("Patient", text)
    monkeypatch.setattr(search_sql, "candidates", lambda conn, query: 1)
    walked = db.ids("Patient", text)
    assert listed == walked == [f"p{n:03d}" for n in range(1, 20, 2)]


def _references_of(db: Database, code: str) -> int:
    from fhir_server.storage.sqlite.search_tables import param_key

    return int(db.conn.execute("SELECT COUNT(*) FROM search_reference WHERE param = ?",
                               [param_key(code)]).fetchone()[0])


def _patients_and_subjects(db: Database) -> None:
    """Observations of a Patient (relative and absolute), of a Group, of a Patient named by
    identifier too, without subject; an AllergyIntolerance, whose ``patient`` is its own."""
    db.add({"resourceType": "Organization", "id": "bv", "name": "Bạch Mai"})
    db.add(patient("p1", managingOrganization={"reference": "Organization/bv"}))
    db.add(patient("p2", name=[{"family": "Trần"}]))
    db.add({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    db.add(observation("o1"))
    db.add(observation("o2", subject={"reference": "Patient/p2",
                                      "identifier": {"system": "urn:x", "value": "t2"}}))
    db.add(observation("og", subject={"reference": "Group/g1"}))
    db.add(observation("oa", subject={"reference": "http://other.vn/fhir/Patient/p1"}))
    db.add(observation("on", subject={"identifier": {"system": "urn:x", "value": "t9"}}))
    db.add(observation("ou", subject={"reference": "urn:uuid:0e7a0c3a-0000-4000-8000-0000"}))
    db.add(observation("o0", subject=None))
    db.add({"resourceType": "AllergyIntolerance", "id": "a1",
            "patient": {"reference": "Patient/p1"}})
    db.add({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p2"}})


def test_patient_is_searched_through_the_subject_rows_of_patients() -> None:
    """Observation ``patient`` is ``subject.where(resolve() is Patient)``: the store keeps no
    reference rows of it for Observations (AllergyIntolerance ``patient`` keeps its own), and
    every way of asking by ``patient`` reads ``subject``'s rows of Patients instead."""
    db = Database()
    _patients_and_subjects(db)
    assert _references_of(db, "patient") == 1  # the AllergyIntolerance's
    assert _references_of(db, "subject") == 6
    assert db.ids("Observation", "patient=p1&_sort=_id") == ["o1", "oa"]  # by id: as subject
    assert db.ids("Observation", "patient=Patient/p2") == ["o2"]
    assert db.ids("Observation", "patient=g1") == []
    assert db.ids("Observation", "subject=g1") == ["og"]
    assert db.ids("Observation", "patient=http://other.vn/fhir/Patient/p1") == ["oa"]
    assert db.ids("Observation", "patient:identifier=urn:x|t2") == ["o2"]
    assert db.ids("Observation", "patient:identifier=urn:x|t9") == []  # no Patient reference
    assert sorted(db.ids("Observation", "patient:missing=false")) == ["o1", "o2", "oa"]
    assert sorted(db.ids("Observation", "patient:missing=true")) == ["o0", "og", "on", "ou"]
    # Chains, reverse chains, includes, through patient (an absolute reference whose last
    # segments name a local Patient counts as subject's does).
    assert db.ids("Observation", "patient.name=nguyen&_sort=_id") == ["o1", "oa"]
    assert db.ids("Observation", "patient:Patient.name=tran") == ["o2"]
    assert db.ids("Observation", "patient.organization.name=bach&_sort=_id") == ["o1", "oa"]
    assert db.ids("Patient", "_has:Observation:patient:code=8867-4&_sort=_id") == ["p1", "p2"]
    assert db.ids("Group", "_has:Observation:subject:code=8867-4") == ["g1"]
    assert db.ids("Group", "_has:Observation:patient:code=8867-4") == []
    nested = "_has:Patient:organization:_has:Observation:patient:status=final"
    assert db.ids("Organization", nested) == ["bv"]
    included = db.search("Observation", "_id=o1,og&_include=Observation:patient").included
    assert [s.id for s in included] == ["p1"]
    revincluded = db.search("Patient", "_id=p1&_revinclude=Observation:patient").included
    assert sorted(s.id for s in revincluded) == ["o1", "oa"]
    wildcard = db.search("Observation", "_id=o2,og&_include=Observation:*").included
    assert sorted(s.id for s in wildcard) == ["g1", "p2"]
    # A clause over types where patient is an alias in some only (the parser takes only the
    # common parameters across types; the compiler asks each group of types on its own).
    from dataclasses import replace

    def across(types: tuple[str, ...], text: str) -> list[str]:
        both = replace(query("Observation", text), resource_type=None, types=types)
        return sorted(find_ids(db.conn, both, unions()))

    assert across(("Observation", "AllergyIntolerance"), "patient=p1") == ["a1", "o1", "oa"]
    assert across(("Observation", "Encounter"), "patient=p2") == ["e1", "o2"]
    assert across(("Observation", "AllergyIntolerance"), "patient:missing=true") == [
        "o0", "og", "on", "ou"]
    everything = replace(query("Observation", "patient=p1"), resource_type=None)
    assert sorted(find_ids(db.conn, everything, unions())) == ["a1", "o1", "oa"]
    assert db.ids("AllergyIntolerance", "patient=p1") == ["a1"]
    assert db.ids("Encounter", "patient.name=tran") == ["e1"]


def test_rows_of_an_alias_written_before_are_harmless() -> None:
    """A store written before the aliases holds Observations' patient rows (and Patients'
    phonetic rows): the same answers, with them and without."""
    from fhir_server.search.indexing import index_resource
    from fhir_server.storage.sqlite.search_tables import replace_index

    old, new = Database(), Database()
    _patients_and_subjects(old)
    _patients_and_subjects(new)
    for kind, id in old.conn.execute("SELECT type, id FROM resources").fetchall():
        rid, content = old.conn.execute(
            "SELECT r.rid, v.content FROM resources r JOIN versions v ON v.rid = r.rid "
            "WHERE r.type = ? AND r.id = ?", (kind, id)).fetchone()
        replace_index(old.conn, rid, index_resource(orjson.loads(content), registry()))
    assert _references_of(old, "patient") == 5  # o1, o2, oa, e1 and a1
    for kind, text in [("Observation", "patient=p1"), ("Observation", "patient:missing=true"),
                       ("Observation", "patient:missing=false"),
                       ("Observation", "patient.name=ng"),
                       ("Patient", "_has:Observation:patient:status=final"),
                       ("Patient", "phonetic=tr"), ("Patient", "_sort=-phonetic"),
                       ("Observation", "_include=Observation:patient"),
                       ("Patient", "_revinclude=Observation:patient")]:
        found = old.search(kind, f"{text}&_sort=_id")
        again = new.search(kind, f"{text}&_sort=_id")
        assert [s.id for s in found.matches] == [s.id for s in again.matches], text
        assert sorted(s.id for s in found.included) == sorted(s.id for s in again.included)


def test_a_duplicate_parameter_is_searched_through_its_twin() -> None:
    """Patient ``phonetic`` has ``name``'s expression: no rows of its own, the same answers,
    sorted too."""
    from fhir_server.storage.sqlite.search_tables import param_key

    db = Database()
    db.add(patient("p1"))
    db.add(patient("p2", name=[{"family": "Trần", "given": ["An"]}]))
    db.add(patient("p3", name=None))
    phonetic = db.conn.execute("SELECT COUNT(*) FROM search_string WHERE param = ?",
                               [param_key("phonetic")]).fetchone()[0]
    assert phonetic == 0
    assert db.ids("Patient", "phonetic=tr") == ["p2"]
    assert db.ids("Patient", "phonetic:exact=Trần") == ["p2"]
    assert db.ids("Patient", "phonetic:missing=true") == ["p3"]
    assert db.ids("Patient", "_sort=phonetic") == db.ids("Patient", "_sort=name")
    assert db.ids("Patient", "_sort=-phonetic") == db.ids("Patient", "_sort=-name")

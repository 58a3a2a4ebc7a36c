"""The MongoDB adapter's generated documents: index specifications, filters, documents."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.model import (
    Clause,
    DateValue,
    Modifier,
    ParamType,
    Prefix,
    ReferenceValue,
    SearchIndex,
    SearchQuery,
    StringValue,
    TokenValue,
)
from fhir_server.storage.mongo import documents as docs
from fhir_server.storage.mongo.filters import clause_filter, query_filter
from fhir_server.storage.mongo.finding import guard_key, search_index
from fhir_server.storage.mongo.indexes import INDEXES
from fhir_server.storage.port import HistoryQuery, StoredResource
from tests.builders import criteria

CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"


def test_index_specifications_are_exactly_the_documented_ones() -> None:
    assert [(s.collection, *s.create_args()) for s in INDEXES] == [
        ("resources", [("type", 1), ("lastUpdated", 1)], {"name": "type_lastUpdated"}),
        ("resources", [("type", 1), ("rid", 1)], {"name": "type_rid"}),
        ("resources", [("type", 1), ("idx.sd.date", -1), ("rid", 1)], {"name": "type_date"}),
        (
            "resources",
            [("idx.tokens.p", 1), ("idx.tokens.c", 1), ("idx.tokens.s", 1)],
            {"name": "token"},
        ),
        (
            "resources",
            [("pk", 1), ("type", 1), ("idx.tokens.p", 1), ("idx.tokens.c", 1)],
            {"name": "patient_type_code"},
        ),
        (
            "resources",
            [("pk", 1), ("type", 1), ("idx.dates.p", 1), ("idx.dates.lo", 1)],
            {"name": "patient_type_date"},
        ),
        (
            "resources",
            [("idx.compartments", 1), ("type", 1), ("rid", 1)],
            {"name": "compartment_type"},
        ),
        (
            "resources",
            [("idx.references.i", 1), ("idx.references.t", 1), ("idx.references.p", 1)],
            {"name": "reference"},
        ),
        ("resources", [("idx.strings.p", 1), ("idx.strings.f", 1)], {"name": "string"}),
        (
            "resources",
            [("idx.grants.a", 1), ("idx.grants.sc", 1)],
            {"name": "consent_actor", "sparse": True},
        ),
        ("resources", [("idx.grants.pt", 1)], {"name": "consent_patient", "sparse": True}),
        (
            "versions",
            [("type", 1), ("id", 1), ("version", 1)],
            {"name": "instance_version", "unique": True},
        ),
        ("versions", [("seq", -1)], {"name": "seq", "unique": True}),
        ("versions", [("type", 1), ("seq", -1)], {"name": "type_seq"}),
        ("versions", [("lastUpdated", 1)], {"name": "lastUpdated"}),
        ("subscription_state", [("changed", 1)], {"name": "changed"}),
        ("subscription_state", [("next_attempt", 1)], {"name": "next_attempt"}),
        ("subscription_events", [("subscription", 1), ("number", 1)],
         {"name": "subscription_number", "unique": True}),
        ("subscription_events", [("created", 1)], {"name": "created"}),
    ]


@pytest.mark.parametrize("spec", INDEXES, ids=lambda s: s.options[0][1])
def test_no_compound_index_spans_two_arrays(spec: Any) -> None:
    arrays = {key.rsplit(".", 1)[0] for key, _ in spec.keys if key.startswith("idx.")}
    assert len(arrays) <= 1


def test_index_document_names_each_row_field() -> None:
    element = SearchIndex(
        "", "", tokens=(("0", "http://loinc.org", "8480-6"),), numbers=(("1", 120.0, 120.0),)
    )
    index = SearchIndex(
        "Observation",
        "o1",
        "2026-03-01T01:30:00.000000+00:00",
        strings=(("name", "nguyen", "Nguyễn"),),
        tokens=(("identifier", CCCD, "001090012345"),),
        dates=(("date", 10, 20),),
        quantities=(("value-quantity", "http://unitsofmeasure.org", "/min", 72.0, 72.0),),
        references=(("subject", "Patient", "p1", ""),),
        composites=(("code-value-quantity", element),),
        compartments=("p1",),
    )
    assert docs.index_document(index) == {
        "strings": [{"p": "name", "f": "nguyen", "e": "Nguyễn"}],
        "tokens": [{"p": "identifier", "s": CCCD, "c": "001090012345"}],
        "dates": [{"p": "date", "lo": 10, "hi": 20}],
        "quantities": [
            {
                "p": "value-quantity",
                "s": "http://unitsofmeasure.org",
                "c": "/min",
                "lo": 72.0,
                "hi": 72.0,
            }
        ],
        "references": [{"p": "subject", "t": "Patient", "i": "p1", "u": ""}],
        "composites": [
            {
                "p": "code-value-quantity",
                "e": {
                    "tokens": [{"p": "0", "s": "http://loinc.org", "c": "8480-6"}],
                    "numbers": [{"p": "1", "lo": 120.0, "hi": 120.0}],
                },
            }
        ],
        "compartments": ["p1"],
        "sa": {
            "name": "nguyen",
            "identifier": "001090012345",
            "date": 10,
            "value-quantity": 72.0,
            "subject": "p1",
        },
        "sd": {
            "name": "nguyen",
            "identifier": "001090012345",
            "date": 10,
            "value-quantity": 72.0,
            "subject": "p1",
        },
    }


def test_sort_keys_are_the_least_value_ascending_and_the_greatest_descending() -> None:
    """A range (a date's precision, a period) sorts by its low end both ways."""
    index = SearchIndex(
        "Encounter",
        "e1",
        dates=(("date", 30, 40), ("date", 10, 20), ("period", 5, 50)),
        strings=(("name", "b", "B"), ("name", "a", "A")),
    )
    stored = docs.index_document(index)
    assert stored is not None
    assert (stored["sa"], stored["sd"]) == (
        {"name": "a", "date": 10, "period": 5},
        {"name": "b", "date": 30, "period": 5},
    )


@pytest.mark.parametrize("value", [None, "not an index", SearchIndex], ids=["none", "str", "cls"])
def test_index_document_of_a_non_index_is_none(value: object) -> None:
    assert docs.index_document(value) is None


def test_stored_index_reads_back_as_the_same_search_index() -> None:
    index = SearchIndex(
        "Patient",
        "p1",
        "2026-01-01T00:00:00.000000+00:00",
        tokens=(("identifier", CCCD, "1"),),
        texts=(("gender", "male"),),
        uris=(("_profile", "http://x"),),
        compartments=("p1",),
    )
    doc = {
        "type": "Patient",
        "id": "p1",
        "lastUpdated": index.last_updated,
        "idx": docs.index_document(index),
    }
    assert search_index(doc) == index


@pytest.mark.parametrize(
    ("resource_type", "id", "compartments", "expected"),
    [
        ("Patient", "p1", ["p1"], "p1"),
        ("Observation", "o1", ["p2", "p3"], "p2"),
        ("Organization", "org1", [], "Organization/org1"),
        ("Observation", "o2", None, "Observation/o2"),
    ],
)
def test_partition_key_is_the_owning_patient_or_the_resource_itself(
    resource_type: str, id: str, compartments: list[str] | None, expected: str
) -> None:
    idx = None if compartments is None else {"compartments": compartments}
    assert docs.partition_key(resource_type, id, idx) == expected


def test_resource_and_version_documents() -> None:
    stored = StoredResource("Patient", "p1", 2, "2026-01-01T00:00:00.000000+00:00", b"{}", "PUT")
    assert docs.resource_document(stored, {"tokens": []}, "p1") == {
        "_id": "Patient/p1",
        "type": "Patient",
        "id": "p1",
        "version": 2,
        "lastUpdated": "2026-01-01T00:00:00.000000+00:00",
        "deleted": False,
        "method": "PUT",
        "content": b"{}",
        "pk": "p1",
        "idx": {"tokens": []},
    }
    assert docs.version_document(stored, 41, "p1") == {
        "_id": "Patient/p1/2",
        "type": "Patient",
        "id": "p1",
        "version": 2,
        "seq": 41,
        "lastUpdated": "2026-01-01T00:00:00.000000+00:00",
        "until": None,
        "method": "PUT",
        "content": b"{}",
        "pk": "p1",
    }


def test_a_deletion_document_drops_content_and_index() -> None:
    marker = StoredResource("Patient", "p1", 3, "t", b"", "DELETE", True)
    doc = docs.resource_document(marker, {"tokens": []}, "p1")
    assert (doc["deleted"], doc["content"], doc["idx"]) == (True, None, None)
    assert docs.stored_from_version(docs.version_document(marker, 7, "p1")) == marker


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (HistoryQuery(), {}),
        (HistoryQuery("Patient"), {"type": "Patient"}),
        (
            HistoryQuery("Patient", "p1", before_seq=9),
            {"$and": [{"type": "Patient"}, {"id": "p1"}, {"seq": {"$lt": 9}}]},
        ),
        (HistoryQuery(since="2026-01-01"), {"lastUpdated": {"$gte": "2026-01-01"}}),
        (
            HistoryQuery(at="2026-01-01"),
            {
                "$and": [
                    {"lastUpdated": {"$lte": "2026-01-01"}},
                    {"$or": [{"until": None}, {"until": {"$gt": "2026-01-01"}}]},
                ]
            },
        ),
    ],
    ids=["system", "type", "instance-page", "since", "at"],
)
def test_history_filter(query: HistoryQuery, expected: dict[str, Any]) -> None:
    assert docs.history_filter(query) == expected


def _token(code: str, *values: TokenValue, modifier: Modifier | None = None) -> Clause:
    return Clause(code, ParamType.TOKEN, values, modifier)


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        (
            _token("identifier", TokenValue(CCCD, "1")),
            {"idx.tokens": {"$elemMatch": {"p": "identifier", "s": CCCD, "c": "1"}}},
        ),
        (
            _token("code", TokenValue(None, "8867-4"), TokenValue("", "x")),
            {
                "$or": [
                    {"idx.tokens": {"$elemMatch": {"p": "code", "c": "8867-4"}}},
                    {"idx.tokens": {"$elemMatch": {"p": "code", "s": "", "c": "x"}}},
                ]
            },
        ),
        (
            _token("code", TokenValue("http://loinc.org", None)),
            {"idx.tokens": {"$elemMatch": {"p": "code", "s": "http://loinc.org"}}},
        ),
        (_token("_id", TokenValue(None, "a"), TokenValue(None, "b")), {"id": {"$in": ["a", "b"]}}),
        (
            Clause("subject", ParamType.REFERENCE, (ReferenceValue("Patient", "p1"),)),
            {"idx.references": {"$elemMatch": {"p": "subject", "i": "p1", "t": "Patient"}}},
        ),
        (
            Clause("subject", ParamType.REFERENCE, (ReferenceValue(None, None, "http://a/b"),)),
            {"idx.references": {"$elemMatch": {"p": "subject", "u": "http://a/b"}}},
        ),
        (
            Clause("family", ParamType.STRING, (StringValue("Trần", "tran"),), Modifier.EXACT),
            {"idx.strings": {"$elemMatch": {"p": "family", "e": "Trần"}}},
        ),
        (Clause("family", ParamType.STRING, (StringValue("Trần", "tran"),)), None),
        (_token("code", TokenValue(None, "x"), modifier=Modifier.NOT), None),
        (Clause("date", ParamType.DATE, (DateValue(Prefix.GE, 1, 2),)), None),
    ],
    ids=[
        "identifier",
        "any-or-no-system",
        "system-only",
        "_id",
        "reference",
        "url",
        "exact-string",
        "string-prefix-unnarrowed",
        "not-unnarrowed",
        "date-unnarrowed",
    ],
)
def test_clause_filter(clause: Clause, expected: dict[str, Any] | None) -> None:
    assert clause_filter(clause) == expected


def test_query_filter_combines_type_compartment_and_clauses() -> None:
    query = SearchQuery(
        "Observation",
        clauses=(_token("code", TokenValue(None, "8867-4")),),
        compartment=("Patient", "p1"),
    )
    assert query_filter(query) == {
        "$and": [
            {"type": "Observation"},
            {"deleted": False},
            {"idx.compartments": "p1"},
            {"idx.tokens": {"$elemMatch": {"p": "code", "c": "8867-4"}}},
        ]
    }
    assert query_filter(SearchQuery(None, types=("Patient", "Group"))) == {
        "$and": [{"type": {"$in": ["Patient", "Group"]}}, {"deleted": False}]
    }


def test_guard_key_ignores_parameter_order() -> None:
    one = guard_key(criteria("Patient", [("identifier", "a|1"), ("gender", "male")]))
    other = guard_key(criteria("Patient", [("gender", "male"), ("identifier", "a|1")]))
    assert one == other != guard_key(criteria("Patient", [("identifier", "a|2")]))
    assert one.startswith("Patient?")

"""The MongoDB search compiler's generated documents: clause filters, keyset filters, sorts."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.model import (
    Clause,
    CompositeValue,
    DateValue,
    Modifier,
    NumberValue,
    ParamType,
    Prefix,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.mongo.search import after_filter, sort_fields
from fhir_server.storage.mongo.search_filters import (
    NOTHING,
    chain_filter,
    clause_filter,
    has_filter,
    include_filter,
    revinclude_filter,
    scope_filter,
)

CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"
END = "\U0010ffff"


def _rows(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {f"idx.{table}": {"$elemMatch": row}}


def _date(prefix: Prefix, low: int = 10, high: int = 20) -> Clause:
    return Clause("birthdate", ParamType.DATE, (DateValue(prefix, low, high),))


CLAUSES: list[tuple[str, Clause, dict[str, Any] | None]] = [
    (
        "token-system-code",
        Clause("identifier", ParamType.TOKEN, (TokenValue(CCCD, "1"),)),
        _rows("tokens", {"p": "identifier", "s": CCCD, "c": "1"}),
    ),
    (
        "token-not",
        Clause("gender", ParamType.TOKEN, (TokenValue(None, "male"),), Modifier.NOT),
        {"$nor": [_rows("tokens", {"p": "gender", "c": "male"})]},
    ),
    (
        "token-text",
        Clause("code", ParamType.TOKEN, (TokenValue(None, "heart"),), Modifier.TEXT),
        _rows("texts", {"p": "code", "t": {"$gte": "heart", "$lt": "heart" + END}}),
    ),
    (
        "reference-identifier",
        Clause("subject", ParamType.REFERENCE, (TokenValue(CCCD, "1"),), Modifier.IDENTIFIER),
        _rows("tokens", {"p": "subject:identifier", "s": CCCD, "c": "1"}),
    ),
    (
        "string-starts-with",
        Clause("family", ParamType.STRING, (StringValue("Trần", "tran"),)),
        _rows("strings", {"p": "family", "f": {"$gte": "tran", "$lt": "tran" + END}}),
    ),
    (
        "string-contains",
        Clause("family", ParamType.STRING, (StringValue("a.b", "a.b"),), Modifier.CONTAINS),
        _rows("strings", {"p": "family", "f": {"$regex": "a\\.b"}}),
    ),
    (
        "string-exact-or",
        Clause(
            "family",
            ParamType.STRING,
            (StringValue("Trần", "tran"), StringValue("Lê", "le")),
            Modifier.EXACT,
        ),
        {
            "$or": [
                _rows("strings", {"p": "family", "e": "Trần"}),
                _rows("strings", {"p": "family", "e": "Lê"}),
            ]
        },
    ),
    (
        "date-eq",
        _date(Prefix.EQ),
        _rows("dates", {"p": "birthdate", "lo": {"$gte": 10}, "hi": {"$lte": 20}}),
    ),
    (
        "date-ne",
        _date(Prefix.NE),
        _rows("dates", {"p": "birthdate", "$or": [{"lo": {"$lt": 10}}, {"hi": {"$gt": 20}}]}),
    ),
    (
        "date-ge",
        _date(Prefix.GE),
        _rows(
            "dates",
            {
                "p": "birthdate",
                "$or": [{"hi": {"$gt": 20}}, {"lo": {"$gte": 10}, "hi": {"$lte": 20}}],
            },
        ),
    ),
    ("date-sa", _date(Prefix.SA), _rows("dates", {"p": "birthdate", "lo": {"$gte": 20}})),
    ("date-eb", _date(Prefix.EB), _rows("dates", {"p": "birthdate", "hi": {"$lte": 10}})),
    (
        "number-lt",
        Clause("probability", ParamType.NUMBER, (NumberValue(Prefix.LT, 5.0, 4.5, 5.5),)),
        _rows("numbers", {"p": "probability", "lo": {"$lt": 4.5}}),
    ),
    (
        "quantity-with-unit",
        Clause(
            "value-quantity",
            ParamType.QUANTITY,
            (QuantityValue(NumberValue(Prefix.GT, 70.0, 69.5, 70.5), "http://u", "/min"),),
        ),
        _rows(
            "quantities", {"p": "value-quantity", "c": "/min", "s": "http://u", "hi": {"$gt": 70.5}}
        ),
    ),
    (
        "reference-typed",
        Clause(
            "subject", ParamType.REFERENCE, (ReferenceValue(None, "p1"),), target_type="Patient"
        ),
        _rows("references", {"p": "subject", "i": "p1", "t": "Patient"}),
    ),
    (
        "reference-contradicting-type",
        Clause(
            "subject", ParamType.REFERENCE, (ReferenceValue("Group", "g1"),), target_type="Patient"
        ),
        NOTHING,
    ),
    (
        "uri-above",
        Clause("url", ParamType.URI, (UriValue("http://a/b"),), Modifier.ABOVE),
        _rows(
            "uris",
            {
                "p": "url",
                "u": {
                    "$in": [
                        "h",
                        "ht",
                        "htt",
                        "http",
                        "http:",
                        "http:/",
                        "http://",
                        "http://a",
                        "http://a/",
                        "http://a/b",
                    ]
                },
            },
        ),
    ),
    (
        "uri-below",
        Clause("url", ParamType.URI, (UriValue("http://a"),), Modifier.BELOW),
        _rows("uris", {"p": "url", "u": {"$gte": "http://a", "$lt": "http://a" + END}}),
    ),
    (
        "missing-true",
        Clause("organization", ParamType.REFERENCE, (True,), Modifier.MISSING),
        {"idx.references.p": {"$ne": "organization"}},
    ),
    (
        "missing-false",
        Clause("organization", ParamType.REFERENCE, (False,), Modifier.MISSING),
        {"idx.references.p": "organization"},
    ),
    (
        "_id-not",
        Clause("_id", ParamType.TOKEN, (TokenValue(None, "a"),), Modifier.NOT),
        {"id": {"$nin": ["a"]}},
    ),
    (
        "_lastUpdated-ge-year",
        Clause(
            "_lastUpdated",
            ParamType.DATE,
            (DateValue(Prefix.SA, 1767225600000000, 1798761600000000),),
        ),
        {"lastUpdated": {"$gte": "2027-01-01T00:00:00.000000+00:00"}},
    ),
    ("_id-missing", Clause("_id", ParamType.TOKEN, (True,), Modifier.MISSING), NOTHING),
    (
        "composite-decided-by-the-matcher",
        Clause(
            "code-value-quantity",
            ParamType.COMPOSITE,
            (CompositeValue((TokenValue(None, "x"), NumberValue(Prefix.EQ, 1, 0.5, 1.5))),),
        ),
        None,
    ),
]


@pytest.mark.parametrize(
    ("clause", "expected"), [c[1:] for c in CLAUSES], ids=[c[0] for c in CLAUSES]
)
def test_clause_filter_is_exactly_this_document(
    clause: Clause, expected: dict[str, Any] | None
) -> None:
    assert clause_filter(clause) == expected


def test_scope_filter_names_type_liveness_and_compartment() -> None:
    query = SearchQuery("Observation", compartment=("Patient", "p1"))
    assert scope_filter(query) == {
        "$and": [{"type": "Observation"}, {"deleted": False}, {"idx.compartments": "p1"}]
    }
    assert scope_filter(SearchQuery(None)) == {"deleted": False}


def test_chain_and_has_filters_name_the_resolved_resources() -> None:
    targets = [("Patient", "p1"), ("Group", "g1"), ("Patient", "p2")]
    assert chain_filter("subject", targets) == {
        "$or": [
            _rows("references", {"p": "subject", "t": "Patient", "i": {"$in": ["p1", "p2"]}}),
            _rows("references", {"p": "subject", "t": "Group", "i": {"$in": ["g1"]}}),
        ]
    }
    assert chain_filter("subject", []) == NOTHING
    assert has_filter([("Patient", "p1"), ("Patient", "p1")]) == {"_id": {"$in": ["Patient/p1"]}}


def test_include_filters_fetch_by_id_and_by_reference_row() -> None:
    assert include_filter([("Patient", "p1")]) == {
        "$and": [{"_id": {"$in": ["Patient/p1"]}}, {"deleted": False}]
    }
    assert revinclude_filter("Observation", ["subject", "patient"], [("Patient", "p1")]) == {
        "$and": [
            {"type": "Observation"},
            {"deleted": False},
            _rows("references", {"p": {"$in": ["subject", "patient"]}, "t": "Patient",
                                 "i": {"$in": ["p1"]}}),
        ]
    }  # fmt: skip


def test_sort_fields_use_the_least_value_ascending_and_the_greatest_descending() -> None:
    registry = SearchParameterRegistry.load()
    keys = (SortKey("birthdate"), SortKey("family", descending=True), SortKey("_id"),
            SortKey("_lastUpdated", descending=True), SortKey("no-such-parameter"))  # fmt: skip
    assert sort_fields(SearchQuery("Patient", sort=keys), registry) == [
        ("idx.sa.birthdate", False),
        ("idx.sd.family", True),
        ("id", False),
        ("lastUpdated", True),
    ]


@pytest.mark.parametrize(
    ("order", "keys", "expected"),
    [
        ([], [], {"rid": {"$gt": 7}}),
        (
            [("idx.sa.birthdate", False)],
            [10],
            {"$or": [{"idx.sa.birthdate": {"$gt": 10}},
                     {"$and": [{"idx.sa.birthdate": 10}, {"rid": {"$gt": 7}}]}]},
        ),
        (
            [("idx.sa.birthdate", False)],
            [None],
            {"$or": [{"idx.sa.birthdate": {"$ne": None}},
                     {"$and": [{"idx.sa.birthdate": None}, {"rid": {"$gt": 7}}]}]},
        ),
        (
            [("idx.sd.birthdate", True)],
            [20],
            {"$or": [{"$or": [{"idx.sd.birthdate": {"$lt": 20}}, {"idx.sd.birthdate": None}]},
                     {"$and": [{"idx.sd.birthdate": 20}, {"rid": {"$gt": 7}}]}]},
        ),
        (
            [("idx.sd.birthdate", True)],
            [None],
            {"$and": [{"idx.sd.birthdate": None}, {"rid": {"$gt": 7}}]},
        ),
    ],
    ids=["rid-only", "ascending", "ascending-after-null", "descending", "descending-after-null"],
)  # fmt: skip
def test_after_filter_is_the_keyset_comparison(
    order: list[tuple[str, bool]], keys: list[Any], expected: dict[str, Any]
) -> None:
    assert after_filter(order, keys, 7, rid_descending=False) == expected


def test_after_filter_backwards_compares_rid_downwards() -> None:
    assert after_filter([], [], 7, rid_descending=True) == {"rid": {"$lt": 7}}

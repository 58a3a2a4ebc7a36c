"""Parsing of search parameters by their declared type (R4 3.1.1.4 onwards)."""

from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.dates import date_range
from fhir_server.search.model import (
    ChainClause,
    Clause,
    CompositeValue,
    DateValue,
    HasClause,
    Include,
    Modifier,
    NumberValue,
    Prefix,
    QuantityValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    TotalMode,
    UriValue,
)
from fhir_server.search.parse import parse_search
from tests.unit.search.search_builders import registry


def first_clause(resource_type: str, name: str, value: str) -> Clause:
    query = parse_search(resource_type, [(name, value)], registry(), strict=True).query
    clause = query.clauses[0]
    assert isinstance(clause, Clause)
    return clause


@pytest.mark.parametrize(
    ("resource_type", "name", "value", "expected"),
    [
        ("Patient", "name", "Nguyễn", StringValue("Nguyễn", "nguyen")),
        ("Patient", "family", "Đặng", StringValue("Đặng", "dang")),
        (
            "Patient",
            "identifier",
            "http://cccd.gov.vn|0010",
            TokenValue("http://cccd.gov.vn", "0010"),
        ),
        ("Patient", "identifier", "|0010", TokenValue("", "0010")),
        ("Patient", "identifier", "http://cccd.gov.vn|", TokenValue("http://cccd.gov.vn", None)),
        ("Patient", "gender", "male", TokenValue(None, "male")),
        ("Patient", "identifier", r"a\|b", TokenValue(None, "a|b")),
        ("Observation", "subject", "Patient/23", ReferenceValue("Patient", "23")),
        ("Observation", "patient", "23", ReferenceValue("Patient", "23")),
        ("Observation", "subject", "23", ReferenceValue(None, "23")),
        (
            "Observation",
            "subject",
            "http://example.org/fhir/Patient/23",
            ReferenceValue("Patient", "23", "http://example.org/fhir/Patient/23"),
        ),
        (
            "ValueSet",
            "url",
            "http://acme.org/fhir/ValueSet/123",
            UriValue("http://acme.org/fhir/ValueSet/123"),
        ),
        ("RiskAssessment", "probability", "gt0.8", NumberValue(Prefix.GT, 0.8, 0.8, 0.8)),
        ("RiskAssessment", "probability", "100", NumberValue(Prefix.EQ, 100.0, 99.5, 100.5)),
        (
            "Observation",
            "value-quantity",
            "5.4|http://unitsofmeasure.org|mg",
            QuantityValue(
                NumberValue(Prefix.EQ, 5.4, 5.35, 5.45), "http://unitsofmeasure.org", "mg"
            ),
        ),
        (
            "Observation",
            "value-quantity",
            "5.4||mg",
            QuantityValue(NumberValue(Prefix.EQ, 5.4, 5.35, 5.45), None, "mg"),
        ),
    ],
)
def test_value_is_parsed_by_the_parameters_declared_type(
    resource_type: str, name: str, value: str, expected: object
) -> None:
    clause = first_clause(resource_type, name, value)
    assert clause.values[0] == expected


def test_number_ranges_follow_significant_figures() -> None:
    value = first_clause("RiskAssessment", "probability", "100").values[0]
    assert isinstance(value, NumberValue)
    assert (value.low, value.high) == (99.5, 100.5)


@pytest.mark.parametrize(
    ("value", "prefix", "start", "end"),
    [
        ("1990", Prefix.EQ, "1990", "1990"),
        ("ge1990", Prefix.GE, "1990", "1990"),
        ("lt2013-01-14T10:00", Prefix.LT, "2013-01-14T10:00", "2013-01-14T10:00"),
        ("sa2013-03", Prefix.SA, "2013-03", "2013-03"),
        ("2013-01-14T10:00:00Z", Prefix.EQ, "2013-01-14T10:00:00Z", "2013-01-14T10:00:00Z"),
    ],
)
def test_date_values_carry_prefix_and_implicit_precision_range(
    value: str, prefix: Prefix, start: str, end: str
) -> None:
    parsed = first_clause("Patient", "birthdate", value).values[0]
    assert parsed == DateValue(prefix, date_range(start)[0], date_range(end)[1])


def test_a_string_value_that_looks_like_a_prefix_is_still_a_string() -> None:
    assert first_clause("Patient", "family", "ge1990").values[0] == StringValue("ge1990", "ge1990")


def test_comma_means_or_and_escaped_comma_does_not() -> None:
    clause = first_clause("Patient", "family", r"an,b\,c")
    assert clause.values == (StringValue("an", "an"), StringValue("b,c", "b,c"))


def test_repeated_parameter_means_and() -> None:
    query = parse_search(
        "Patient", [("given", "an"), ("given", "binh")], registry(), strict=True
    ).query
    assert len(query.clauses) == 2


@pytest.mark.parametrize(
    ("name", "modifier"),
    [
        ("family:exact", Modifier.EXACT),
        ("family:contains", Modifier.CONTAINS),
        ("gender:not", Modifier.NOT),
        ("gender:missing", Modifier.MISSING),
        ("code:text", Modifier.TEXT),
    ],
)
def test_supported_modifiers_are_kept(name: str, modifier: Modifier) -> None:
    resource_type = "Observation" if name.startswith("code") else "Patient"
    value = "true" if modifier is Modifier.MISSING else "x"
    assert first_clause(resource_type, name, value).modifier is modifier


def test_reference_type_modifier_sets_the_target_type() -> None:
    clause = first_clause("Observation", "subject:Patient", "23")
    assert (clause.modifier, clause.target_type) == (Modifier.TYPE, "Patient")
    assert clause.values[0] == ReferenceValue("Patient", "23")


def test_reference_identifier_modifier_takes_a_token() -> None:
    clause = first_clause("Observation", "subject:identifier", "http://cccd.gov.vn|0010")
    assert clause.values[0] == TokenValue("http://cccd.gov.vn", "0010")


def test_composite_value_is_split_on_dollar_by_component_types() -> None:
    clause = first_clause("Observation", "code-value-quantity", "http://loinc.org|8867-4$gt60")
    value = clause.values[0]
    assert isinstance(value, CompositeValue)
    assert value.parts[0] == TokenValue("http://loinc.org", "8867-4")
    assert isinstance(value.parts[1], QuantityValue) and value.parts[1].number.prefix is Prefix.GT


def test_chained_parameters_nest_to_any_depth() -> None:
    query = parse_search(
        "Encounter", [("subject:Patient.organization.name", "bach mai")], registry(), strict=True
    ).query
    chain = query.clauses[0]
    assert isinstance(chain, ChainClause) and chain.target_types == ("Patient",)
    assert isinstance(chain.inner, ChainClause) and chain.inner.code == "organization"
    assert isinstance(chain.inner.inner, Clause) and chain.inner.inner.code == "name"


def test_reverse_chaining_has_nests() -> None:
    name = "_has:Observation:patient:_has:AuditEvent:entity:agent"
    query = parse_search("Patient", [(name, "Practitioner/1")], registry(), strict=True).query
    outer = query.clauses[0]
    assert isinstance(outer, HasClause) and outer.resource_type == "Observation"
    assert isinstance(outer.inner, HasClause) and outer.inner.reference == "entity"


def test_result_parameters_shape_the_query() -> None:
    params = [
        ("_count", "50"),
        ("_sort", "-date,_id"),
        ("_include", "Observation:subject"),
        ("_revinclude:iterate", "Provenance:target"),
        ("_total", "accurate"),
    ]
    query = parse_search("Observation", params, registry(), strict=True).query
    assert query.count == 50
    assert query.sort == (SortKey("date", True), SortKey("_id"))
    assert query.includes == (Include("Observation", "subject"),)
    assert query.revincludes == (Include("Provenance", "target", None, True),)
    assert query.total is TotalMode.ACCURATE


def test_count_is_capped_at_the_maximum() -> None:
    query = parse_search("Patient", [("_count", "5000")], registry(), max_count=1000).query
    assert query.count == 1000


@pytest.mark.parametrize(
    ("name", "value", "message_id"),
    [
        ("birthdate", "abc", "MSG_PARAM_INVALID"),
        ("birthdate", "1990-13", "MSG_PARAM_INVALID"),
        ("_count", "-1", "MSG_PARAM_INVALID"),
        ("_total", "maybe", "MSG_PARAM_INVALID"),
        ("identifier:missing", "yes", "MSG_PARAM_INVALID"),
        ("general-practitioner", "a/b/c", "MSG_PARAM_INVALID"),
    ],
)
def test_invalid_value_is_a_400_naming_the_parameter_even_when_lenient(
    name: str, value: str, message_id: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_search("Patient", [(name, value)], registry(), strict=False)
    assert raised.value.message_id == message_id
    assert name.split(":")[0] in raised.value.diagnostics


@pytest.mark.parametrize(
    ("name", "error", "message_id"),
    [
        ("shoe-size", BadRequest, "MSG_PARAM_UNKNOWN"),
        ("family:sounds-like", BadRequest, "MSG_PARAM_MODIFIER_INVALID"),
        ("identifier:below", NotSupported, "MSG_PARAM_MODIFIER_UNSUPPORTED"),
        ("language:above", NotSupported, "MSG_PARAM_MODIFIER_UNSUPPORTED"),
        ("_text", NotSupported, "MSG_PARAM_UNSUPPORTED"),
        ("_content", NotSupported, "MSG_PARAM_UNSUPPORTED"),
    ],
)
def test_unknown_or_unsupported_is_raised_when_strict_and_reported_when_lenient(
    name: str, error: type[Exception], message_id: str
) -> None:
    with pytest.raises(error) as raised:
        parse_search("Patient", [(name, "x")], registry(), strict=True)
    assert getattr(raised.value, "message_id", None) == message_id
    lenient = parse_search("Patient", [(name, "x"), ("gender", "male")], registry())
    assert [issue.message_id for issue in lenient.issues] == [message_id]
    assert len(lenient.query.clauses) == 1


def test_absolute_reference_on_this_server_is_read_as_relative() -> None:
    params = [("subject", "http://localhost/fhir/Patient/23")]
    query = parse_search("Observation", params, registry(), base_url="http://localhost/fhir").query
    clause = query.clauses[0]
    assert isinstance(clause, Clause) and clause.values[0] == ReferenceValue("Patient", "23")


@pytest.mark.parametrize("text", ["２０２１-01-31", "2021-٠١-31", "2021-01-31T10:00:00+٠٧:00"])
def test_a_date_with_digits_of_another_script_is_not_a_date(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)

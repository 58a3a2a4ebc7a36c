"""Indexing: a resource becomes its normalized SearchIndex."""

from __future__ import annotations

import pytest

from fhir_server.search.dates import date_range
from fhir_server.search.indexing import index_resource
from fhir_server.search.model import ParamType
from fhir_server.search.registry import Component, SearchParameterDef, SearchParameterRegistry
from tests.unit.search.search_builders import (
    BLOOD_PRESSURE,
    CCCD,
    LOINC,
    UCUM,
    index,
    observation,
    patient,
)


def test_strings_are_folded_for_case_and_vietnamese_diacritics() -> None:
    rows = index(patient()).strings
    assert ("family", "nguyen", "Nguyễn") in rows
    assert ("name", "van", "Văn") in rows


def test_identifier_is_a_token_of_system_and_value() -> None:
    assert ("identifier", CCCD, "001090012345") in index(patient()).tokens


def test_codeable_concept_gives_tokens_and_display_text() -> None:
    indexed = index(observation())
    assert ("code", LOINC, "8867-4") in indexed.tokens
    assert ("code", "heart rate") in indexed.texts


def test_partial_date_is_indexed_as_its_whole_precision_range() -> None:
    low, high = date_range("1990-05-02")
    assert ("birthdate", low, high) in index(patient()).dates


def test_choice_element_is_found_under_its_typed_key() -> None:
    indexed = index(observation())
    assert ("date", *date_range("2024-03-01T10:00:00+07:00")) in indexed.dates
    assert ("value-quantity", UCUM, "/min", 72.0, 72.0) in indexed.quantities


def test_period_without_end_is_open_ended() -> None:
    indexed = index(observation(effectiveDateTime=None, effectivePeriod={"start": "2024"}))
    rows = [row for row in indexed.dates if row[0] == "date"]
    assert rows and rows[0][1] == date_range("2024")[0] and rows[0][2] > date_range("3000")[0]


def test_reference_is_indexed_as_type_and_id_and_only_matching_resolve_targets() -> None:
    indexed = index(observation())
    assert ("subject", "Patient", "p1", "") in indexed.references
    assert ("patient", "Patient", "p1", "") in indexed.references
    group = index(observation(subject={"reference": "Group/g1"}))
    assert not [row for row in group.references if row[0] == "patient"]


def test_absolute_reference_keeps_its_url_and_logical_identifier_is_a_token() -> None:
    url = "http://other.vn/fhir/Patient/9"
    indexed = index(
        observation(subject={"reference": url, "identifier": {"system": CCCD, "value": "0010"}})
    )
    assert ("subject", "Patient", "9", url) in indexed.references
    assert ("subject:identifier", CCCD, "0010") in indexed.tokens


def test_composite_keeps_components_of_the_same_element_together() -> None:
    indexed = index(observation(component=[BLOOD_PRESSURE[0]]))
    rows = [
        element for code, element in indexed.composites if code == "component-code-value-quantity"
    ]
    assert rows and ("0", LOINC, "8480-6") in rows[0].tokens
    assert ("1", UCUM, "mm[Hg]", 120.0, 120.0) in rows[0].quantities


def test_composite_element_keeps_no_text_rows_that_no_search_could_read() -> None:
    systolic = {**BLOOD_PRESSURE[0], "code": {
        "coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}], "text": "SBP"}}
    indexed = index(observation(component=[systolic]))
    elements = [element for _, element in indexed.composites]
    assert elements and all(element.texts == () for element in elements)
    assert ("component-code", "systolic") in indexed.texts  # the plain parameter keeps them


def test_composite_over_the_whole_resource_needs_no_rows_of_its_own() -> None:
    indexed = index(observation())
    assert not [code for code, _ in indexed.composites if code == "code-value-quantity"]


def test_patient_compartment_holds_the_patient_and_what_refers_to_it() -> None:
    assert index(patient("p7")).compartments == ("p7",)
    assert index(observation()).compartments == ("p1",)


def test_every_r4_search_expression_but_one_is_walked_natively() -> None:
    """The general FHIRPath engine costs ~0.3 ms per call: indexing must not need it.

    (Its cost is measured by ``benchmarks/``; here only which expressions need it.)
    """
    from fhir_server.search import expressions
    from fhir_server.search.registry import SearchParameterRegistry, split_union

    needing_engine = {
        branch
        for definition in SearchParameterRegistry.load()
        if definition.expression
        for branch in split_union(definition.expression)
        if expressions._steps(branch, None) is None
        and not expressions._EXISTS_NOT_FALSE.fullmatch(branch.strip())
    }
    assert needing_engine == {"Bundle.entry[0].resource"}
    plan = expressions.compile_expression("name | alias")  # R4 InsurancePlan-name, no root
    assert plan({"resourceType": "InsurancePlan", "name": "A", "alias": ["B"]}) == ["A", "B"]


@pytest.mark.parametrize("deceased", [
    {}, {"deceasedBoolean": True}, {"deceasedBoolean": False},
    {"deceasedDateTime": "2020-05-01"},
])
def test_deceased_is_evaluated_natively_as_fhirpath_does(deceased: dict[str, object]) -> None:
    import fhirpathpy
    from fhirpathpy.models import models

    from fhir_server.search import expressions

    expression = "Patient.deceased.exists() and Patient.deceased != false"
    patient = {"resourceType": "Patient", **deceased}
    native = expressions.compile_expression(expression)
    assert native.__qualname__.startswith("_exists_not_false")
    assert native(patient) == fhirpathpy.evaluate(patient, expression, {}, models["r4"])


def test_resources_of_one_type_in_other_shapes_each_get_the_rows_of_their_own_keys() -> None:
    # The parameters run are chosen by the resource's top-level keys (and remembered per key
    # set): a second shape must neither lose rows nor keep the first shape's.
    without_name = {key: value for key, value in patient().items() if key != "name"}
    assert not [row for row in index(without_name).strings if row[0] == "family"]
    assert ("family", "nguyen", "Nguyễn") in index(patient()).strings
    again = index(without_name)
    assert not [row for row in again.strings if row[0] == "family"]
    assert ("identifier", CCCD, "001090012345") in again.tokens
    with_phone = index(patient(telecom=[{"system": "phone", "value": "0912345678"}]))
    assert ("phone", "phone", "0912345678") in with_phone.tokens
    assert ("family", "nguyen", "Nguyễn") in with_phone.strings


def test_a_composite_with_a_component_that_has_no_rows_of_its_own_is_left_unindexed() -> None:
    def param(code: str, kind: str, expression: str, *parts: Component) -> SearchParameterDef:
        return SearchParameterDef(code=code, url=f"http://example.org/sp/{code}",
                                  type=ParamType(kind), base=("Observation",),
                                  expression=expression, components=parts)

    code = Component("http://example.org/sp/code", "code")
    registry = SearchParameterRegistry([
        param("code", "token", "Observation.code"),
        param("code-text", "special", "Observation.code.text"),
        param("plain", "composite", "Observation.component", code, code),
        param("odd", "composite", "Observation.component", code,
              Component("http://example.org/sp/code-text", "code")),
    ])
    heart = {"coding": [{"system": LOINC, "code": "8867-4"}]}
    indexed = index_resource(observation(component=[{"code": heart}]), registry)
    assert [name for name, _ in indexed.composites] == ["plain"]
    assert ("code", LOINC, "8867-4") in indexed.tokens

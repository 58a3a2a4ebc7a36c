"""The search-parameter registry built from the R4 table and a profiles directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.model import ParamType
from fhir_server.search.registry import (
    Component,
    SearchParameterDef,
    SearchParameterRegistry,
    split_union,
)
from tests.unit.search.search_builders import registry


@pytest.mark.parametrize(
    ("resource_type", "code", "kind"),
    [
        ("Patient", "identifier", ParamType.TOKEN),
        ("Patient", "name", ParamType.STRING),
        ("Patient", "birthdate", ParamType.DATE),
        ("Observation", "patient", ParamType.REFERENCE),
        ("Observation", "value-quantity", ParamType.QUANTITY),
        ("Observation", "code-value-quantity", ParamType.COMPOSITE),
        ("RiskAssessment", "probability", ParamType.NUMBER),
        ("ValueSet", "url", ParamType.URI),
        ("Encounter", "_lastUpdated", ParamType.DATE),
        ("Encounter", "_tag", ParamType.TOKEN),
    ],
)
def test_registry_knows_every_r4_parameter_with_its_type(
    resource_type: str, code: str, kind: ParamType
) -> None:
    found = registry().get(resource_type, code)
    assert found is not None and found.type is kind


def test_registry_holds_the_whole_r4_set() -> None:
    assert len(list(registry())) == 1378
    assert "Patient" in registry().resource_types()


def test_unknown_parameter_is_none() -> None:
    assert registry().get("Patient", "no-such-param") is None


def test_shared_parameter_expression_keeps_only_the_branch_of_the_type() -> None:
    assert registry().expression_for("Observation", "code") == "Observation.code"
    assert registry().expression_for("Patient", "address") == "Patient.address"


def test_union_split_ignores_bars_inside_parentheses_and_quotes() -> None:
    assert split_union("A.b | (A.c as X) | A.d.where(x='a|b')") == [
        "A.b",
        "(A.c as X)",
        "A.d.where(x='a|b')",
    ]


def test_profiles_directory_adds_vietnamese_search_parameters(tmp_path: Path) -> None:
    url = "http://example.vn/SearchParameter/patient-ethnic"
    parameter = {
        "resourceType": "SearchParameter",
        "url": url,
        "code": "ethnic",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.extension.where(url='http://example.vn/ethnic').value",
    }
    (tmp_path / "ethnic.json").write_text(json.dumps(parameter))
    loaded = SearchParameterRegistry.load(tmp_path)
    found = loaded.get("Patient", "ethnic")
    assert found is not None and found.type is ParamType.TOKEN
    assert loaded.by_url(url) is found


def test_unions_are_the_parameters_made_of_other_parameters_values() -> None:
    assert dict(registry().unions()) == {
        "combo-code": ("code", "component-code"),
        "combo-data-absent-reason": ("component-data-absent-reason", "data-absent-reason"),
        "combo-value-concept": ("component-value-concept", "value-concept"),
        "combo-value-quantity": ("component-value-quantity", "value-quantity"),
    }


def test_composite_unions_are_composites_whose_branches_are_other_composites() -> None:
    assert dict(registry().composite_unions()) == {
        "combo-code-value-concept": ("code-value-concept", "component-code-value-concept"),
        "combo-code-value-quantity": ("code-value-quantity", "component-code-value-quantity"),
    }


def _composite(code: str, expression: str, *parts: tuple[str, str]) -> Any:
    return SearchParameterDef(
        code=code, url=f"http://example.org/sp/{code}", type=ParamType.COMPOSITE,
        base=("Observation",), expression=expression,
        components=tuple(Component(f"http://example.org/sp/Observation-{p}", e)
                         for p, e in parts))


def test_a_composite_union_needs_members_with_the_same_components_in_the_same_order() -> None:
    code, value = ("a", "code"), ("b", "value.as(Quantity)")
    found = SearchParameterRegistry([
        _param("a", "Observation.code"),
        _param("b", "Observation.value.as(Quantity)", kind="quantity"),
        _composite("whole", "Observation", code, value),
        _composite("parts", "Observation.component", code, value),
        _composite("both", "Observation | Observation.component", code, value),
        # The components in another order: not the members' elements.
        _composite("swapped", "Observation | Observation.component", value, code),
        # A branch that no other composite has as its expression.
        _composite("more", "Observation | Observation.component | Observation.x", code, value),
    ]).composite_unions()
    assert dict(found) == {"both": ("whole", "parts")}


def _param(code: str, expression: str, base: str = "Observation", kind: str = "token") -> Any:
    return SearchParameterDef(code=code, url=f"http://example.org/sp/{base}-{code}",
                              type=ParamType(kind), base=(base,), expression=expression)


def test_a_union_has_every_branch_covered_by_non_union_members_of_its_type_everywhere() -> None:
    found = SearchParameterRegistry([
        _param("a", "Observation.code"),
        _param("b", "Observation.category"),
        _param("c", "Observation.method"),
        _param("ab", "Observation.code | Observation.category"),
        # abc's members include ab, which keeps no rows of its own: abc keeps its rows.
        _param("abc", "Observation.code | Observation.category | Observation.method"),
        # issued is covered only by a date parameter: not a token union.
        _param("ad", "Observation.code | Observation.issued"),
        _param("d", "Observation.issued", kind="date"),
        # "x" is a union on Observation but not on Condition: its rows are kept.
        _param("x", "Observation.code | Observation.method"),
        _param("x", "Condition.code | Condition.category", base="Condition"),
    ]).unions()
    assert dict(found) == {"ab": ("a", "b")}


def test_aliases_are_found_from_the_definitions() -> None:
    """A restriction to one target type, or the same expression, per type: never a common
    parameter, a union or its members, nor a type where the code is an element of its own."""
    from fhir_server.search.registry import Alias, SearchParameterRegistry

    aliases = SearchParameterRegistry.load().aliases()
    assert aliases["Observation"] == {"patient": Alias("subject", "Patient")}
    assert aliases["Encounter"]["practitioner"] == Alias("participant", "Practitioner")
    assert aliases["Appointment"]["location"] == Alias("actor", "Location")
    assert aliases["Patient"] == {"phonetic": Alias("name")}
    assert aliases["DeviceUseStatement"] == {"subject": Alias("patient")}
    assert aliases["Coverage"] == {"patient": Alias("beneficiary")}
    assert "AllergyIntolerance" not in aliases  # AllergyIntolerance.patient is its own
    assert "Consent" not in aliases
    members = {alias.member for codes in aliases.values() for alias in codes.values()}
    codes = {code for by_code in aliases.values() for code in by_code}
    assert not any(code.startswith("_") for code in codes)
    assert not codes & {"code", "component-code", "combo-code", "value-quantity"}
    for by_code in aliases.values():
        assert not set(by_code) & {alias.member for alias in by_code.values()}
    assert "subject" in members


def test_an_alias_comes_from_a_custom_definition_too() -> None:
    """A SearchParameter of the profiles with a restriction of another one is an alias; one
    with another expression on the same code is not."""
    from fhir_server.search.model import ParamType
    from fhir_server.search.registry import Alias, SearchParameterDef, SearchParameterRegistry

    base = [
        SearchParameterDef("subject", "u:s", ParamType.REFERENCE, ("Basic",), "Basic.subject"),
        SearchParameterDef("author", "u:a", ParamType.REFERENCE, ("Basic",), "Basic.author"),
        SearchParameterDef("patient", "u:p", ParamType.REFERENCE, ("Basic",),
                           "Basic.subject.where(resolve() is Patient)"),
        SearchParameterDef("writer", "u:w", ParamType.REFERENCE, ("Basic",),
                           "Basic.author.where(resolve() is Practitioner) | Basic.subject"),
    ]
    aliases = SearchParameterRegistry(base).aliases()
    assert aliases == {"Basic": {"patient": Alias("subject", "Patient")}}

"""Behaviour of the in-memory terminology service ($lookup, $expand, $validate-code, $translate)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.conformance.terminology import Terminology
from fhir_server.errors import BadRequest, NotFound, NotSupported

CS = "http://example.org/CodeSystem/place"
VS = "http://example.org/ValueSet/place"
CM = "http://example.org/ConceptMap/place-to-region"
REGION = "http://example.org/CodeSystem/region"


def code_system(version: str = "2025", **extra: Any) -> dict[str, Any]:
    """A small Vietnamese code system, with one nested concept and a property."""
    return {
        "resourceType": "CodeSystem",
        "url": CS,
        "version": version,
        "status": "active",
        "content": "complete",
        "property": [{"code": "kind", "type": "string"}],
        "concept": [
            {
                "code": "01",
                "display": "Thành phố Hà Nội",
                "designation": [{"language": "en", "value": "Hanoi City"}],
                "property": [{"code": "kind", "valueString": "city"}],
            },
            {
                "code": "48",
                "display": "Thành phố Đà Nẵng",
                "concept": [{"code": "48-1", "display": "Quận Hải Châu"}],
            },
            {"code": "K", "display": "Kinh"},
            {"code": "KM", "display": "Khơ-me"},
        ],
        **extra,
    }


def value_set(compose: dict[str, Any] | None = None, url: str = VS) -> dict[str, Any]:
    """A value set of the whole small code system unless ``compose`` says otherwise."""
    return {
        "resourceType": "ValueSet",
        "url": url,
        "status": "active",
        "compose": compose or {"include": [{"system": CS}]},
    }


def concept_map() -> dict[str, Any]:
    """A map from the small code system to a region system; one code unmatched."""
    target = {"code": "N", "display": "North", "equivalence": "wider"}
    return {
        "resourceType": "ConceptMap",
        "url": CM,
        "status": "active",
        "sourceCanonical": VS,
        "targetCanonical": "http://example.org/ValueSet/region",
        "group": [
            {
                "source": CS,
                "target": REGION,
                "element": [
                    {"code": "01", "target": [target]},
                    {"code": "K", "target": [{"equivalence": "unmatched"}]},
                ],
            }
        ],
    }


def terminology(*resources: dict[str, Any]) -> Terminology:
    """A terminology of the given resources, or of the three defaults."""
    return Terminology(resources or (code_system(), value_set(), concept_map()))


# -- $lookup ----------------------------------------------------------------------------------


def test_lookup_returns_display_designations_and_properties() -> None:
    concept = terminology().lookup(CS, "01")
    assert concept is not None
    assert (concept.system, concept.code, concept.display) == (CS, "01", "Thành phố Hà Nội")
    assert [(d.language, d.value) for d in concept.designations] == [("en", "Hanoi City")]
    assert [(p.code, p.value_type, p.value) for p in concept.properties] == [
        ("kind", "String", "city")
    ]


def test_lookup_finds_nested_concepts() -> None:
    concept = terminology().lookup(CS, "48-1")
    assert concept is not None and concept.display == "Quận Hải Châu"


def test_lookup_of_unknown_code_returns_none() -> None:
    assert terminology().lookup(CS, "99") is None


def test_lookup_codes_are_case_sensitive_unless_the_code_system_says_not() -> None:
    assert terminology().lookup(CS, "k") is None
    insensitive = terminology(code_system(caseSensitive=False))
    found = insensitive.lookup(CS, "k")
    assert found is not None and found.display == "Kinh"


@pytest.mark.parametrize("canonical", [f"{CS}|2016", f"{CS}|2025", CS])
def test_lookup_honours_the_version_of_the_canonical(canonical: str) -> None:
    old = code_system("2016")
    old["concept"] = [{"code": "01", "display": "Hà Nội"}]
    concept = terminology(old, code_system("2025")).lookup(canonical, "01")
    expected = "Hà Nội" if canonical.endswith("2016") else "Thành phố Hà Nội"
    assert concept is not None and concept.display == expected


def test_lookup_with_separate_version_argument() -> None:
    old = code_system("2016")
    old["concept"] = [{"code": "01", "display": "Hà Nội"}]
    concept = terminology(old, code_system("2025")).lookup(CS, "01", version="2016")
    assert concept is not None and concept.version == "2016"


@pytest.mark.parametrize("canonical", ["http://example.org/CodeSystem/none", f"{CS}|1999"])
def test_lookup_in_unknown_code_system_raises_not_found(canonical: str) -> None:
    with pytest.raises(NotFound) as caught:
        terminology().lookup(canonical, "01")
    assert caught.value.message_id == "MSG_UNKNOWN_CODESYSTEM"


def test_canonical_indexes_resolve_url_and_version() -> None:
    service = terminology(code_system("2016"), code_system("2025"))
    assert service.code_systems.get(f"{CS}|2016") is not None
    assert service.code_systems.get(CS)["version"] == "2025"  # type: ignore[index]
    assert f"{CS}|2020" not in service.code_systems
    assert len(service.code_systems) == 1


# -- $expand ----------------------------------------------------------------------------------


def test_expand_lists_every_code_in_code_system_order() -> None:
    codes = [c.code for c in terminology().expand(VS)]
    assert codes == ["01", "48", "48-1", "K", "KM"]


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("ha noi", ["01"]),
        ("HÀ NỘI", ["01"]),
        ("noi ha", ["01"]),
        ("hanoi", ["01"]),  # the English designation "Hanoi City"
        ("da nang", ["48"]),
        ("kinh", ["K"]),
        ("kho", ["KM"]),
        ("me", ["KM"]),
        ("thanh pho", ["01", "48"]),
        ("48", ["48", "48-1"]),
        ("anh", []),  # not the start of a word: no substring match
        ("   ", ["01", "48", "48-1", "K", "KM"]),
    ],
)
def test_expand_filter_is_case_and_accent_insensitive_on_word_starts(
    text: str, codes: list[str]
) -> None:
    assert [c.code for c in terminology().expand(VS, text)] == codes


@pytest.mark.parametrize(
    ("offset", "count", "codes"),
    [(0, 2, ["01", "48"]), (2, 2, ["48-1", "K"]), (4, 10, ["KM"]), (9, 1, []), (1, 0, [])],
)
def test_expand_pages_with_offset_and_count(offset: int, count: int, codes: list[str]) -> None:
    assert [c.code for c in terminology().expand(VS, None, offset, count)] == codes


def test_expand_rejects_negative_paging() -> None:
    with pytest.raises(BadRequest):
        terminology().expand(VS, None, -1, 5)


def test_expand_of_enumerated_include_and_exclude() -> None:
    compose = {
        "include": [{"system": CS, "concept": [{"code": "K"}, {"code": "01"}, {"code": "X"}]}],
        "exclude": [{"system": CS, "concept": [{"code": "01"}]}],
    }
    assert [c.code for c in terminology(code_system(), value_set(compose)).expand(VS)] == ["K"]


def test_expand_of_external_system_uses_the_listed_displays() -> None:
    loinc = "http://loinc.org"
    compose = {"include": [{"system": loinc, "concept": [{"code": "1-8", "display": "X"}]}]}
    expanded = terminology(value_set(compose)).expand(VS)
    assert [(c.system, c.code, c.display) for c in expanded] == [(loinc, "1-8", "X")]


def test_expand_of_included_value_set() -> None:
    outer = value_set({"include": [{"valueSet": [VS]}]}, url="http://example.org/ValueSet/all")
    service = terminology(code_system(), value_set(), outer)
    assert len(service.expand("http://example.org/ValueSet/all")) == 5


def test_expand_of_compose_filter_other_than_equal_or_in_is_not_supported() -> None:
    compose = {"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a"}]}]}
    with pytest.raises(NotSupported):
        terminology(code_system(), value_set(compose)).expand(VS)


@pytest.mark.parametrize(("rule", "codes"), [
    ({"property": "kind", "op": "=", "value": "city"}, ["01"]),
    ({"property": "kind", "op": "=", "value": "town"}, []),
    ({"property": "code", "op": "in", "value": "K,KM,99"}, ["K", "KM"]),
])  # fmt: skip
def test_expand_applies_equal_and_in_filters_on_properties_and_code(
    rule: dict[str, str], codes: list[str]
) -> None:
    compose = {"include": [{"system": CS, "filter": [rule]}]}
    found = terminology(code_system(), value_set(compose)).expand(VS)
    assert [c.code for c in found] == codes


def test_expand_of_an_inline_value_set_is_not_cached() -> None:
    service = terminology()
    inline = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{
        "system": CS, "filter": [{"property": "kind", "op": "=", "value": "city"}]}]}}
    assert [c.code for c in service.expand_value_set(inline, "ha noi")] == ["01"]
    inline["compose"]["include"][0]["filter"][0]["value"] = "none"
    assert service.expand_value_set(inline) == []


def test_expand_of_unknown_value_set_raises_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        terminology().expand("http://example.org/ValueSet/none")
    assert caught.value.message_id == "MSG_UNKNOWN_VALUESET"


def test_expand_of_value_set_over_unknown_code_system_raises_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        terminology(value_set()).expand(VS)
    assert caught.value.message_id == "MSG_UNKNOWN_CODESYSTEM"


# -- $validate-code ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code", "display", "result"),
    [
        (CS, "01", None, True),
        (None, "01", None, True),
        (f"{CS}|2025", "48-1", None, True),
        (CS, "01", "Thành phố Hà Nội", True),
        (CS, "01", "thành phố hà nội", True),
        (CS, "01", "Hanoi City", True),
        (CS, "01", "Thanh pho Ha Noi", False),
        (CS, "99", None, False),
        ("http://example.org/other", "01", None, False),
    ],
)
def test_validate_code_checks_membership_and_display(
    system: str | None, code: str, display: str | None, result: bool
) -> None:
    outcome = terminology().validate_code(VS, system, code, display)
    assert outcome.result is result
    assert (outcome.message == "") is result


def test_validate_code_result_unpacks_as_result_and_message() -> None:
    result, message = terminology().validate_code(VS, CS, "K", "Kinh")
    assert (result, message) == (True, "")


def test_validate_code_in_fragment_code_system_says_the_list_may_be_incomplete() -> None:
    service = terminology(code_system(content="fragment"), value_set())
    outcome = service.validate_code(VS, CS, "99")
    assert not outcome.result and "fragment" in outcome.message


def test_validate_code_in_unknown_value_set_raises_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        terminology().validate_code("http://example.org/ValueSet/none", CS, "01")
    assert caught.value.message_id == "MSG_UNKNOWN_VALUESET"


# -- $translate -------------------------------------------------------------------------------


def test_translate_with_concept_map_url_returns_targets() -> None:
    [match] = terminology().translate(CS, "01", url=CM)
    assert match.equivalence == "wider" and match.source == CM
    assert match.concept is not None
    assert (match.concept.system, match.concept.code, match.concept.display) == (
        REGION,
        "N",
        "North",
    )


def test_translate_reports_unmatched_targets_without_a_concept() -> None:
    [match] = terminology().translate(CS, "K", url=CM)
    assert (match.equivalence, match.concept) == ("unmatched", None)


@pytest.mark.parametrize(
    ("source", "target", "found"),
    [
        (None, None, 1),
        (VS, None, 1),
        (None, REGION, 1),
        (None, "http://example.org/ValueSet/region", 1),
        ("http://example.org/ValueSet/other", None, 0),
        (None, "http://loinc.org", 0),
    ],
)
def test_translate_without_url_searches_maps_by_source_and_target(
    source: str | None, target: str | None, found: int
) -> None:
    assert len(terminology().translate(CS, "01", source=source, target=target)) == found


def test_translate_of_unmapped_code_or_system_is_empty() -> None:
    service = terminology()
    assert service.translate(CS, "48", url=CM) == []
    assert service.translate("http://example.org/other", "01", url=CM) == []


def test_translate_with_unknown_concept_map_raises_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        terminology().translate(CS, "01", url="http://example.org/ConceptMap/none")
    assert caught.value.message_id == "MSG_UNKNOWN_CONCEPTMAP"


# -- loading ----------------------------------------------------------------------------------


def test_from_directory_loads_json_files_and_ignores_other_resources(tmp_path: Any) -> None:
    import orjson

    for name, resource in {
        "cs.json": code_system(),
        "vs.json": value_set(),
        "patient.json": {"resourceType": "Patient", "id": "x"},
    }.items():
        (tmp_path / name).write_bytes(orjson.dumps(resource))
    service = Terminology.from_directory(tmp_path)
    assert (len(service.code_systems), len(service.value_sets), len(service.concept_maps)) == (
        1,
        1,
        0,
    )
    assert len(service.expand(VS)) == 5


def test_adding_a_code_system_refreshes_cached_expansions() -> None:
    service = terminology(code_system("2016"), value_set())
    assert len(service.expand(VS)) == 5
    newer = code_system("2026")
    newer["concept"] = [{"code": "01", "display": "Hà Nội"}]
    service.add(newer)
    assert [c.code for c in service.expand(VS)] == ["01"]

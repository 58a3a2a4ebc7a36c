"""The parsing of a Bundle's conditional criteria and the search for its reference objects."""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import parse_qsl

from fhir_server.interactions.bundle_entries import query_pairs, references_in

CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"


def test_query_pairs_parse_as_parse_qsl_keeping_blank_values() -> None:
    for query in (f"identifier={CCCD}%7C001090012345", "a=1&b=&c=x%20y&a=2", "", "flag"):
        assert query_pairs(query) == parse_qsl(query, keep_blank_values=True)


def test_each_caller_gets_its_own_list_of_a_remembered_query() -> None:
    first = query_pairs("identifier=x%7C1")
    first.append(("_count", "1"))
    first[0] = ("changed", "")
    assert query_pairs("identifier=x%7C1") == [("identifier", "x|1")]


def test_reference_objects_are_found_at_any_depth_in_document_order() -> None:
    resource = {
        "resourceType": "Encounter",
        "subject": {"reference": "Patient/p1"},
        "diagnosis": [{"condition": {"reference": "urn:uuid:c1"}},
                      {"condition": {"display": "no reference"}}],
        "extension": [{"url": "x", "valueReference": {"reference": "Organization/o1"}}],
        "contained": [{"resourceType": "Basic", "author": {"reference": "#p"}}],
        "note": [{"text": "reference"}],
        "identifier": [{"value": {"reference": 1}}],  # not a string: not a reference object
    }
    found = [holder["reference"] for holder in references_in(resource)]
    assert found == ["Patient/p1", "urn:uuid:c1", "Organization/o1", "#p"]


def test_reference_objects_inside_dict_and_list_subclasses_are_found_too() -> None:
    inner = OrderedDict(reference="Patient/p1")
    resource = {"resourceType": "Observation", "performer": _List([inner])}
    assert references_in(resource) == [inner]
    assert references_in("Patient/p1") == []


class _List(list[object]):
    pass

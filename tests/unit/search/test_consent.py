"""How a Consent reads (``search.consent``): its grants, and the rule they make in memory."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fhir_server.search.consent import (
    MAX_ROWS,
    consent_allows,
    consent_facts,
    consent_grants,
    permitting,
)
from fhir_server.search.model import OPEN_END, ConsentRule, SearchIndex
from tests.unit.search.search_builders import index, observation

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TYPES = "http://hl7.org/fhir/resource-types"
X, Y = "Organization/x", "Organization/y"
NOW = time.time_ns() // 1000


def consent(provision: dict[str, Any] | None = None, status: str = "active",
            scope: str = "patient-privacy", rule: str | None = "OPTIN") -> dict[str, Any]:
    found: dict[str, Any] = {
        "resourceType": "Consent", "id": "c1", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": scope}]},
        "patient": {"reference": "Patient/p1"}}
    if rule:
        found["policyRule"] = {"coding": [{"code": rule}]}
    if provision is not None:
        found["provision"] = provision
    return found


def actor(reference: str) -> list[dict[str, Any]]:
    return [{"reference": {"reference": reference}}]


def rows(provision: dict[str, Any], **options: Any) -> set[tuple[Any, ...]]:
    """The grants as (permit, actor, type, code, label) for short comparisons."""
    return {(g.permit, g.actor, g.resource_type, g.code, g.label)
            for g in consent_grants(consent(provision, **options), ["p1"])}


def test_a_permit_for_a_facility_is_one_grant_for_it() -> None:
    assert rows({"type": "permit", "actor": actor(X)}) == {(True, X, "", "", "")}


def test_only_an_active_privacy_or_research_consent_about_one_patient_counts() -> None:
    provision = {"type": "permit", "actor": actor(X)}
    assert rows(provision, status="inactive") == set()
    assert rows(provision, status="draft") == set()
    assert rows(provision, scope="treatment") == set()
    assert {g.scope for g in consent_grants(consent(provision, scope="research"), ["p1"])} == {
        "research"}
    assert consent_grants(consent(provision), []) == ()
    assert consent_grants(consent(provision), ["p1", "p2"]) == ()
    assert consent_grants(consent(None), ["p1"]) == ()  # no provision: nothing shared


def test_without_a_type_the_root_decides_by_the_policy_rule() -> None:
    assert rows({"actor": actor(X)}, rule="OPTIN") == {(True, X, "", "", "")}
    assert rows({"actor": actor(X)}, rule="OPTOUT") == {(False, X, "", "", "")}
    assert rows({"actor": actor(X), "provision": [
        {"type": "permit", "class": [{"system": TYPES, "code": "Observation"}]}]},
        rule=None) == {(True, X, "Observation", "", "")}


def test_a_deny_inside_a_permit_is_a_deny_within_the_permits_conditions() -> None:
    found = rows({"type": "permit", "actor": actor(X), "provision": [
        {"type": "deny", "class": [{"system": TYPES, "code": "MedicationRequest"}]}]})
    assert found == {(True, X, "", "", ""), (False, X, "MedicationRequest", "", "")}


def test_a_permit_inside_a_deny_is_not_applied() -> None:
    found = rows({"type": "permit", "actor": actor(X), "provision": [
        {"type": "deny", "securityLabel": [{"system": V3, "code": "PSY"}], "provision": [
            {"type": "permit", "actor": actor(X)}]}]})
    assert found == {(True, X, "", "", ""), (False, X, "", "", f"{V3}|PSY")}


def test_what_cannot_be_evaluated_permits_nothing_and_widens_a_deny() -> None:
    unknown_class = [{"system": "urn:profiles", "code": "vn-observation"}]
    assert rows({"type": "permit", "actor": actor(X), "class": unknown_class}) == set()
    assert rows({"type": "deny", "actor": actor(X), "class": unknown_class}) == {
        (False, X, "", "", "")}
    assert rows({"type": "permit", "actor": actor(X), "code": [{"text": "labs"}]}) == set()
    assert rows({"type": "permit", "actor": actor(X),
                 "dataPeriod": {"start": "2020-01-01"}}) == set()
    two_actors = {"type": "permit", "actor": actor(X), "provision": [
        {"type": "deny", "actor": actor(Y)}, {"type": "permit", "actor": actor(Y)}]}
    assert rows(two_actors) == {(True, X, "", "", ""), (False, Y, "", "", "")}


def test_only_rules_about_reading_count() -> None:
    collect = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": "collect"}]}]
    assert rows({"type": "permit", "actor": actor(X), "action": collect}) == set()
    assert rows({"type": "deny", "actor": actor(X), "action": collect}) == set()
    other = [{"coding": [{"system": "urn:other", "code": "collect"}]}]
    assert rows({"type": "deny", "actor": actor(X), "action": other}) == {
        (False, X, "", "", "")}


def test_conditions_of_one_value_meet_across_levels() -> None:
    observation = [{"system": TYPES, "code": "Observation"}]
    condition = [{"system": TYPES, "code": "Condition"}]
    assert rows({"type": "permit", "class": observation + condition, "provision": [
        {"type": "deny", "class": condition}]}) == {
        (True, "*", "Observation", "", ""), (True, "*", "Condition", "", ""),
        (False, "*", "Condition", "", "")}
    assert rows({"type": "permit", "class": observation, "provision": [
        {"type": "deny", "class": condition}]}) == {(True, "*", "Observation", "", "")}


def test_periods_bound_the_grants() -> None:
    grants = consent_grants(consent({"type": "permit", "actor": actor(X), "period": {
        "start": "2020-01-01", "end": "2020-12-31"}, "provision": [
        {"type": "deny", "period": {"start": "2020-06-01"}}]}), ["p1"])
    permit = next(g for g in grants if g.permit)
    deny = next(g for g in grants if not g.permit)
    assert permit.start < deny.start < permit.end == deny.end < OPEN_END


def test_too_many_rows_deny_everything_and_permit_nothing() -> None:
    codes = [{"coding": [{"system": "urn:c", "code": str(n)}]} for n in range(MAX_ROWS + 1)]
    assert rows({"type": "permit", "actor": actor(X), "code": codes}) == set()
    assert rows({"type": "deny", "actor": actor(X), "code": codes}) == {(False, "*", "", "", "")}


def test_actors_by_identifier_and_everyone() -> None:
    by_code = [{"reference": {"identifier": {
        "system": "http://fhir.ehealth.gov.vn/core/sid/provider-code", "value": "01929"}}}]
    assert rows({"type": "permit", "actor": by_code}) == {
        (True, "identifier|http://fhir.ehealth.gov.vn/core/sid/provider-code|01929", "", "", "")}
    assert rows({"type": "permit"}) == {(True, "*", "", "", "")}
    assert rows({"type": "deny", "actor": [{"reference": {"display": "someone"}}]}) == {
        (False, "*", "", "", "")}


def _index_of(labels: tuple[str, ...] = (), source: str | None = None,
           kind: str = "Observation") -> SearchIndex:
    return SearchIndex(kind, "o1", tokens=tuple(("_security", V3, label) for label in labels),
                       uris=(("_source", source),) if source else (), compartments=("p1",))


RULE = ConsentRule(own=X, actors=frozenset({X}), sensitive=frozenset({f"{V3}|HIV"}),
                   open_types=frozenset({"Patient"}))


@pytest.mark.parametrize(("provision", "index", "allowed"), [
    ({"type": "permit", "actor": actor(X)}, _index_of(), True),
    ({"type": "permit", "actor": actor(Y)}, _index_of(), False),
    ({"type": "permit", "actor": actor(X)}, _index_of(("HIV",)), False),
    ({"type": "permit", "actor": actor(X), "provision": [
        {"type": "permit", "securityLabel": [{"system": V3, "code": "HIV"}]}]},
     _index_of(("HIV",)), True),
    ({"type": "permit", "actor": actor(X), "provision": [
        {"type": "deny", "class": [{"system": TYPES, "code": "Observation"}]}]},
     _index_of(), False),
    ({"type": "permit", "actor": actor(X), "period": {"end": "2021-01-01"}}, _index_of(), False),
    ({"type": "deny", "actor": actor(X)}, _index_of(source=X), True),
    ({"type": "deny", "actor": actor(X)}, _index_of(kind="Patient"), True),
])
def test_the_rule_in_memory(provision: dict[str, Any], index: SearchIndex,
                            allowed: bool) -> None:
    grants = consent_grants(consent(provision), ["p1"])
    assert consent_allows(RULE, index, grants, NOW) is allowed


def test_a_resource_of_two_patients_needs_both() -> None:
    both = SearchIndex("Observation", "o1", compartments=("p1", "p2"))
    first = consent_grants(consent({"type": "permit", "actor": actor(X)}), ["p1"])
    second = consent_grants({**consent({"type": "permit", "actor": actor(X)}), "id": "c2"},
                            ["p2"])
    assert not consent_allows(RULE, both, first, NOW)
    assert consent_allows(RULE, both, first + second, NOW)
    assert permitting(RULE, both, first + second, NOW, "p2") == frozenset({"c2"})


def test_a_rule_that_concerns_another_purpose_or_scope_does_not_apply() -> None:
    grants = consent_grants(consent({"type": "permit", "purpose": [{"code": "HRESCH"}]}),
                            ["p1"])
    assert not consent_allows(RULE, _index_of(), grants, NOW)
    research = ConsentRule(None, frozenset(), scope="research", purpose="HRESCH")
    assert not consent_allows(research, _index_of(), grants, NOW)  # a privacy Consent
    studied = consent_grants(consent({"type": "permit", "purpose": [{"code": "HRESCH"}]},
                                     scope="research"), ["p1"])
    assert consent_allows(research, _index_of(), studied, NOW)


@pytest.mark.parametrize("meta", [
    {}, {"source": "Organization/x"},
    {"source": "urn:fhir-server:client:his", "security": [
        {"system": V3, "code": "HIV", "display": "HIV"}, {"code": "R"}]},
])
def test_the_facts_the_rule_reads_are_those_the_index_holds(meta: dict[str, Any]) -> None:
    resource = observation(meta=meta)
    full, facts = index(resource), consent_facts(resource)
    assert {t for t in full.tokens if t[0] == "_security"} == set(facts.tokens)
    assert {u for u in full.uris if u[0] == "_source"} == set(facts.uris)

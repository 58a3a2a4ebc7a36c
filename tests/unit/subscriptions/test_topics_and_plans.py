"""Topics (Basic-wrapped SubscriptionTopics), Subscription plans, the index of subscriptions
and the patients a Subscription is about."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.indexing import compartment_patients, index_resource
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.search.subscription_patients import criteria_patients
from fhir_server.security.caller import Caller
from fhir_server.subscriptions.index import Registered, SubscriptionIndex
from fhir_server.subscriptions.plans import Content, make_plan
from fhir_server.subscriptions.topics import compile_all, compile_topic, shipped_topics
from tests.api.subscribing import classic_subscription, topic_subscription

REGISTRY = SearchParameterRegistry.load()
TOPICS = compile_all(shipped_topics(), REGISTRY)
BASE = "https://fhir.sskdt.vn/SubscriptionTopic/"


def _encounter(status: str, patient: str = "p1") -> Any:
    return index_resource({"resourceType": "Encounter", "id": "e1", "status": status,
                           "class": {"code": "AMB"},
                           "subject": {"reference": f"Patient/{patient}"}}, REGISTRY)


def test_every_shipped_topic_compiles_and_the_issues_list_is_covered() -> None:
    assert len(TOPICS) == len(shipped_topics())
    watched = {kind for topic in TOPICS.values() for kind in topic.resource_types}
    assert watched == {"Encounter", "DocumentReference", "Observation", "Condition",
                       "MedicationRequest", "Consent"}


@pytest.mark.parametrize(("kind", "before", "after", "fires"), [
    ("create", None, "finished", True),
    ("create", None, "in-progress", False),
    ("update", "in-progress", "finished", True),
    ("update", "finished", "finished", False),
    ("update", "finished", "cancelled", False),
    ("delete", "finished", None, False),
])
def test_the_finished_visit_trigger_compares_the_versions_before_and_after(
    kind: str, before: str | None, after: str | None, fires: bool,
) -> None:
    (trigger,) = TOPICS[BASE + "encounter-finished"].triggers
    assert trigger.fires(kind, before and _encounter(before),
                         after and _encounter(after)) is fires


def _consent(scope: str, category: str) -> Any:
    coded = {"system": "http://terminology.hl7.org/CodeSystem/", "code": ""}
    return index_resource({
        "resourceType": "Consent", "id": "c1", "status": "active",
        "scope": {"coding": [{**coded, "system": coded["system"] + "consentscope",
                              "code": scope}]},
        "category": [{"coding": [{**coded, "system": coded["system"] + "v3-ActReason",
                                  "code": category}]}],
        "patient": {"reference": "Patient/p1"}}, REGISTRY)


@pytest.mark.parametrize(("kind", "scope", "category", "fires"), [
    ("create", "patient-privacy", "BTG", True),
    ("create", "treatment", "BTG", False),
    ("create", "patient-privacy", "TREAT", False),
    ("update", "patient-privacy", "BTG", False),
])
def test_the_emergency_access_topic_fires_on_a_new_emergency_privacy_consent_only(
    kind: str, scope: str, category: str, fires: bool,
) -> None:
    topic = TOPICS[BASE + "emergency-access"]
    assert topic.patient_only and not TOPICS[BASE + "consent"].patient_only
    (trigger,) = topic.triggers
    consent = _consent(scope, category)
    assert trigger.fires(kind, consent if kind == "update" else None, consent) is fires


def test_a_topic_without_url_trigger_or_with_fhirpath_alone_is_refused() -> None:
    topic = copy.deepcopy(shipped_topics()[0])
    for change in (lambda t: t["extension"].pop(0),
                   lambda t: t.update(extension=[e for e in t["extension"]
                                                 if "resourceTrigger" not in e["url"]])):
        broken = copy.deepcopy(topic)
        change(broken)
        with pytest.raises(BadRequest):
            compile_topic(broken, REGISTRY)
    fhirpath = copy.deepcopy(topic)
    trigger = next(e for e in fhirpath["extension"] if "resourceTrigger" in e["url"])
    trigger["extension"].append({"url": "fhirPathCriteria", "valueString": "true"})
    with pytest.raises(BadRequest):
        compile_topic(fhirpath, REGISTRY)


def test_filters_in_each_form_narrow_the_topic_and_name_the_patient() -> None:
    for text in ("Encounter?patient=Patient/p1", "patient=Patient/p1",
                 "Encounter.patient=Patient/p1", "patient=p1"):
        plan = make_plan({**topic_subscription("encounter-new", text), "id": "s"}, TOPICS,
                         REGISTRY)
        assert plan.patients == {"p1"}
        topic = TOPICS[BASE + "encounter-new"]
        assert plan.fires(topic, "create", "Encounter", None, _encounter("planned"))
        assert not plan.fires(topic, "create", "Encounter", None,
                              _encounter("planned", "p2"))


def test_payload_content_channel_and_version_are_read_from_the_subscription() -> None:
    subscription = topic_subscription("observation", content="full-resource", heartbeat=30,
                                      payload="application/fhir+json; fhirVersion=4.3")
    plan = make_plan({**subscription, "id": "s"}, TOPICS, REGISTRY)
    assert (plan.content, plan.fhir_version, plan.heartbeat_s) == \
        (Content.FULL_RESOURCE, "4.3", 30)
    assert plan.headers == (("X-Api-Key", "secret-of-the-receiver"),)
    classic = make_plan({**classic_subscription("Observation?code=8867-4", payload=None),
                         "id": "c"}, TOPICS, REGISTRY)
    assert (classic.topic, classic.content, classic.resource_types) == \
        (None, Content.EMPTY, {"Observation"})


@pytest.mark.parametrize("change", [
    {"criteria": "https://elsewhere/SubscriptionTopic/x"},
    {"criteria": "NoSuchType?a=b"},
    {"channel": {"type": "sms", "endpoint": "tel:+84", "payload": "text/plain"}},
    {"channel": {"type": "rest-hook", "endpoint": "https://x", "payload": "application/xml"}},
    {"channel": {"type": "rest-hook", "endpoint": "https://x",
                 "payload": "application/fhir+json; fhirVersion=5.0"}},
    {"channel": {"type": "rest-hook", "endpoint": "https://x", "header": ["no colon"]}},
    {"_criteria": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/"
                                  "StructureDefinition/backport-filter-criteria",
                                  "valueString": "Condition?patient=Patient/p1"}]}},
])
def test_what_the_server_cannot_serve_is_refused(change: dict[str, Any]) -> None:
    subscription = {**topic_subscription("encounter-new"), "id": "s", **change}
    with pytest.raises(BadRequest):
        make_plan(subscription, TOPICS, REGISTRY)


def test_a_subscription_is_in_the_compartments_of_the_patients_it_filters_on() -> None:
    mine = topic_subscription("encounter-new", "patient=Patient/p1")
    assert criteria_patients(mine) == {"p1"}
    assert compartment_patients({**mine, "id": "s"}, REGISTRY) == {"p1"}
    assert index_resource({**mine, "id": "s"}, REGISTRY).compartments == ("p1",)
    assert criteria_patients(classic_subscription("Observation?subject=Patient/p2")) == {"p2"}
    assert criteria_patients(topic_subscription("observation")) == set()
    assert criteria_patients(classic_subscription("Observation?subject=Group/g1")) == set()


def test_the_index_finds_a_patients_subscriptions_and_the_unfiltered_ones_only() -> None:
    index = SubscriptionIndex()
    owner = Caller()
    for n in range(1000):
        subscription = {**topic_subscription("encounter-new", f"patient=Patient/p{n}"),
                        "id": f"s{n}", "status": "active"}
        index.put(Registered(make_plan(subscription, TOPICS, REGISTRY), owner))
    portal = {**topic_subscription("encounter-finished"), "id": "portal", "status": "active"}
    index.put(Registered(make_plan(portal, TOPICS, REGISTRY), owner))
    found = {r.plan.id for r in index.candidates("Encounter", ["p7"])}
    assert found == {"s7", "portal"}
    assert index.candidates("Observation", ["p7"]) == []
    assert index.watches("Encounter") and not index.watches("Observation")
    assert index.needs_previous("Encounter", TOPICS)
    index.remove("portal")
    assert not index.needs_previous("Encounter", TOPICS)
    off = {**topic_subscription("encounter-new", "patient=Patient/p7"), "id": "s7",
           "status": "off"}
    index.put(Registered(make_plan(off, TOPICS, REGISTRY), owner))
    assert index.candidates("Encounter", ["p7"]) == []

"""Property: the Consent rule selects the same resources in SQL (``search_where``), in memory
(``search.matching.visible`` with the patients' grants) and as a MongoDB filter
(``storage.mongo.consent_filter``, evaluated by the contract suite's stand-in); and in SQL
again with what one patient's grants decide resolved beforehand (``search.consent.
consent_focus``, as the SQLite store does for a query about one patient).

Random Consents (permit or deny roots, actors, periods, classes, codes, labels, data
references, nested permits and denies, inactive ones) of random patients, over random
resources of those patients (with security labels, written by a facility or not), judged for
random callers (a facility, its doctor, another facility, research).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.consent import consent_focus
from fhir_server.search.matching import visible
from fhir_server.search.model import ConsentRule, SearchIndex, SearchQuery, Visibility
from fhir_server.storage.mongo.documents import index_document
from fhir_server.storage.mongo.search_filters import visibility_filter
from fhir_server.storage.sqlite.search_sql import find_ids
from tests.contract.mongo_fake import matches as mongo_matches
from tests.unit.search.search_builders import LOINC, Database, index

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
HIV, PSY, NORMAL = f"{V3}|HIV", f"{V3}|PSY", f"{V3}|N"
SENSITIVE = frozenset({HIV, PSY})
CODES = ["718-7", "8867-4", "2345-7"]
ACTORS = ["Organization/x", "Organization/y", "Practitioner/d"]
TYPES = ["Observation", "Condition", "MedicationRequest"]
NOW = time.time()


def _coding(token: str) -> dict[str, str]:
    system, code = token.split("|")
    return {"system": system, "code": code}


def _period(kind: str) -> dict[str, str] | None:
    return {"now": {"start": "2020-01-01", "end": "2099-01-01"},
            "past": {"start": "2020-01-01", "end": "2021-01-01"},
            "future": {"start": "2098-01-01"}, "open": None}[kind]


_CONDITIONS = {
    "actor": st.lists(st.sampled_from(ACTORS), min_size=1, max_size=2, unique=True).map(
        lambda refs: [{"reference": {"reference": r}} for r in refs]),
    "period": st.sampled_from(["now", "past", "future"]).map(_period),
    "class": st.lists(st.sampled_from([*TYPES, "Unknown"]), min_size=1, max_size=2,
                      unique=True).map(lambda ts: [
        {"system": "http://hl7.org/fhir/resource-types" if t != "Unknown" else "urn:x",
         "code": t} for t in ts]),
    "code": st.lists(st.sampled_from(CODES), min_size=1, max_size=2, unique=True).map(
        lambda cs: [{"coding": [{"system": LOINC, "code": c}]} for c in cs]),
    "securityLabel": st.lists(st.sampled_from([HIV, PSY, NORMAL]), min_size=1, max_size=2,
                              unique=True).map(lambda ls: [_coding(x) for x in ls]),
    "action": st.sampled_from(["access", "collect"]).map(lambda a: [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": a}]}]),
    "data": st.sampled_from(["o0", "c1"]).map(lambda i: [{"meaning": "instance",
                                                        "reference": {"reference": i}}]),
}
#: A provision's conditions: a few of them (most real provisions name one or two).
conditions = st.lists(st.sampled_from(sorted(_CONDITIONS)), max_size=2, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: _CONDITIONS[key] for key in keys}))


def _provision(kind: str, conds: dict[str, Any], nested: list[dict[str, Any]]) -> dict[str, Any]:
    found = {**conds, "type": kind}
    if "data" in found:
        found["data"] = [{"meaning": "instance", "reference": {"reference": (
            "Observation/" if d["reference"]["reference"].startswith("o") else "Condition/")
            + d["reference"]["reference"]}} for d in found["data"]]
    return {**found, **({"provision": nested} if nested else {})}


nested = st.builds(lambda kind, conds, deeper: _provision(kind, conds, deeper),
                   st.sampled_from(["permit", "deny"]), conditions,
                   st.lists(st.builds(lambda k, c: _provision(k, c, []),
                                      st.sampled_from(["permit", "deny"]), conditions),
                            max_size=1))
consents = st.builds(
    lambda number, patient, status, kind, conds, children: {
        "resourceType": "Consent", "id": f"k{number}", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "patient": {"reference": f"Patient/p{patient}"},
        "policyRule": {"coding": [{"code": "OPTIN"}]},
        "provision": _provision(kind, conds, children)},
    st.integers(0, 9), st.integers(0, 1), st.sampled_from(["active", "active", "inactive"]),
    st.sampled_from(["permit", "permit", "deny"]), conditions,
    st.lists(nested, max_size=2))
resources = st.builds(
    lambda number, kind, patient, code, labels, source: {
        "resourceType": kind, "id": f"{kind[0].lower()}{number}",
        "meta": {"security": [_coding(x) for x in labels],
                 **({"source": source} if source else {})},
        "subject": {"reference": f"Patient/p{patient}"},
        **({"code": {"coding": [{"system": LOINC, "code": code}]}} if kind != "MedicationRequest"
           else {"medicationCodeableConcept": {"coding": [{"system": LOINC, "code": code}]}}),
    },
    st.integers(0, 3), st.sampled_from(TYPES), st.integers(0, 1), st.sampled_from(CODES),
    st.lists(st.sampled_from([HIV, PSY, NORMAL]), max_size=2, unique=True),
    st.sampled_from([None, "Organization/x", "Organization/y"]))
rules = st.builds(
    lambda own, actors, open_types: ConsentRule(own, frozenset(actors), sensitive=SENSITIVE,
                                                open_types=frozenset(open_types)),
    st.sampled_from([None, "Organization/x", "Organization/y"]),
    st.lists(st.sampled_from(ACTORS), min_size=1, max_size=2, unique=True),
    st.sampled_from([(), ("Condition",)]))


def _mongo_document(found: SearchIndex) -> dict[str, Any]:
    return {"type": found.resource_type, "id": found.id, "deleted": False,
            "idx": index_document(found)}


def _selected(stored: list[dict[str, Any]], rule: ConsentRule, kind: str | None) -> dict[
        str, set[str]]:
    db = Database()
    for resource in stored:
        db.add(resource)
    indexes = [index(r) for r in stored]
    latest = {(i.resource_type, i.id): i for i in indexes}
    grants = [g for i in latest.values() for g in i.grants]
    seen = Visibility(consent=rule)
    sql = set(find_ids(db.conn, SearchQuery(kind, visibility=seen)))
    memory = {i.id for i in latest.values() if kind in (None, i.resource_type)
              and visible(seen, i, grants)}
    mongo_rule = replace(seen, consent=replace(rule, grants=tuple(grants)))
    filter_ = visibility_filter(mongo_rule, kind)
    mongo = {i.id for i in latest.values() if kind in (None, i.resource_type)
             and mongo_matches(_mongo_document(i), filter_)}
    found = {"sql": sql, "memory": memory, "mongo": mongo}
    for patient in ("p0", "p1"):
        focus = consent_focus(rule, patient, grants, time.time_ns() // 1000)
        if focus is not None:
            focused = replace(seen, consent=replace(rule, focus=focus))
            found[f"sql {focus}"] = set(find_ids(db.conn, SearchQuery(kind, visibility=focused)))
    return found


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(consents, min_size=1, max_size=4), st.lists(resources, min_size=1, max_size=8),
       rules,
       st.sampled_from([None, "Observation", "Condition"]))
def test_sql_memory_and_mongo_agree_on_what_consents_share(
    consent_list: list[dict[str, Any]], resource_list: list[dict[str, Any]], rule: ConsentRule,
    kind: str | None,
) -> None:
    selected = _selected([*consent_list, *resource_list], rule, kind)
    assert all(found == selected["memory"] for found in selected.values()), selected

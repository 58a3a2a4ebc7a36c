"""``ConsentRule`` as a MongoDB filter document, from the caller's grants resolved beforehand.

A filter cannot join the grants kept in the Consents' documents, so the store first reads
the grants that concern the caller (``MongoStore.resolve``: actor, scope) and puts them in
the rule (``ConsentRule.grants``). The patients whose grants that apply now are the same
share one condition on the resource (``_permits``); a resource passes when every patient in
whose compartment it is belongs to a group whose condition it meets (a deleted resource of a
type of the Patient compartment, which has no index left, none). The rule is
``search.consent``'s; the cost grows with the number of patients who granted the caller
something (docs/mongodb.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fhir_server.search.consent import (
    AGENT_PARAM,
    AUDIT_TYPE,
    OUTCOME_PARAM,
    SECURITY_PARAM,
    SOURCE_PARAM,
)
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import ConsentRule, Grant

__all__ = ["consent_filter"]

Filter = dict[str, Any]
_Conditions = tuple[bool, str, str, str, str]


def consent_filter(rule: ConsentRule) -> Filter:
    """Return "the caller may read the resource" under ``rule`` (its grants resolved)."""
    alternatives: list[Filter] = [{"type": {"$in": sorted(rule.open_types)}}]
    if rule.own is not None:
        kind, _, id = rule.own.partition("/")
        alternatives += [
            {"type": {"$ne": AUDIT_TYPE},
             "idx.uris": {"$elemMatch": {"p": SOURCE_PARAM, "u": rule.own}}},
            {"type": AUDIT_TYPE, "idx.references": {"$elemMatch": {
                "p": AGENT_PARAM, "t": kind, "i": id, "u": ""}},
             "idx.tokens": {"$elemMatch": {"p": OUTCOME_PARAM, "c": "0"}}}]
    alternatives.append({"$and": [
        {"type": {"$ne": AUDIT_TYPE}},
        {"$or": [{"deleted": False}, {"type": {"$nin": sorted(compartment_types())}}]},
        _everyone(rule, _groups(rule, rule.grants or ()))]})
    return {"$or": alternatives}


def _groups(rule: ConsentRule, grants: Sequence[Grant]) -> dict[frozenset[_Conditions],
                                                                 list[str]]:
    """The patients by the conditions of the grants of theirs that concern the caller now."""
    now = time.time_ns() // 1000
    rules: dict[str, set[_Conditions]] = {}
    for grant in grants:
        if rule.applies_to(grant, now):
            rules.setdefault(grant.patient, set()).add(
                (grant.permit, grant.resource_type, grant.target, grant.code, grant.label))
    groups: dict[frozenset[_Conditions], list[str]] = {}
    for patient, conditions in sorted(rules.items()):
        groups.setdefault(frozenset(conditions), []).append(patient)
    return groups


def _everyone(rule: ConsentRule, groups: dict[frozenset[_Conditions], list[str]]) -> Filter:
    """Every patient of the resource's compartments permits it (none: vacuously)."""
    granting = sorted(p for patients in groups.values() for p in patients)
    parts: list[Filter] = [
        {"$nor": [{"idx.compartments": {"$elemMatch": {"$nin": granting}}}]}]
    for conditions, patients in groups.items():
        parts.append({"$or": [{"idx.compartments": {"$nin": patients}},
                              _permits(rule, conditions)]})
    return {"$and": parts}


def _permits(rule: ConsentRule, conditions: frozenset[_Conditions]) -> Filter:
    """A permit covers the resource, no deny does, and each sensitive label it carries is
    named by a permit that covers it."""
    permits = [c for c in conditions if c[0]]
    denies = [c for c in conditions if not c[0]]
    parts: list[Filter] = [{"$or": [_covers(c) for c in permits] or [{"_id": {"$in": []}}]}]
    if denies:
        parts.append({"$nor": [_covers(c) for c in denies]})
    for label in sorted(rule.sensitive):
        naming = [_covers(c) for c in permits if c[4] == label]
        parts.append({"$or": [{"$nor": [_label(label)]}, *naming]})
    return {"$and": parts}


def _covers(condition: _Conditions) -> Filter:
    _, kind, target, code, label = condition
    parts: list[Filter] = []
    if kind:
        parts.append({"type": kind})
    if target:
        target_type, _, target_id = target.partition("/")
        parts.append({"type": target_type, "id": target_id})
    if code:
        system, _, value = code.partition("|")
        parts.append({"idx.tokens": {"$elemMatch": {"s": system, "c": value}}})
    if label:
        parts.append(_label(label))
    return {"$and": parts} if parts else {}


def _label(label: str) -> Filter:
    system, _, code = label.partition("|")
    return {"idx.tokens": {"$elemMatch": {"p": SECURITY_PARAM, "s": system, "c": code}}}

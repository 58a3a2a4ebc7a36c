"""``ConsentRule`` as SQL (``search.consent`` states the rule): the condition that a row of
``resources`` is one the caller may read under patients' Consents, joining the grants of the
patients in whose compartment it is (``consent_grant``, one row per rule, patient and actor)
and the resource's own index rows (its ``meta.source``, tokens and security labels).

Per resource the cost is a few primary-key probes: its ``meta.source`` row, its compartment
rows, and for each of its patients the grants naming the caller (the ``consent_grant``
primary key leads with the patient and the actor); see docs/consent.md for measurements.
"""

from __future__ import annotations

import functools
import time

from fhir_server.search.consent import (
    AGENT_PARAM,
    AUDIT_TYPE,
    OUTCOME_PARAM,
    SECURITY_PARAM,
    SOURCE_PARAM,
)
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import ConsentRule
from fhir_server.storage.sqlite.search_tables import param_key, system_key

__all__ = ["consent_condition"]

Condition = tuple[str, list[object]]


def _in(column: str, values: list[str]) -> Condition:
    return f"{column} IN ({', '.join('?' for _ in values) or 'NULL'})", [*values]


def _join(operator: str, parts: list[Condition], empty: str) -> Condition:
    if not parts:
        return empty, []
    return operator.join(f"({sql})" for sql, _ in parts), [v for _, vs in parts for v in vs]


#: Stands for the current instant among the parameters of a compiled condition.
_NOW = object()


def consent_condition(alias: str, rule: ConsentRule) -> Condition:
    """``ConsentRule`` as SQL on the resources row ``alias``: of an open type, written by
    the caller, or permitted by every patient in whose compartment it is (none: vacuously).
    A deleted resource has no index rows left: one of a type of the Patient compartment is
    then hidden (history judges deletions by this row). Compiled once per rule and alias;
    the grants' periods are compared with the instant of the call."""
    sql, params = _compiled(alias, rule)
    now = time.time_ns() // 1000
    return sql, [now if value is _NOW else value for value in params]


@functools.lru_cache(maxsize=1024)
def _compiled(alias: str, rule: ConsentRule) -> tuple[str, tuple[object, ...]]:
    open_types = _in(f"{alias}.type", sorted(rule.open_types))
    applies = _grant_applies(alias, rule, _NOW)
    permitted = _patient_permits(alias, rule, applies)
    patient_data = _in(f"{alias}.type", sorted(compartment_types()))
    everyone = (f"{alias}.type <> ? AND ({alias}.deleted = 0 OR NOT {patient_data[0]}) "
                f"AND NOT EXISTS (SELECT 1 FROM search_compartment c WHERE c.rid = {alias}.rid "
                f"AND NOT ({permitted[0]}))", [AUDIT_TYPE, *patient_data[1], *permitted[1]])
    sql, params = _join(" OR ", [open_types, _own(alias, rule), everyone], "0")
    return sql, tuple(params)


def _own(alias: str, rule: ConsentRule) -> Condition:
    """Written by the caller (``meta.source``); an AuditEvent naming it as an agent, done."""
    if rule.own is None:
        return "0", []
    kind, _, id = rule.own.partition("/")
    return (f"({alias}.type <> ? AND EXISTS (SELECT 1 FROM search_uri u WHERE u.rid = "
            f"{alias}.rid AND u.param = ? AND u.uri = ?)) OR ({alias}.type = ? AND EXISTS "
            f"(SELECT 1 FROM search_reference a WHERE a.rid = {alias}.rid AND a.param = ? "
            f"AND a.type = ? AND a.id = ? AND a.url = '') AND EXISTS (SELECT 1 FROM "
            f"search_token o WHERE o.rid = {alias}.rid AND o.param = ? AND o.code = '0'))",
            [AUDIT_TYPE, param_key(SOURCE_PARAM), rule.own, AUDIT_TYPE, param_key(AGENT_PARAM),
             kind, id, param_key(OUTCOME_PARAM)])


def _grant_applies(alias: str, rule: ConsentRule, now: object) -> Condition:
    """"The grant row ``g`` concerns the caller now and covers the resources row ``alias``"
    (``search.consent``: actor, scope, period, purpose, type, target, code, label)."""
    actors = sorted(rule.actors | {"*"})
    sql = (f"g.actor IN ({', '.join('?' for _ in actors)}) AND g.scope = ? AND g.since <= ? "
           f"AND g.until > ? AND g.purpose IN ('', ?) AND g.type IN ('', {alias}.type) "
           f"AND (g.target = '' OR g.target = {alias}.type || '/' || {alias}.id) "
           f"AND (g.code = '' OR EXISTS (SELECT 1 FROM search_token t WHERE t.rid = "
           f"{alias}.rid AND t.code = g.code_value AND t.system = g.code_system)) "
           f"AND (g.label = '' OR EXISTS (SELECT 1 FROM search_token t WHERE t.rid = "
           f"{alias}.rid AND t.param = ? AND t.code = g.label_value "
           f"AND t.system = g.label_system))")
    return sql, [*actors, rule.scope, now, now, rule.purpose, param_key(SECURITY_PARAM)]


def _patient_permits(alias: str, rule: ConsentRule, applies: Condition) -> Condition:
    """"The patient ``c.patient`` lets the caller read ``alias``": a permit applies, no deny
    does, and each sensitive label the resource carries is named by a permit that applies."""
    grant = f"SELECT 1 FROM consent_grant g WHERE g.patient = c.patient AND {applies[0]}"
    # One pass over the grants that apply: the least of their ``permit`` is 1 when some apply
    # and none denies (NULL when none applies: IFNULL keeps the condition true or false, as
    # a NULL would turn the NOT EXISTS around it true).
    parts: list[Condition] = [
        (f"IFNULL((SELECT min(g.permit) FROM consent_grant g WHERE g.patient = c.patient "
         f"AND {applies[0]}), 0) = 1", applies[1])]
    if rule.sensitive:
        labels = [_split_label(label) for label in sorted(rule.sensitive)]
        pairs = " OR ".join("(s.code = ? AND s.system = ?)" for _ in labels)
        parts.append((
            f"NOT EXISTS (SELECT 1 FROM search_token s WHERE s.rid = {alias}.rid "
            f"AND s.param = ? AND ({pairs}) AND NOT EXISTS ({grant} AND g.permit = 1 "
            "AND g.label_value = s.code AND g.label_system = s.system))",
            [param_key(SECURITY_PARAM), *(v for pair in labels for v in pair), *applies[1]]))
    return _join(" AND ", parts, "1")


def _split_label(label: str) -> tuple[str, int]:
    system, _, code = label.partition("|")
    return code, system_key(system)

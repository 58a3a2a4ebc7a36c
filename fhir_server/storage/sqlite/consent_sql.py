"""``ConsentRule`` as SQL (``search.consent`` states the rule): the condition that a row of
``resources`` is one the caller may read under patients' Consents, joining the grants of the
patients in whose compartment it is (``consent_grant``, one row per rule, patient and actor)
and the resource's own index rows (its ``meta.source``, tokens and security labels).

Per resource the cost is a few primary-key probes: its ``meta.source`` row, its compartment
rows, and for each of its patients the grants naming the caller (the ``consent_grant``
primary key leads with the patient and the actor); see docs/consent.md for measurements.

A query about one patient (a compartment search, ``$everything``, ``patient=``) reads that
patient's grants naming the caller once, in its read transaction (``focused``): when they
decide alike for all the patient's resources (``search.consent.consent_focus``: a permit of
everything, but the sensitive labels no such permit names; or nothing), the condition
states that answer for the compartment rows of that patient instead of joining the grants
for each resource.

The grants a query or the policy reads (a patient's, naming the caller) are remembered with
the count of changes of that patient's grants (``GrantMemo``, ``consent_change``): a later
read is answered from memory only while the count is the same, so a Consent change (a
commit) applies to the next query.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from fhir_server.search.consent import (
    AGENT_PARAM,
    AUDIT_TYPE,
    OUTCOME_PARAM,
    SECURITY_PARAM,
    SOURCE_PARAM,
    consent_focus,
    settled_until,
)
from fhir_server.search.indexing import compartment_types
from fhir_server.search.model import (
    Clause,
    ConsentRule,
    Grant,
    ReferenceValue,
    SearchQuery,
    Visibility,
)
from fhir_server.storage.sqlite.search_tables import GRANT_COLUMNS, param_key, system_key

__all__ = ["GrantMemo", "GrantReader", "consent_condition", "focused", "read_grants"]

Condition = tuple[str, list[object]]


def _literals(kinds: list[str]) -> str:
    """Resource type names as SQL string literals (70 of them bound as parameters cost
    each statement their binding)."""
    assert all(kind.isalnum() for kind in kinds)
    return ", ".join(f"'{kind}'" for kind in kinds)


def _in(column: str, values: list[str]) -> Condition:
    return f"{column} IN ({', '.join('?' for _ in values) or 'NULL'})", [*values]


def _join(operator: str, parts: list[Condition], empty: str) -> Condition:
    if not parts:
        return empty, []
    return operator.join(f"({sql})" for sql, _ in parts), [v for _, vs in parts for v in vs]


#: Stand for the current instant and the focus patient among a compiled condition's parameters.
_NOW, _PATIENT = object(), object()
#: The search parameters whose one Patient reference makes a query about that patient.
_FOCUS_PARAMS = frozenset({"patient", "subject"})
#: What a focus decides, as the compiled condition is keyed: (everything, hidden labels).
Shape = tuple[bool, tuple[str, ...]] | None
#: Reads the grants of patients naming some actors (``read_grants``, ``GrantMemo.read``).
GrantReader = Callable[[sqlite3.Connection, Sequence[str], Collection[str] | None], list[Grant]]


def consent_condition(alias: str, rule: ConsentRule) -> Condition:
    """``ConsentRule`` as SQL on the resources row ``alias``: of an open type, written by
    the caller, or permitted by every patient in whose compartment it is (none: vacuously).
    A deleted resource has no index rows left: one of a type of the Patient compartment is
    then hidden (history judges deletions by this row). Compiled once per rule, alias and
    shape of its focus; the grants' periods are compared with the instant of the call."""
    focus = rule.focus
    shape = None if focus is None else (focus.everything, focus.hidden)
    sql, params, nows, patients = _compiled(alias, rule, shape)  # the focus is not keyed
    filled = list(params)
    now = time.time_ns() // 1000
    for at in nows:
        filled[at] = now
    for at in patients:
        filled[at] = focus.patient if focus is not None else None
    return sql, filled


@functools.lru_cache(maxsize=1024)
def _compiled(alias: str, rule: ConsentRule, shape: Shape
              ) -> tuple[str, tuple[object, ...], tuple[int, ...], tuple[int, ...]]:
    """The condition, its parameters, and where among them the instant and the focus
    patient go."""
    open_types = _in(f"{alias}.type", sorted(rule.open_types))
    applies = _grant_applies(alias, rule, _NOW)
    permitted = _focused(alias, rule, shape, _patient_permits(alias, rule, applies))
    patient_data = _literals(sorted(compartment_types()))
    everyone = (f"{alias}.type <> ? AND ({alias}.deleted = 0 OR NOT {alias}.type IN "
                f"({patient_data})) AND NOT EXISTS (SELECT 1 FROM search_compartment c WHERE "
                f"c.rid = {alias}.rid AND NOT ({permitted[0]}))", [AUDIT_TYPE, *permitted[1]])
    own = _own(alias, rule)
    ordered = [open_types, everyone, own] if shape and shape[0] else [open_types, own, everyone]
    sql, params = _join(" OR ", ordered, "0")
    return (sql, tuple(params), tuple(at for at, v in enumerate(params) if v is _NOW),
            tuple(at for at, v in enumerate(params) if v is _PATIENT))


def _focused(alias: str, rule: ConsentRule, shape: Shape, permitted: Condition) -> Condition:
    """"The patient ``c.patient`` lets the caller read ``alias``", with what the focus
    patient's grants decide stated for that patient's rows."""
    if shape is None:
        return permitted
    everything, hidden = shape
    decided: Condition = ("1" if everything else "0", [])
    if everything and hidden:
        labels = [_split_label(label) for label in hidden]
        pairs = " OR ".join("(s.code = ? AND s.system = ?)" for _ in labels)
        decided = (f"NOT EXISTS (SELECT 1 FROM search_token s WHERE s.rid = {alias}.rid "
                   f"AND s.param = ? AND ({pairs}))",
                   [param_key(SECURITY_PARAM), *(v for pair in labels for v in pair)])
    return (f"CASE WHEN c.patient = ? THEN {decided[0]} ELSE ({permitted[0]}) END",
            [_PATIENT, *decided[1], *permitted[1]])


def read_grants(conn: sqlite3.Connection, patients: Sequence[str],
                actors: Collection[str] | None = None) -> list[Grant]:
    """The grants of the current Consents about ``patients`` (naming one of ``actors`` or
    everyone, when given), by the ``consent_grant`` primary key."""
    wanted = sorted(set(patients))
    if not wanted:
        return []
    sql = (f"SELECT {GRANT_COLUMNS} FROM consent_grant WHERE patient IN "
           f"({', '.join('?' for _ in wanted)})")
    named = sorted({*actors, "*"}) if actors is not None else []
    if named:
        sql += f" AND actor IN ({', '.join('?' for _ in named)})"
    rows = conn.execute(sql, [*wanted, *named])  # by the primary key: no ORDER BY
    return [Grant._make(row) for row in rows]  # permit: 0 or 1


class GrantMemo:
    """The grants last read per patients and actors, each with the count of changes of
    those patients' grants when they were read (``consent_change``, kept by triggers in the
    transaction that changes the grants, by any connection or process): a later read is
    answered from memory while the counts are the same, so a Consent change applies to the
    next query, and a commit of anything else (an AuditEvent, another patient's Consent)
    forgets nothing. The counts are read before the grants: a change committed in between
    is read again next time. The periods of the grants are judged at each use."""

    _LIMIT = 4096

    def __init__(self) -> None:
        self._read: dict[tuple[tuple[str, ...], frozenset[str] | None],
                         tuple[tuple[int, ...], list[Grant]]] = {}

    def read(self, conn: sqlite3.Connection, patients: Sequence[str],
             actors: Collection[str] | None = None) -> list[Grant]:
        """``read_grants``, from memory while the patients' grants did not change."""
        wanted = tuple(sorted(set(patients)))
        changes = _changes(conn, wanted)
        key = (wanted, None if actors is None else frozenset(actors))
        known = self._read.get(key)
        if known is not None and known[0] == changes:
            return known[1]
        grants = read_grants(conn, wanted, actors)
        if len(self._read) >= self._LIMIT:
            self._read.clear()
        self._read[key] = (changes, grants)
        return grants


def _changes(conn: sqlite3.Connection, patients: tuple[str, ...]) -> tuple[int, ...]:
    """How many times the grants of each of ``patients`` changed (0: never since counted)."""
    if len(patients) == 1:
        row = conn.execute("SELECT n FROM consent_change WHERE patient = ?", patients).fetchone()
        return (int(row[0]) if row is not None else 0,)
    counted = dict(conn.execute(
        f"SELECT patient, n FROM consent_change WHERE patient IN "
        f"({', '.join('?' for _ in patients)})", patients).fetchall())
    return tuple(int(counted.get(patient, 0)) for patient in patients)


def _focus_patient(query: SearchQuery) -> str | None:
    """The patient a query is about: its compartment's, or the one Patient its ``patient``
    or ``subject`` clause names (None: no one patient)."""
    if query.compartment is not None:
        return query.compartment[1] if query.compartment[0] == "Patient" else None
    for clause in query.clauses:
        if isinstance(clause, Clause) and clause.code in _FOCUS_PARAMS \
                and clause.modifier is None and len(clause.values) == 1:
            value = clause.values[0]
            if isinstance(value, ReferenceValue) and value.id and value.url is None \
                    and value.type in ("Patient", None if clause.code == "patient" else ""):
                return value.id
    return None


def focused(conn: sqlite3.Connection, query: SearchQuery,
            grants_of: GrantReader = read_grants) -> SearchQuery:
    """The query with what its patient's grants decide resolved into its Consent rule
    (``ConsentFocus``), when it is about one patient and they decide alike; else as is."""
    seen = query.visibility
    rule = seen.consent if seen is not None else None
    if seen is None or rule is None or rule.grants is not None or rule.focus is not None:
        return query
    patient = _focus_patient(query)
    if patient is None:
        return query
    judged = _FOCI.judged(seen, rule, patient, grants_of(conn, [patient], rule.actors))
    return query if judged is None else replace(query, visibility=judged)


class _Focused:
    """The visibilities with a focus, per visibility (one per caller: ``security.policy``)
    and patient, while the grants read are the same list (``GrantMemo`` hands out one per
    patient until their grants change) and no period of them starts or ends: the focus is
    not worked out again for each request of a caller about a patient."""

    _LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[int, str], tuple[Visibility, list[Grant], Visibility | None,
                                                  int]] = {}

    def judged(self, seen: Visibility, rule: ConsentRule, patient: str,
               grants: list[Grant]) -> Visibility | None:
        """``seen`` with the focus of ``patient``'s ``grants`` (None: no focus)."""
        now = time.time_ns() // 1000
        key = (id(seen), patient)  # ``seen`` is held below: its id is not reused meanwhile
        known = self._known.get(key)
        if known is not None and known[0] is seen and known[1] is grants and now < known[3]:
            return known[2]
        focus = consent_focus(rule, patient, grants, now)
        judged = None if focus is None else replace(seen, consent=replace(rule, focus=focus))
        if len(self._known) >= self._LIMIT:
            self._known.clear()
        self._known[key] = (seen, grants, judged, settled_until(grants, now))
        return judged


_FOCI = _Focused()


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

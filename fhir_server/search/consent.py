"""What a patient's ``Consent`` lets others read, as rows every store can join: ``Grant``.

:func:`consent_grants` flattens an R4 Consent (scope ``patient-privacy`` or ``research``) into
grants, one per rule, actor and value of each condition; :func:`consent_allows` is the rule
of ``ConsentRule`` in memory, which the stores compile into their queries over the same rows
(``storage.sqlite.search_where``, ``storage.mongo.search_filters``). docs/consent.md explains
the model with examples.

How a Consent reads (R4 consent.html, "provision"):

- Only an ``active`` Consent with a ``provision`` counts (a bare opt-in shares nothing). Its
  root provision holds the conditions of the whole Consent and decides by its ``type``;
  without one, by the ``policyRule`` (``OPTIN``
  permits, ``OPTOUT`` denies, anything else decides nothing and leaves it to the nested
  provisions). Nested provisions are exceptions within their parent's conditions: each adds
  its own conditions and decides by its own type.
- Conditions: ``actor`` (any of them; none: everyone), ``period`` (when the rule holds),
  ``purpose`` (of the request), ``class`` (resource types of
  ``http://hl7.org/fhir/resource-types``), ``code`` (a token the resource has), ``securityLabel``
  (a label the resource carries), ``data`` (``instance``: those resources), ``action`` (only
  rules about reading count: ``access``, ``use``, ``disclose``, ``correct``).
- A deny wins over every permit. A permit nested inside a deny is not applied.
- Whatever cannot be evaluated here fails closed: a permit with an unknown class system, a
  ``dataPeriod``, a ``data`` meaning other than ``instance``, a code given only as text, or
  two levels both naming actors, codes or labels, permits nothing; the same condition in a
  deny is left out, so the deny covers more.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.search.dates import date_range
from fhir_server.search.model import (
    OPEN_END,
    OPEN_START,
    ConsentFocus,
    ConsentRule,
    Grant,
    SearchIndex,
)

__all__ = [
    "AGENT_PARAM",
    "AUDIT_TYPE",
    "CONSENT_SCOPES",
    "OUTCOME_PARAM",
    "READ_ACTIONS",
    "SECURITY_PARAM",
    "SOURCE_PARAM",
    "consent_allows",
    "consent_facts",
    "consent_focus",
    "consent_grants",
    "labels_of",
    "permitting",
    "reference_key",
    "settled_until",
]

#: The Consent scopes whose grants govern reading, by code (CodeSystem consentscope).
CONSENT_SCOPES = frozenset({"patient-privacy", "research"})
#: The Consent actions (CodeSystem consentaction) that include reading.
READ_ACTIONS = frozenset({"access", "use", "disclose", "correct"})
#: The search parameters holding a resource's security labels and its ``meta.source``.
SECURITY_PARAM, SOURCE_PARAM = "_security", "_source"
#: AuditEvents are not shared by Consent: a clinician or facility sees those naming it as an
#: agent (through ``agent``) that succeeded (``outcome`` 0): the record of its own accesses.
#: A refusal's event says which rule refused, for the patient and operators only.
AUDIT_TYPE, AGENT_PARAM, OUTCOME_PARAM = "AuditEvent", "agent", "outcome"
_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
_ACTIONS = "http://terminology.hl7.org/CodeSystem/consentaction"
_POLICY = {"OPTIN": "permit", "OPTOUT": "deny"}
#: The most rows one provision may expand into (the product of its conditions' values).
MAX_ROWS = 2000


@dataclass(frozen=True)
class _Level:
    """The conditions one provision adds (None: that condition is not given); ``unknown``
    names those that cannot be evaluated here (a permit with one permits nothing; a deny
    leaves it out)."""

    actors: frozenset[str] | None = None
    start: int = OPEN_START
    end: int = OPEN_END
    purposes: frozenset[str] | None = None
    types: frozenset[str] | None = None
    targets: frozenset[str] | None = None
    codes: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    reads: bool = True
    unknown: frozenset[str] = frozenset()

    def condition(self, name: str, permit: bool) -> frozenset[str] | None:
        """One condition as a row of this kind uses it."""
        value: frozenset[str] | None = getattr(self, name)
        if not permit and (name in self.unknown or (value == frozenset()
                                                    and name in _MULTI)):
            return None  # a deny about someone or something unknown: about anything
        return value


_SINGLE = ("purposes", "types", "targets")
_MULTI = ("actors", "codes", "labels")


def consent_grants(consent: dict[str, Any], patients: Iterable[str]) -> tuple[Grant, ...]:
    """Return the grants of an active Consent about ``patients`` (its ``patient``), or ()."""
    scope = _scope(consent)
    found = sorted(set(patients))
    root = consent.get("provision")
    if (consent.get("status") != "active" or scope is None or len(found) != 1
            or not isinstance(root, dict)):
        return ()
    base = root.get("type") or _policy_type(consent.get("policyRule"))
    identity = (str(consent.get("id", "")), found[0], scope)
    return tuple(dict.fromkeys(_grant(identity, row) for permit, levels in
                               _walk(root, (), base, False) for row in _rows(permit, levels)))


def _scope(consent: dict[str, Any]) -> str | None:
    scope = consent.get("scope")
    codings = scope.get("coding") if isinstance(scope, dict) else None
    codes = {str(c.get("code")) for c in codings or () if isinstance(c, dict)}
    return next(iter(sorted(codes & CONSENT_SCOPES)), None)


def _policy_type(rule: Any) -> str | None:
    codings = rule.get("coding") if isinstance(rule, dict) else None
    for coding in codings or ():
        if isinstance(coding, dict) and coding.get("code") in _POLICY:
            return _POLICY[str(coding["code"])]
    return None


_Row = tuple[bool, "tuple[_Level, ...]"]


def _walk(node: dict[str, Any], path: tuple[_Level, ...], kind: str | None,
          under_deny: bool) -> Iterator[_Row]:
    """The rows of ``node`` and its nested provisions: (permit, the levels of its path)."""
    levels = (*path, _level(node))
    if kind == "deny" or (kind == "permit" and not under_deny):
        yield kind == "permit", levels
    for child in node.get("provision") or ():
        if isinstance(child, dict):
            yield from _walk(child, levels, child.get("type") or kind,
                             under_deny or kind == "deny")


def _level(node: dict[str, Any]) -> _Level:
    period = _period(node.get("period"))
    types, unknown_class = _classes(node.get("class"))
    targets, unknown_data = _data(node.get("data"))
    codes = _concepts(node.get("code"))
    unknown = {name for name, flag in (("types", unknown_class), ("targets", unknown_data),
                                       ("codes", codes == frozenset()),
                                       ("dataPeriod", "dataPeriod" in node)) if flag}
    return _Level(
        actors=_actors(node.get("actor")), start=period[0], end=period[1],
        purposes=_codes(node.get("purpose"), lambda c: str(c.get("code", ""))),
        types=types, targets=targets, codes=codes,
        labels=_codes(node.get("securityLabel"), _token),
        reads=_reads(node.get("action")), unknown=frozenset(unknown),
    )


def _period(value: Any) -> tuple[int, int]:
    if not isinstance(value, dict):
        return OPEN_START, OPEN_END
    start, end = value.get("start"), value.get("end")
    return (date_range(start)[0] if isinstance(start, str) else OPEN_START,
            date_range(end)[1] if isinstance(end, str) else OPEN_END)


def _token(coding: dict[str, Any]) -> str:
    return f"{coding.get('system', '')}|{coding.get('code', '')}"


def _codes(value: Any, key: Any) -> frozenset[str] | None:
    codings = [c for c in value or () if isinstance(c, dict) and c.get("code")]
    return frozenset(key(c) for c in codings) if value else None


def _concepts(value: Any) -> frozenset[str] | None:
    if not value:
        return None
    return frozenset(_token(c) for concept in value if isinstance(concept, dict)
                     for c in concept.get("coding") or () if isinstance(c, dict) and c.get("code"))


def _classes(value: Any) -> tuple[frozenset[str] | None, bool]:
    if not value:
        return None, False
    codings = [c for c in value if isinstance(c, dict)]
    types = frozenset(str(c.get("code")) for c in codings if c.get("system") == _RESOURCE_TYPES)
    return types, len(types) < len(codings)


def _data(value: Any) -> tuple[frozenset[str] | None, bool]:
    if not value:
        return None, False
    items = [d for d in value if isinstance(d, dict)]
    targets = frozenset(
        str(d["reference"]["reference"]) for d in items if d.get("meaning") == "instance"
        and isinstance(d.get("reference"), dict)
        and isinstance(d["reference"].get("reference"), str))
    return targets, len(targets) < len(items)


def _actors(value: Any) -> frozenset[str] | None:
    if not value:
        return None
    keys = {reference_key(actor.get("reference")) for actor in value if isinstance(actor, dict)}
    return frozenset(key for key in keys if key)


def reference_key(reference: Any) -> str:
    """The name a Reference gives its target in grants: ``Type/id``, or
    ``identifier|system|value`` for a logical reference ("" when it names nothing)."""
    if not isinstance(reference, dict):
        return ""
    literal = reference.get("reference")
    if isinstance(literal, str) and literal:
        return literal
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return f"identifier|{identifier.get('system', '')}|{identifier['value']}"
    return ""


def _reads(value: Any) -> bool:
    if not value:
        return True
    codings = [c for concept in value if isinstance(concept, dict)
               for c in concept.get("coding") or () if isinstance(c, dict)]
    known = all(c.get("system") == _ACTIONS for c in codings) and codings
    return not known or any(c.get("code") in READ_ACTIONS for c in codings)


# -- a row of levels as grants ---------------------------------------------------------------


@dataclass(frozen=True)
class _Combined:
    actors: frozenset[str] | None
    start: int
    end: int
    purposes: frozenset[str] | None
    types: frozenset[str] | None
    targets: frozenset[str] | None
    codes: frozenset[str] | None
    labels: frozenset[str] | None


def _grant(identity: tuple[str, str, str], values: tuple[Any, ...]) -> Grant:
    """A row of :func:`_rows` as the grant of one Consent about one patient."""
    consent, patient, scope = identity
    permit, actor, start, end, purpose, kind, target, code, label = values
    return Grant(consent, patient, actor, permit, scope, start, end, purpose, kind, target,
                 code, label)


def _combined(permit: bool, levels: Sequence[_Level]) -> _Combined | None:
    """The conditions of a path of levels, or None when the rule does not concern reading,
    can never hold, or is a permit that cannot be evaluated."""
    if not all(level.reads for level in levels):
        return None
    if permit and any(level.unknown for level in levels):
        return None
    single = {name: _meet([level.condition(name, permit) for level in levels])
              for name in _SINGLE}
    multi = {name: _many(permit, [level.condition(name, permit) for level in levels])
             for name in _MULTI}
    start = max(level.start for level in levels)
    end = min(level.end for level in levels)
    if start >= end or frozenset() in (*single.values(), *multi.values()):
        return None
    return _Combined(multi["actors"], start, end, single["purposes"], single["types"],
                     single["targets"], multi["codes"], multi["labels"])


def _meet(sets: list[frozenset[str] | None]) -> frozenset[str] | None:
    """A condition on one value (the resource's type, the request's purpose): every level
    that gives it must allow the value."""
    given = [s for s in sets if s is not None]
    return frozenset.intersection(*given) if given else None


def _many(permit: bool, sets: list[frozenset[str] | None]) -> frozenset[str] | None:
    """A condition met by any of several values (the caller's names, the resource's codes
    and labels): one level may give it; given at two levels, a permit cannot be evaluated
    (the empty set: nothing), a deny keeps the deepest."""
    given = [s for s in sets if s is not None]
    if len(given) <= 1:
        return given[0] if given else None
    return frozenset() if permit else given[-1]


def _rows(permit: bool, levels: Sequence[_Level]) -> list[tuple[Any, ...]]:
    combined = _combined(permit, levels)
    if combined is None:
        return []
    dimensions = [combined.actors or {"*"}, combined.purposes or {""}, combined.types or {""},
                  combined.targets or {""}, combined.codes or {""}, combined.labels or {""}]
    size = 1
    for values in dimensions:
        size *= len(values)
    if size > MAX_ROWS:  # too many to keep: a permit permits nothing, a deny denies all
        return [] if permit else [(False, "*", combined.start, combined.end, "", "", "",
                                   "", "")]
    return [(permit, actor, combined.start, combined.end, purpose, kind, target, code, label)
            for actor, purpose, kind, target, code, label in itertools.product(
                *(sorted(values) for values in dimensions))]


# -- the rule in memory ----------------------------------------------------------------------


def consent_facts(resource: dict[str, Any]) -> SearchIndex:
    """What the rule looks at of a resource whose grants name no code (and that is no
    AuditEvent), as its index would hold it: ``meta.source`` and the security labels."""
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    source = meta.get("source")
    labels = [s for s in meta.get("security") or () if isinstance(s, dict) and s.get("code")]
    return SearchIndex(
        str(resource.get("resourceType")), str(resource.get("id", "")),
        tokens=tuple((SECURITY_PARAM, str(s.get("system", "")), str(s["code"]))
                     for s in labels),
        uris=((SOURCE_PARAM, source),) if isinstance(source, str) and source else ())


def labels_of(index: SearchIndex) -> frozenset[str]:
    """The security labels of an indexed resource, as ``system|code``."""
    return frozenset(f"{system}|{code}" for param, system, code in index.tokens
                     if param == SECURITY_PARAM)


def _covers(grant: Grant, index: SearchIndex, labels: frozenset[str]) -> bool:
    return ((not grant.resource_type or grant.resource_type == index.resource_type)
            and (not grant.target or grant.target == f"{index.resource_type}/{index.id}")
            and (not grant.label or grant.label in labels)
            and (not grant.code or any(f"{system}|{code}" == grant.code
                                       for _, system, code in index.tokens)))


def permitting(rule: ConsentRule, index: SearchIndex, grants: Iterable[Grant], now: int,
               patient: str) -> frozenset[str] | None:
    """The ids of the Consents of ``patient`` whose permits let the caller read the resource
    now, or None when that patient does not (no permit applies, a deny does, or a sensitive
    label of the resource is named by no permit that applies)."""
    labels = labels_of(index)
    applying = [g for g in grants if g.patient == patient and rule.applies_to(g, now)
                and _covers(g, index, labels)]
    permits = [g for g in applying if g.permit]
    if not permits or len(permits) < len(applying):
        return None
    if not (labels & rule.sensitive) <= {g.label for g in permits}:
        return None
    return frozenset(g.consent for g in permits)


def _own(rule: ConsentRule, index: SearchIndex) -> bool:
    """Written by the caller; for an AuditEvent, naming the caller as an agent, and done."""
    if rule.own is None:
        return False
    if index.resource_type == AUDIT_TYPE:
        kind, _, id = rule.own.partition("/")
        return any(code == AGENT_PARAM and (t, i) == (kind, id) and not url
                   for code, t, i, url in index.references) and any(
            param == OUTCOME_PARAM and code == "0" for param, _, code in index.tokens)
    return (SOURCE_PARAM, rule.own) in index.uris


def consent_allows(rule: ConsentRule, index: SearchIndex, grants: Iterable[Grant],
                   now: int) -> bool:
    """Whether the caller of ``rule`` may read the indexed resource now, given the grants of
    the patients in whose compartment it is (the rule is ``ConsentRule``'s)."""
    if index.resource_type in rule.open_types or _own(rule, index):
        return True
    if index.resource_type == AUDIT_TYPE:
        return False
    held = list(grants if rule.grants is None else rule.grants)
    return all(permitting(rule, index, held, now, patient) is not None
               for patient in index.compartments)


def _unconditional(grant: Grant) -> bool:
    """Whether a grant covers resources whatever their type, id and codes."""
    return not (grant.resource_type or grant.target or grant.code)


def settled_until(grants: Iterable[Grant], now: int) -> int:
    """The first instant after ``now`` at which one of ``grants`` starts or ends to hold:
    until then what they decide at ``now`` (``ConsentRule.applies_to``) stays decided."""
    return min((t for g in grants for t in (g.start, g.end) if t > now), default=OPEN_END)


def consent_focus(rule: ConsentRule, patient: str, grants: Iterable[Grant],
                  now: int) -> ConsentFocus | None:
    """What the grants of ``patient`` decide for the caller of ``rule`` now, when one answer
    holds for all of that patient's resources but those carrying some labels
    (``ConsentFocus``); None when they must be judged resource by resource (a deny applies,
    no permit of everything does, or a conditional permit names a sensitive label).
    ``permitting`` is the statement this summarises."""
    applying = [g for g in grants if g.patient == patient and rule.applies_to(g, now)]
    if not applying:
        return ConsentFocus(patient, everything=False)
    if any(not g.permit for g in applying) or not any(
            _unconditional(g) and not g.label for g in applying):
        return None
    if any(g.label in rule.sensitive and not _unconditional(g) for g in applying):
        return None
    named = {g.label for g in applying if _unconditional(g)}
    return ConsentFocus(patient, everything=True, hidden=tuple(sorted(rule.sensitive - named)))

"""The Consent part of the access policy (``security.policy``): whom Consent governs, the
``ConsentRule`` it gives them, who may write a Consent that decides, and the grants a
request's single resources are judged by and its AuditEvents explained with.

Governed: a clinician (``user/`` scopes of a user who is not the patient: no ``fhirUser``,
or a Practitioner) and a facility (a token acting for an ``organization``), under the
patients' privacy Consents; the clients of national operators the deployment names
(``consent_secondary_use_clients``), under research Consents. Not governed: the citizen's
own tokens, other operators (their scopes decide) and the server itself.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from fhir_server.search.consent import CONSENT_SCOPES, settled_until
from fhir_server.search.model import ConsentRule, Grant
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller
from fhir_server.security.scopes import ScopeContext
from fhir_server.security.sharing import SharingRules
from fhir_server.security.tokens import insufficient_scope
from fhir_server.storage.port import ConsentGrants

__all__ = [
    "CLIENT_IDENTIFIER_SYSTEM",
    "EMERGENCY_PREFIX",
    "ConsentBook",
    "check_consent_write",
    "citizen",
    "consent_rule",
    "privacy_consent",
]

#: How a Consent names an app or a client system (``actor.reference.identifier``).
CLIENT_IDENTIFIER_SYSTEM = "urn:fhir-server:client"
#: The id prefix of the emergency Consents the server writes for a break-the-glass.
EMERGENCY_PREFIX = "btg-"
_PRIVACY, _RESEARCH = "patient-privacy", "research"
_PURPOSES = {_PRIVACY: "TREAT", _RESEARCH: "HRESCH"}


def citizen(caller: Caller) -> bool:
    """A token bound to a patient that is not a practitioner's: the citizen, or an app of
    theirs."""
    user = caller.fhir_user
    return caller.patient_id is not None and (user is None or user.startswith("Patient/"))


def _consent_scope(caller: Caller, sharing: SharingRules) -> str | None:
    """The scope of the Consents that govern the caller (None: Consent does not)."""
    if caller.unlimited or not sharing.enforced or citizen(caller):
        return None
    scopes = caller.scopes or ()
    if caller.organization or any(s.context is ScopeContext.USER for s in scopes):
        return _PRIVACY
    return _RESEARCH if caller.client_id in sharing.secondary_use_clients else None


def consent_rule(caller: Caller, sharing: SharingRules, own: str,
                 reading: bool = True) -> ConsentRule | None:
    """The Consent part of what the caller sees (None: not governed by Consent), ``own``
    being the ``meta.source`` it writes: for reading, what it wrote, the open types and what
    Consents grant it; for writing, only what it wrote (a Consent shares for reading; an
    open type is read by all, changed by the facility that wrote it)."""
    scope = _consent_scope(caller, sharing)
    if scope is None:
        return None
    client = (f"identifier|{CLIENT_IDENTIFIER_SYSTEM}|{caller.client_id}"
              if caller.client_id else None)
    actors = frozenset(a for a in (caller.organization, caller.fhir_user, client,
                                   *caller.identities) if a)
    return ConsentRule(
        own=own, actors=actors if reading else frozenset(), scope=scope if reading else "",
        purpose=_PURPOSES[scope], sensitive=sharing.sensitive,
        open_types=sharing.open_types if scope == _PRIVACY and reading else frozenset())


def privacy_consent(resource: dict[str, Any] | None) -> bool:
    """Whether a resource is a Consent that governs reading (privacy or research)."""
    if resource is None or resource.get("resourceType") != "Consent":
        return False
    scope = resource.get("scope")
    codings = scope.get("coding") if isinstance(scope, dict) else None
    return any(isinstance(c, dict) and c.get("code") in CONSENT_SCOPES for c in codings or ())


def check_consent_write(governed: bool, before: dict[str, Any] | None,
                        after: dict[str, Any] | None) -> None:
    """Only the patient (a token bound to them) or an operator writes a privacy Consent,
    not a clinician or facility (``governed``); an emergency one, only the server itself."""
    changed = [r for r in (before, after) if r is not None and privacy_consent(r)]
    if changed and governed:
        raise insufficient_scope("only the patient, with their own token, or an operator "
                                 "may write a patient's privacy Consent")
    if any(str(r.get("id", "")).startswith(EMERGENCY_PREFIX) for r in changed):
        raise insufficient_scope("emergency Consents are written by break-the-glass")


class ConsentBook:
    """The grants of the patients one request has met, read from the store once each."""

    def __init__(self) -> None:
        self._grants: dict[str, Sequence[Grant]] = {}

    async def load(self, store: ConsentGrants, patients: Collection[str],
                   actors: Collection[str], again: bool = False) -> None:
        """Read the grants of ``patients`` not read yet (all of them: ``again``) that name
        one of ``actors`` (the caller's names) or everyone: the only ones that concern it."""
        missing = sorted(set(patients) if again else set(patients) - self._grants.keys())
        if len(missing) == 1:  # all of them that patient's: the store's list, as it is
            self._grants[missing[0]] = await store.consent_grants(missing, actors)
        elif missing:
            found = await store.consent_grants(missing, actors)
            self._grants.update({p: tuple(g for g in found if g.patient == p)
                                 for p in missing})

    def of(self, patients: Iterable[str]) -> list[Grant]:
        """The grants read of ``patients`` (none for those not read: nothing shared)."""
        return [g for patient in sorted(patients) for g in self._grants.get(patient, ())]

    async def explain(self, note: AuditNote, rule: ConsentRule, store: ConsentGrants,
                      changed: bool = False) -> None:
        """Name in ``note`` the Consents in force that let the caller read each patient's
        records (read again if the request ``changed`` them: a break-the-glass); one of a
        break-the-glass makes the purpose ``BTG``."""
        patients = sorted(set().union(*(p for _, p in note.touched)))
        await self.load(store, patients, rule.actors, again=changed)
        now = time.time_ns() // 1000
        for patient in patients:
            policies = _PERMITTING.policies(rule, self._grants[patient], now)
            note.policies[patient] = policies
            if any(c.startswith(_EMERGENCY_POLICY) for c in policies):
                note.purpose = "BTG"


_EMERGENCY_POLICY = f"Consent/{EMERGENCY_PREFIX}"


class _Permitting:
    """The Consents in force that let a caller read a patient's records, per rule (one per
    caller) and list of grants read (the store hands out the same list while the patient's
    grants do not change), until a period of the grants starts or ends."""

    _LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[ConsentRule, Sequence[Grant],
                                                  tuple[str, ...], int]] = {}

    def policies(self, rule: ConsentRule, grants: Sequence[Grant], now: int
                 ) -> tuple[str, ...]:
        """``Consent/<id>`` of each Consent with a permit of ``grants`` that applies now."""
        key = (id(rule), id(grants))  # both are held below: their ids are not reused
        known = self._known.get(key)
        if known is not None and known[0] is rule and known[1] is grants and now < known[3]:
            return known[2]
        consents = sorted({g.consent for g in grants if g.permit and rule.applies_to(g, now)})
        policies = tuple(f"Consent/{c}" for c in consents)
        if len(self._known) >= self._LIMIT:
            self._known.clear()
        self._known[key] = (rule, grants, policies, settled_until(grants, now))
        return policies


_PERMITTING = _Permitting()

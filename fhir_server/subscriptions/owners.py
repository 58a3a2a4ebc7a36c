"""Who a subscription delivers for: its owner, the caller who created or last changed it.

The owner's ``Caller`` facts (subject, scopes, the patient it is bound to, facility, client,
``fhirUser``, the App Launch authorization) are stored with the subscription when it is
written. A notification only ever carries what the owner may read *now*: each resource is
judged when the event is recorded and again at delivery time by the one access policy
(``security.policy.authorize`` for a read of it, then ``Access.readable``), exactly as a read
by the owner's token would be then (``OwnerReads``): under the deployment's sharing rules,
with the owner named as the router names a caller (the identifiers a Consent may name its
facility or user by), and with the current Consent grants of the resources' patients, read
once per batch (``BatchGrants``). A Consent given, revoked or expired, or a scope narrowed in
between, is respected. Writes by the delivery worker itself
(``WORKER``: the status of the subscription) keep the owner.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import orjson

from fhir_server.errors import FhirError
from fhir_server.search.model import Grant
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.actors import ActorNames
from fhir_server.security.caller import Caller
from fhir_server.security.policy import Access, AccessRequest, authorize
from fhir_server.security.scopes import Interaction, parse_scopes
from fhir_server.security.sharing import SharingRules
from fhir_server.storage.port import ConsentGrants

__all__ = ["WORKER", "BatchGrants", "OwnerNames", "OwnerReads", "owner_facts", "owner_of"]

WORKER = Caller(subject="fhir-server:subscriptions")
"""The delivery worker, writing a subscription's status through the router: unlimited, and
never the owner of what it writes."""

_FIELDS = ("subject", "issuer", "client_id", "patient_id", "organization", "fhir_user",
           "token_id", "grant_id")


def owner_facts(caller: Caller) -> bytes:
    """The caller as stored with a subscription (JSON)."""
    facts: dict[str, Any] = {name: getattr(caller, name, None) for name in _FIELDS}
    facts["scopes"] = (None if caller.scopes is None
                       else [scope.to_text() for scope in caller.scopes])
    facts["verified"] = caller.verified
    return orjson.dumps(facts)


def owner_of(facts: bytes) -> Caller:
    """The owner a stored subscription delivers for."""
    data = orjson.loads(facts)
    scopes = data.pop("scopes")
    known = {name: data.get(name) for name in _FIELDS if name in Caller.__dataclass_fields__}
    return Caller(**known, scopes=None if scopes is None else parse_scopes(scopes),
                  verified=bool(data.get("verified")))


class OwnerNames:
    """The owners named as the router names a caller (``security.actors.ActorNames``: the
    identifiers of their facility and user), each kept as last named, so that the access
    policy's memos on it outlive one change or notification."""

    _LIMIT = 10_000

    def __init__(self, names: ActorNames) -> None:
        self._names = names
        self._last: dict[int, tuple[Caller, Caller]] = {}

    async def named(self, owner: Caller) -> Caller:
        """``owner`` with the names a Consent may give it now."""
        last = self._last.get(id(owner))
        named = await self._names.named(last[1] if last is not None and last[0] is owner
                                        else owner)
        if len(self._last) >= self._LIMIT:
            self._last.clear()
        self._last[id(owner)] = (owner, named)  # holds ``owner``: its id is not reused
        return named


class BatchGrants:
    """The Consent grants of the patients of one batch of resources (a change's, or a
    notification's events), read from the store in one query the first time an owner's
    ``Access`` asks (never when no owner is governed by Consent), and then served to every
    owner judging the batch (``ConsentGrants``): the store's filter by actor is applied here
    (a grant naming one of ``actors``, or everyone)."""

    def __init__(self, store: ConsentGrants, patients: Collection[str]) -> None:
        self._store = store
        self._patients = set(patients)
        self._read: dict[str, list[Grant]] | None = None

    async def consent_grants(self, patients: Sequence[str],
                             actors: Collection[str] | None = None) -> list[Grant]:
        """The grants of ``patients`` (the batch's, read once) naming one of ``actors``."""
        if self._read is None or not self._read.keys() >= set(patients):
            wanted = sorted(self._patients | set(patients))
            found = await self._store.consent_grants(wanted)
            self._read = {patient: [] for patient in wanted}
            for grant in found:
                self._read[grant.patient].append(grant)
        named = None if actors is None else {*actors, "*"}
        return [g for p in patients for g in self._read[p] if named is None or g.actor in named]


class OwnerReads:
    """What a subscription's owner may read now, judged for one batch of resources exactly
    as a read by the owner's token would be: the deployment's ``sharing`` rules, the owner
    named as the router names a caller (``security.actors``), and the Consent grants of the
    batch's patients (``BatchGrants``)."""

    def __init__(self, owner: Caller, registry: SearchParameterRegistry,
                 sharing: SharingRules, grants: ConsentGrants) -> None:
        self.owner = owner
        self._registry = registry
        self._sharing = sharing
        self._grants = grants
        self._accesses: dict[str, Access | None] = {}

    def _access(self, kind: str) -> Access | None:
        """The owner's access to a read of the type (None: refused)."""
        if kind not in self._accesses:
            try:
                access: Access | None = authorize(
                    self.owner, AccessRequest(Interaction.READ, kind), self._registry,
                    self._sharing)
            except FhirError:
                access = None
            self._accesses[kind] = access
        return self._accesses[kind]

    async def load(self, judged: Iterable[tuple[dict[str, Any], Collection[str]]]) -> None:
        """Read the grants the resources (with their security contexts' patients) are
        judged by (from the batch's grants; nothing for an owner Consent does not govern)."""
        by_kind: dict[str, list[tuple[dict[str, Any], Collection[str]]]] = {}
        for resource, context in judged:
            by_kind.setdefault(str(resource.get("resourceType")), []).append(
                (resource, context))
        for kind, found in by_kind.items():
            access = self._access(kind)
            if access is not None:
                await access.load_grants(self._grants, [r for r, _ in found],
                                         set().union(*(c for _, c in found)))

    def readable(self, resource: dict[str, Any], context: Collection[str] = ()) -> bool:
        """Whether the owner may read ``resource`` now (after :meth:`load` of it).

        ``context``: the patients of the resource its security context names.
        """
        kind = str(resource.get("resourceType"))
        access = self._access(kind)
        if access is None:
            return False
        try:  # the refusals of a read of this id (another patient's Patient)
            authorize(self.owner, AccessRequest(Interaction.READ, kind,
                                                str(resource.get("id", "")) or None),
                      self._registry, self._sharing)
        except FhirError:
            return False
        return access.readable(resource, context)

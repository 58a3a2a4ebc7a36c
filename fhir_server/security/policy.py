"""The access policy: the one place that decides what a caller may do, and what it may see.

:func:`authorize` answers a request before it runs: ``Forbidden`` (403,
``MSG_SCOPE_INSUFFICIENT``) when no scope grants the interaction, the ``NotFound`` of an
unknown id (``MSG_NO_EXIST``) for another patient's Patient, 405 for a change to an
AuditEvent (the server's own tooling may PUT one, to load what was exported: an unchanged
repeat, never a change); otherwise an :class:`Access` that the request carries to the end.
``Access`` states the same rule three ways, so that every path applies it identically:

- searches (and everything built on them: includes, chains, ``_has``, totals, paging,
  ``$everything``, the documents, conditional matches) carry its ``Visibility`` into the query
  (:meth:`Access.scoped`), which every store applies to each resource the query reaches;
- a single resource (a read, a version, a write's target before and after) is judged in
  memory by :meth:`Access.readable` and :meth:`Access.check_write`, with the same rule
  (``search.matching.visible``);
- another patient's resource always answers like an unknown id: 404.

The rules. A ``patient/`` scope (and a ``user/`` scope when the user is a patient) reaches only
that patient's compartment (R4 compartmentdefinition-patient); a resource of a type outside
that compartment (Organization, Practitioner, Medication, terminology...) is shared and
readable as the scopes say, unless it belongs to another patient's compartment (a Binary
whose ``securityContext`` is that patient's). Such a token never writes shared types, never
creates a Patient and writes only its own Patient. ``system/`` scopes, and ``user/`` scopes
of a user who is not a patient, are not bound to a patient; when both kinds grant a type,
the broader one applies. SMART v2 query restrictions (``patient/Observation.rs?category=
laboratory``) limit what is seen and written to the resources that meet them.

Consent (docs/consent.md). A clinician (``user/`` scopes of a user who is not the patient)
and a facility (a token acting for an ``organization``) see, of patients' data, what they
wrote themselves (``meta.source``), what a patient's active Consent lets them read
(``search.consent``), and the types every one of them reads (the Patient, by default); the
clients of national operators the deployment names read only under a ``research`` Consent;
other operators, the citizen's own tokens and the server are not governed by Consent. That
rule is the ``consent`` of the ``Visibility``: the stores join it to their index of grants,
and :meth:`Access.load_grants` reads the grants a single resource is judged by in memory.
Only the patient (a token bound to them) or an operator writes a privacy Consent; the
emergency Consents of break-the-glass (ids ``btg-...``) only the server itself.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.errors import FhirError, MethodNotAllowed, NotFound
from fhir_server.search.consent import AUDIT_TYPE, consent_facts
from fhir_server.search.indexing import compartment_patients, compartment_types, index_resource
from fhir_server.search.matching import visible
from fhir_server.search.model import Alternatives, ConsentRule, SearchQuery, Visibility
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.audit import AuditNote
from fhir_server.security.caller import Caller
from fhir_server.security.consent_access import (
    EMERGENCY_PREFIX,
    ConsentBook,
    check_consent_write,
    citizen,
    consent_rule,
)
from fhir_server.security.scopes import Interaction, Scope, ScopeContext, allows
from fhir_server.security.sharing import SharingRules
from fhir_server.security.tokens import insufficient_scope
from fhir_server.storage.port import ConsentGrants

__all__ = [
    "DEFAULT_SHARING",
    "EMERGENCY_PREFIX",
    "Access",
    "AccessRequest",
    "authorize",
    "authorize_job",
    "consent_rule",
    "interaction_for",
    "principal",
    "source_of",
]

CLIENT_SOURCE_PREFIX = "urn:fhir-server:client:"
SUBJECT_SOURCE_PREFIX = "urn:fhir-server:subject:"
#: The rules of a deployment that configured none (Consent enforced, default labels).
DEFAULT_SHARING = SharingRules.configured()
_WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.PATCH,
                     Interaction.DELETE})
_LETTERS = {Interaction.CREATE: "c", Interaction.UPDATE: "u", Interaction.PATCH: "u",
            Interaction.DELETE: "d"}
_IMMUTABLE = frozenset({Interaction.UPDATE, Interaction.PATCH, Interaction.DELETE})
_AUDIT = "AuditEvent"
#: Operations only a facility's or an operator's ``system/`` scope may call (XML 130 import).
_SYSTEM_ONLY = frozenset({Interaction.OPERATION_IMPORT_XML130,
                          Interaction.OPERATION_CONVERT_XML130})


@dataclass(frozen=True)
class AccessRequest:
    """What is asked: the interaction (or ``"operation"`` with an operation name such as
    ``everything``), the resource type (None for the whole system) and the id (None for
    type-level requests)."""

    interaction: Interaction | str
    resource_type: str | None = None
    id: str | None = None
    operation: str | None = None


def interaction_for(request: AccessRequest) -> Interaction:
    """Return the scope-bearing interaction of a request; unmapped operations are refused."""
    if request.operation is not None:
        name = "$" + request.operation.removeprefix("$")
        try:
            return Interaction(name)
        except ValueError:
            raise insufficient_scope(f"operation {name} is not open to access tokens") from None
    try:
        return Interaction(request.interaction)
    except ValueError:
        raise insufficient_scope(f"interaction {request.interaction} is not mapped") from None


def authorize(
    caller: Caller, request: AccessRequest, registry: SearchParameterRegistry,
    sharing: SharingRules | None = None,
) -> Access:
    """Decide a request before it runs; raise ``Forbidden``, the hidden ``NotFound`` or
    ``MethodNotAllowed``; return what the rest of the request must respect. ``sharing``:
    the deployment's Consent rules (None: ``DEFAULT_SHARING``, Consent enforced).

    A granted type-level decision is remembered on the caller: a Bundle's entries ask the
    same few questions (create a Patient, update an Encounter by criteria...) again and again.
    One that Consent governs is handed out fresh (:meth:`Access.fresh`): it carries the
    grants and the refusal of its own request, and the grants are read by each request, so a
    revoked Consent applies to the next one.
    """
    sharing = sharing or DEFAULT_SHARING
    if request.id is not None:
        return _authorize(caller, request, registry, sharing)
    key = (id(registry), id(sharing), request)
    decided: dict[tuple[int, int, AccessRequest], Access] = caller.decisions
    if key not in decided:
        decided[key] = _authorize(caller, request, registry, sharing)
    access = decided[key]
    return access if access.consent is None else access.fresh()


def _authorize(
    caller: Caller, request: AccessRequest, registry: SearchParameterRegistry,
    sharing: SharingRules,
) -> Access:
    kind = request.resource_type
    interaction = None if caller.unlimited and request.operation else interaction_for(request)
    if kind == _AUDIT and interaction in _IMMUTABLE and not (
            caller.unlimited and interaction is Interaction.UPDATE):  # a load may repeat one
        raise MethodNotAllowed("AuditEvents cannot be updated or deleted",
                               message_id="MSG_AUDIT_IMMUTABLE")
    if caller.unlimited:
        return Access(caller, registry, sharing=sharing)
    assert interaction is not None and caller.scopes is not None
    if interaction in _SYSTEM_ONLY and not allows(caller.scopes, ScopeContext.SYSTEM, kind,
                                                  interaction):
        raise insufficient_scope(f"{interaction} needs a system/ scope (a facility's token)")
    if not _granted(caller, kind, interaction):
        raise insufficient_scope(f"no scope grants {interaction} on {kind or 'the system'}")
    if _bound(caller, kind, interaction):
        _check_bound(caller, request, interaction)
    return Access(caller, registry, _visibility(caller, "rs", registry, sharing), sharing)


def principal(caller: Caller) -> str:
    """Who the caller is, whatever token it holds now: the issuer, subject, client and
    patient of its token (a backend service's tokens live minutes, its exports longer).
    Another subject, client or patient is another principal."""
    parts = (caller.issuer, caller.subject, caller.client_id or "", caller.patient_id or "")
    return "\x1f".join(parts)


def authorize_job(caller: Caller, started_by: str, request: AccessRequest,
                  registry: SearchParameterRegistry,
                  sharing: SharingRules | None = None) -> Access:
    """Decide a request about a background job (a bulk export's status, files,
    cancellation): only the principal that started it (``started_by``) may ask, anyone else
    gets the 404 of an unknown job, as another patient's resource answers like an unknown
    id; and its scopes must still grant ``request``, what started the job (403)."""
    if not caller.unlimited and principal(caller) != started_by:
        raise NotFound("No such job", message_id="MSG_JOB_UNKNOWN")
    return authorize(caller, request, registry, sharing)


def _check_bound(caller: Caller, request: AccessRequest, interaction: Interaction) -> None:
    kind = request.resource_type
    if kind is not None and kind not in compartment_types() and interaction in _WRITES:
        raise insufficient_scope(f"a patient's token cannot write {kind}")
    if kind == "Patient" and request.id is not None and request.id != caller.patient_id:
        raise NotFound(f"Patient/{request.id} is not known", message_id="MSG_NO_EXIST")
    if kind == "Patient" and interaction is Interaction.CREATE:
        raise insufficient_scope("a patient's token cannot create a Patient")


# -- what the scopes grant ---------------------------------------------------------------------


def _kinds(caller: Caller) -> tuple[list[ScopeContext], list[ScopeContext]]:
    """The scope contexts that are broad (not bound to a patient) and narrow (bound)."""
    if caller.patient_id is None:
        return [ScopeContext.SYSTEM, ScopeContext.USER], []
    return [ScopeContext.SYSTEM], [ScopeContext.PATIENT, ScopeContext.USER]


def _granted(caller: Caller, kind: str | None, interaction: Interaction) -> bool:
    broad, narrow = _kinds(caller)
    scopes = caller.scopes or ()
    return any(allows(scopes, context, kind, interaction) for context in broad + narrow)


def _bound(caller: Caller, kind: str | None, interaction: Interaction) -> bool:
    """Whether only bound scopes grant the interaction (the broader grant applies first)."""
    broad, narrow = _kinds(caller)
    scopes = caller.scopes or ()
    return bool(narrow) and not any(allows(scopes, c, kind, interaction) for c in broad)


_VISIBILITIES: dict[tuple[Any, ...], Visibility | None] = {}


def _visibility(caller: Caller, letters: str, registry: SearchParameterRegistry,
                sharing: SharingRules) -> Visibility | None:
    """What the caller's scopes with any of ``letters`` let it see (None: everything), and
    what Consent lets it see (the rule, not the grants: the stores read those with each
    query); remembered on the caller (a Bundle asks for each entry), and per scopes,
    patient, registry and who the caller is to Consent (hashing the scopes costs more than
    the look-up saves, so once per caller)."""
    mine: dict[tuple[int, int, str], Visibility | None] = caller.visibilities
    if (id(registry), id(sharing), letters) in mine:
        return mine[(id(registry), id(sharing), letters)]
    names = (caller.organization, caller.fhir_user, caller.client_id, caller.subject,
             caller.identities)
    key = (id(registry), id(sharing), caller.scopes or (), caller.patient_id, letters, names)
    if key not in _VISIBILITIES:
        if len(_VISIBILITIES) >= 4096:
            _VISIBILITIES.clear()
        seen = _build_visibility(caller, letters, registry)
        rule = consent_rule(caller, sharing, source_of(caller),
                            reading=bool(set(letters) & set("rs")))
        _VISIBILITIES[key] = seen if rule is None else replace(seen or Visibility(),
                                                               consent=rule)
    found = mine[(id(registry), id(sharing), letters)] = _VISIBILITIES[key]
    return found


def _build_visibility(caller: Caller, letters: str, registry: SearchParameterRegistry
                      ) -> Visibility | None:
    broad_kinds, narrow_kinds = _kinds(caller)
    granting = [s for s in caller.scopes or () if set(letters) & s.permissions]
    broad = [s for s in granting if s.context in broad_kinds]
    narrow = [s for s in granting if s.context in narrow_kinds]
    named = {s.resource_type for s in broad + narrow}
    broad_star = any(s.resource_type == "*" for s in broad)
    restrictions = tuple(
        (kind, alternatives) for kind in sorted(named)
        if (alternatives := _restriction(kind, broad if broad_star or any(
            s.covers(kind) for s in broad if kind != "*") else narrow, registry)) is not None
    )
    seen = Visibility(
        types=None if "*" in named else frozenset(named),
        patient=caller.patient_id if narrow and not broad_star else None,
        unbound=frozenset() if broad_star else frozenset(s.resource_type for s in broad),
        restrictions=restrictions,
    )
    return None if seen.everything else seen


def _restriction(kind: str, scopes: list[Scope], registry: SearchParameterRegistry
                 ) -> Alternatives | None:
    """The alternatives of the scopes covering ``kind`` (None: one is unrestricted; ``((),)``
    where ``*`` scopes are restricted but this type has an unrestricted grant)."""
    covering = [s for s in scopes if s.covers(kind) or (kind == "*" and s.resource_type == "*")]
    if kind == "*":
        covering = [s for s in covering if s.resource_type == "*"]
    if not covering:
        return None
    if any(not s.restriction for s in covering):
        star_restricted = kind != "*" and any(
            s.resource_type == "*" and s.restriction for s in scopes)
        return ((),) if star_restricted else None
    target = None if kind == "*" else kind
    try:
        return tuple(dict.fromkeys(
            parse_search(target, list(s.restriction), registry, strict=True).query.clauses
            for s in covering))
    except FhirError:
        raise insufficient_scope(f"the token's query restriction on {kind} is not a "
                                 "search this server can apply") from None


# -- the decision a request carries ------------------------------------------------------------


class Access:
    """What one request may do and see, from :func:`authorize`."""

    def __init__(self, caller: Caller, registry: SearchParameterRegistry,
                 visibility: Visibility | None = None,
                 sharing: SharingRules | None = None) -> None:
        self.caller = caller
        self.registry = registry
        #: What the request may read (None: everything).
        self.visibility = visibility
        #: The deployment's Consent rules.
        self.sharing = sharing or DEFAULT_SHARING
        #: The grants of the patients read so far (``load_grants``).
        self._book = ConsentBook()
        #: Which rule hid the last single resource refused (for the AuditEvent), if any.
        self.refusal: str | None = None
        #: The reason the caller gave for its access (break-the-glass), if any.
        self.reason: str | None = None
        #: What the Consent rule hid, and its patients (named in the refusal's AuditEvent,
        #: which only the patient and operators read).
        self.refused: tuple[str, frozenset[str]] | None = None

    def fresh(self) -> Access:
        """The same decision for another request: no grants read, nothing refused yet."""
        return Access(self.caller, self.registry, self.visibility, self.sharing)

    @property
    def consent(self) -> ConsentRule | None:
        """The Consent rule the caller reads under (None: Consent does not govern it)."""
        return self.visibility.consent if self.visibility is not None else None

    async def load_grants(self, store: ConsentGrants, resources: Iterable[dict[str, Any]],
                          context: Collection[str] = ()) -> None:
        """Read the Consent grants of the patients of ``resources`` (and of ``context``) that
        are not known yet, for judging those resources in memory; nothing without a rule."""
        if self.consent is not None:
            patients = set(context).union(*(self.patients_of(r) for r in resources))
            await self._book.load(store, patients, self.consent.actors)

    def scoped(self, query: SearchQuery) -> SearchQuery:
        """The query, limited to what the caller may see."""
        if self.visibility is None:
            return query
        return replace(query, visibility=self.visibility)

    def readable(self, resource: dict[str, Any], context: Collection[str] = ()) -> bool:
        """Whether the caller may see the resource; ``context``: the patients of the resource
        its ``securityContext`` names (``SECURITY_CONTEXT``), which the caller looked up."""
        return self.visibility is None or self._admits(self.visibility, resource, context)

    def check_readable(self, resource: dict[str, Any], context: Collection[str] = ()) -> None:
        """Raise the ``NotFound`` of an unknown id unless the caller may see the resource
        (noting in ``refusal`` when the Consent rule is what hides it)."""
        if self.readable(resource, context):
            return
        seen = self.visibility
        if seen is not None and seen.consent is not None and self._admits(
                replace(seen, consent=None), resource, context):
            self.refusal = ("hidden by the Consent rule: no active Consent of the patient "
                            "lets this reader see it")
            self.refused = (f"{resource.get('resourceType')}/{resource.get('id')}",
                            self.patients_of(resource) | frozenset(context))
        raise _unknown(resource)

    def visible_of(self, resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The resources the caller may see (the versions of a history page)."""
        return [resource for resource in resources if self.readable(resource)]

    def limits(self, interaction: Interaction) -> bool:
        """Whether the caller's writes of this kind are limited (what they change must be
        judged by :meth:`check_write`)."""
        if self.caller.unlimited:
            return False
        return _visibility(self.caller, _LETTERS[interaction], self.registry,
                           self.sharing) is not None

    def check_write(self, interaction: Interaction, before: dict[str, Any] | None,
                    after: dict[str, Any] | None) -> None:
        """Refuse a write the caller may not make: ``before`` is the current content of its
        target (None if there is none), ``after`` the content to store (None: a deletion).

        Another patient's target answers like an unknown id (404); content outside what
        the caller may write is 403 (a privacy Consent, unless the caller is the patient or
        an operator).
        """
        if self.caller.unlimited:
            return
        seen = _visibility(self.caller, _LETTERS[interaction], self.registry, self.sharing)
        if before is not None and seen is not None and not self._admits(seen, before):
            raise insufficient_scope("the token's scopes do not allow changing this resource") \
                if self.readable(before) else _unknown(before)
        check_consent_write(self.consent is not None, before, after)
        if after is None:
            return
        kind = str(after.get("resourceType"))
        if seen is not None and seen.bound(kind):
            if kind not in compartment_types():
                raise insufficient_scope(f"a patient's token cannot write {kind}")
            if kind == "Patient" and after.get("id") != self.caller.patient_id:
                raise insufficient_scope("a patient's token can only write its own Patient")
        if seen is not None and not self._admits(seen, after):
            raise insufficient_scope("the token can only write that patient's records "
                                     "within its scopes' restrictions")

    def stamp(self, resource: dict[str, Any]) -> None:
        """Record in ``meta.source`` who writes the resource (it is the server's record)."""
        if self.caller.unlimited and not self.caller.verified:
            return
        meta = resource.get("meta")
        meta = copy.copy(meta) if isinstance(meta, dict) else {}
        meta["source"] = source_of(self.caller)
        resource["meta"] = meta

    def patients_of(self, resource: dict[str, Any]) -> frozenset[str]:
        """The patients in whose compartment the resource is (for the AuditEvent)."""
        return compartment_patients(resource, self.registry)

    def _admits(self, seen: Visibility, resource: dict[str, Any],
                context: Collection[str] = ()) -> bool:
        kind = str(resource.get("resourceType"))
        patients = compartment_patients(resource, self.registry) | frozenset(context)
        grants = self._book.of(patients)
        if seen.restricted(kind) is not None or (seen.consent is not None and (
                kind == AUDIT_TYPE or any(g.code for g in grants))):
            index = index_resource(resource, self.registry)
        else:  # all the rule looks at: meta.source and the security labels
            index = consent_facts(resource)
        return visible(seen, replace(index, compartments=tuple(sorted(patients))), grants)

    # -- what the AuditEvent says of the decision ------------------------------------------

    def purpose(self) -> str | None:
        """The purpose of use the request is recorded with: the citizen's own request
        (``PATRQT``), the rule's (treatment, research) for a clinician or facility."""
        if citizen(self.caller) and not self.caller.unlimited:
            return "PATRQT"
        return self.consent.purpose if self.consent is not None else None

    async def annotate(self, note: AuditNote, store: ConsentGrants) -> None:
        """Record in the request's AuditEvents why it was allowed or refused: the purpose,
        per patient the Consents in force that let the caller read (a break-the-glass one:
        the purpose is ``BTG``), and the rule that hid a refused resource."""
        note.purpose = note.purpose or self.purpose()
        note.refusal = note.refusal or self.refusal
        note.reason = note.reason or self.reason
        if self.refused is not None and note.enabled and self.refused not in note.touched:
            note.touched.append(self.refused)
        if self.consent is not None and note.touched:  # a reason: a break-the-glass
            await self._book.explain(note, self.consent, store, changed=self.reason is not None)


def _unknown(resource: dict[str, Any]) -> NotFound:
    reference = f"{resource.get('resourceType')}/{resource.get('id')}"
    return NotFound(f"{reference} is not known", message_id="MSG_NO_EXIST")


def source_of(caller: Caller) -> str:
    """Return the ``meta.source`` that records who wrote through this caller: the facility
    it acts for, else its client, else its subject."""
    if caller.organization:
        return caller.organization
    if caller.client_id:
        return CLIENT_SOURCE_PREFIX + caller.client_id
    return SUBJECT_SOURCE_PREFIX + caller.subject

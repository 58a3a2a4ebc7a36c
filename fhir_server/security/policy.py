"""Access policy: what a verified token may do with a request and with the resources it touches.

Pure functions over plain values; the API calls them around each interaction:

1. :func:`authorize` before the interaction: raises ``Forbidden`` (403, ``MSG_SCOPE_INSUFFICIENT``)
   when no scope grants it, or ``NotFound`` (``MSG_NO_EXIST``, the message of an unknown id) when
   a ``patient/`` token names another Patient; otherwise returns a :class:`Decision` saying what
   the rest of the request must respect.
2. :func:`ensure_visible` on a resource read by id (read, vread, instance history, the current
   version before update/patch/delete, the focus of an instance operation): another patient's
   resource answers as if it did not exist. :func:`ensure_writable` on the content to be stored.
3. :func:`filter_visible` on everything returned beside the main search results: ``_include``,
   ``_revinclude``, history entries, operation output. Searches themselves are narrowed, not
   refused: :attr:`Decision.search_params` (or :attr:`Decision.compartment` for the store's
   compartment index) are ANDed to the client's parameters.

Compartment rules. A ``patient/`` scope (and a ``user/`` scope when the token's user is a
patient) reaches only that patient's compartment, as defined by the R4 Patient
CompartmentDefinition (element paths in ``data/r4/compartment_paths.json``). Types that can never
be in a Patient compartment (Organization, Practitioner, Medication, terminology...) are not
patient data: such a token may read and search them as its scopes say, but never write them.
``system/`` scopes (and ``user/`` scopes of a non-patient user) are not narrowed; when both
kinds grant an interaction, the broader one applies.

Instance access to Patient by a compartment-bound token is limited to its own id (decided from
the request alone, so probing other ids costs no storage read); Patients linked to it
(``Patient.link.other``) are in the compartment and may appear as included resources.

SMART v2 query restrictions (``patient/Observation.rs?category=laboratory``) become search
parameters; checking one resource against them needs the search machinery, so the functions that
judge single resources take a :data:`RestrictionMatcher` and refuse (fail closed) without one.

Writes: :func:`stamp_source` sets ``meta.source`` to the Organization reference the client acts
for (``Organization/123``) so every record names the facility that pushed it; without one it is
``urn:fhir-server:client:<client_id>`` (or ``urn:fhir-server:subject:<sub>`` for a token without
a client). Any ``meta.source`` sent by the client is replaced: it is the server's record.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_files
from typing import Any

import orjson

from fhir_server.errors import NotFound
from fhir_server.security.scopes import (
    Interaction,
    Restriction,
    ScopeContext,
    allows,
    restriction_params,
)
from fhir_server.security.tokens import AccessContext, insufficient_scope

__all__ = [
    "AccessRequest",
    "Decision",
    "RestrictionMatcher",
    "authorize",
    "check_search_parameters",
    "compartment_patients",
    "ensure_visible",
    "ensure_writable",
    "filter_visible",
    "in_patient_compartment",
    "interaction_for",
    "is_patient_data",
    "is_visible",
    "search_narrowing",
    "source_of",
    "stamp_source",
]

RestrictionMatcher = Callable[[dict[str, Any], Restriction], bool]
"""Whether a resource satisfies every (parameter, value) pair of one v2 scope restriction."""

CLIENT_SOURCE_PREFIX = "urn:fhir-server:client:"
SUBJECT_SOURCE_PREFIX = "urn:fhir-server:subject:"
# The compartment parameter used to narrow searches: the one naming the patient as the record's
# subject, in this order of preference; other types use their first compartment parameter.
_NARROWING_PREFERENCE = ("patient", "subject", "beneficiary", "individual", "member", "actor")
_WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.PATCH})
#: Operations only a facility's or an operator's ``system/`` scope may call (XML 130 import).
_SYSTEM_ONLY = frozenset({Interaction.OPERATION_IMPORT_XML130,
                          Interaction.OPERATION_CONVERT_XML130})


@dataclass(frozen=True)
class AccessRequest:
    """What is asked, as plain values: the interaction (or ``"operation"`` with an operation
    name such as ``everything`` or ``$everything``), the resource type (``None`` for the whole
    system) and the id (``None`` for type-level requests)."""

    interaction: Interaction | str
    resource_type: str | None = None
    id: str | None = None
    operation: str | None = None


@dataclass(frozen=True)
class Decision:
    """An allowed request and the limits the rest of it must respect.

    ``patient_id`` is set when compartment rules apply: call :func:`ensure_visible` on every
    resource read by id and :func:`filter_visible` on included and history resources.
    ``restrictions`` are the v2 query restrictions (alternatives, ORed), ``None`` if none.
    ``search_params`` narrow a type-level search (ANDed to the client's parameters);
    ``compartment`` is the same narrowing as ``("Patient", id)`` for ``SearchQuery.compartment``.
    """

    interaction: Interaction
    resource_type: str | None = None
    patient_id: str | None = None
    restrictions: tuple[Restriction, ...] | None = None
    search_params: tuple[tuple[str, str], ...] = ()
    compartment: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Grant:
    patient_id: str | None
    restrictions: tuple[Restriction, ...] | None


# -- the compartment table -------------------------------------------------------------------


@cache
def _compartment_paths() -> dict[str, dict[str, tuple[str, ...]]]:
    table = package_files.files("fhir_server").joinpath("data/r4/compartment_paths.json")
    data: dict[str, Any] = orjson.loads(table.read_bytes())
    return {
        kind: {code: tuple(paths) for code, paths in params.items()}
        for kind, params in data.items()
        if not kind.startswith("_")
    }


@cache
def _element_paths(resource_type: str) -> tuple[tuple[str, ...], ...]:
    params = _compartment_paths().get(resource_type, {})
    unique = dict.fromkeys(path for paths in params.values() for path in paths)
    return tuple(tuple(path.split(".")) for path in unique)


def is_patient_data(resource_type: str | None) -> bool:
    """Return whether resources of the type can belong to a Patient compartment."""
    return resource_type is not None and resource_type in _compartment_paths()


def _walk(node: Any, steps: tuple[str, ...]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, steps)
    elif not steps:
        yield node
    elif isinstance(node, dict) and steps[0] in node:
        yield from _walk(node[steps[0]], steps[1:])


def _patient_id(reference: Any) -> str | None:
    text = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(text, str) or not text.startswith("Patient/"):
        return None
    return text.split("/")[1] or None  # Patient/1/_history/2 names Patient 1 too


def compartment_patients(resource: dict[str, Any]) -> frozenset[str]:
    """Return the ids of the patients in whose compartment the resource is.

    Only relative references (``Patient/123``) count: an absolute URL may name another server.
    """
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return frozenset()
    ids = {
        pid
        for steps in _element_paths(kind)
        for value in _walk(resource, steps)
        if (pid := _patient_id(value)) is not None
    }
    if kind == "Patient" and isinstance(resource.get("id"), str):
        ids.add(resource["id"])  # a Patient is in its own compartment
    return frozenset(ids)


def in_patient_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    """Return whether the resource is in the compartment of Patient ``patient_id``."""
    return patient_id in compartment_patients(resource)


def _narrowing_code(resource_type: str) -> str | None:
    params = _compartment_paths().get(resource_type)
    if not params:
        return None
    preferred = (code for code in _NARROWING_PREFERENCE if code in params)
    return next(preferred, next(iter(params)))


# -- scopes ----------------------------------------------------------------------------------


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


def _merged(
    first: tuple[Restriction, ...] | None, second: tuple[Restriction, ...] | None
) -> tuple[Restriction, ...] | None:
    if first is None or second is None:
        return None
    return tuple(dict.fromkeys(first + second))


def _restrictions_of(
    context: AccessContext,
    kinds: Sequence[ScopeContext],
    resource_type: str | None,
    interaction: Interaction,
) -> tuple[Restriction, ...] | None:
    found: tuple[Restriction, ...] | None = ()
    for kind in kinds:
        if allows(context.scopes, kind, resource_type, interaction):
            own = restriction_params(context.scopes, resource_type, interaction, kind)
            found = _merged(found, own)
    return found


def _grant(
    context: AccessContext, resource_type: str | None, interaction: Interaction
) -> _Grant | None:
    """Return what the token's scopes grant, broad (system/) scopes first; None if nothing."""
    bound = context.patient_id is not None
    broad = [ScopeContext.SYSTEM] + ([] if bound else [ScopeContext.USER])
    if any(allows(context.scopes, kind, resource_type, interaction) for kind in broad):
        return _Grant(None, _restrictions_of(context, broad, resource_type, interaction))
    narrow = [ScopeContext.PATIENT] + ([ScopeContext.USER] if bound else [])
    if not bound or not any(
        allows(context.scopes, kind, resource_type, interaction) for kind in narrow
    ):
        return None  # patient/ scopes without a patient in the token grant nothing
    return _Grant(context.patient_id, _restrictions_of(context, narrow, resource_type, interaction))


# -- before the interaction ------------------------------------------------------------------


def authorize(context: AccessContext, request: AccessRequest) -> Decision:
    """Decide a request before it runs; raise ``Forbidden`` or (hidden) ``NotFound``."""
    interaction = interaction_for(request)
    kind = request.resource_type
    if interaction in _SYSTEM_ONLY and not allows(context.scopes, ScopeContext.SYSTEM, kind,
                                                  interaction):
        raise insufficient_scope(f"{interaction} needs a system/ scope (a facility's token)")
    grant = _grant(context, kind, interaction)
    if grant is None:
        raise insufficient_scope(f"no scope grants {interaction} on {kind or 'the system'}")
    if grant.patient_id is None:
        return _decision(interaction, kind, grant, request.id)
    if kind is not None and not is_patient_data(kind) and kind != "Patient":
        if interaction in _WRITES or interaction is Interaction.DELETE:
            raise insufficient_scope(f"a patient's token cannot write {kind}")
        return _decision(interaction, kind, _Grant(None, grant.restrictions), request.id)
    if kind == "Patient" and request.id is not None and request.id != grant.patient_id:
        raise NotFound(f"Patient/{request.id} is not known", message_id="MSG_NO_EXIST")
    return _decision(interaction, kind, grant, request.id)


def _decision(
    interaction: Interaction, kind: str | None, grant: _Grant, id: str | None
) -> Decision:
    # Type-level requests other than create select resources by search (conditional update
    # and delete included), so they are narrowed like searches.
    is_search = id is None and interaction is not Interaction.CREATE
    params: tuple[tuple[str, str], ...] = ()
    compartment = None
    if is_search:
        params = _compartment_params(kind, grant.patient_id) + _restriction_params(grant)
        compartment = ("Patient", grant.patient_id) if grant.patient_id else None
    return Decision(interaction, kind, grant.patient_id, grant.restrictions, params, compartment)


def _compartment_params(kind: str | None, patient_id: str | None) -> tuple[tuple[str, str], ...]:
    if patient_id is None or kind is None:
        return ()
    if kind == "Patient":
        return (("_id", patient_id),)
    code = _narrowing_code(kind)
    return ((code, f"Patient/{patient_id}"),) if code else ()


def _restriction_params(grant: _Grant) -> tuple[tuple[str, str], ...]:
    alternatives = grant.restrictions
    if alternatives is None:
        return ()
    if len(alternatives) == 1:
        return alternatives[0]
    codes = {pair[0] for alternative in alternatives for pair in alternative}
    if len(codes) == 1 and all(len(alternative) == 1 for alternative in alternatives):
        # One parameter with several allowed values: FHIR ORs comma-separated values.
        values = ",".join(alt[0][1].replace(",", r"\,") for alt in alternatives)
        return ((codes.pop(), values),)
    raise insufficient_scope("the token's query restrictions cannot be combined into one search")


def search_narrowing(context: AccessContext, resource_type: str | None) -> list[tuple[str, str]]:
    """Return the search parameters that narrow a type search to what the token may see:
    the patient compartment (``subject=Patient/123``, ``_id=123`` for Patient) and the v2
    scope restrictions (``category=laboratory``). Raises ``Forbidden`` if nothing grants it."""
    decision = authorize(context, AccessRequest(Interaction.SEARCH_TYPE, resource_type))
    return list(decision.search_params)


def check_search_parameters(
    context: AccessContext, resource_type: str | None, codes: Iterable[str]
) -> None:
    """Refuse ``_has`` in a patient token's search of shared types (Organization...): those
    searches are not narrowed, so a reverse chain would reveal other patients' records."""
    shared = not is_patient_data(resource_type) and resource_type != "Patient"
    if context.patient_id is not None and shared and any(c.startswith("_has") for c in codes):
        raise insufficient_scope("_has on shared resources is not open to a patient's token")


# -- after the interaction -------------------------------------------------------------------


def _meets(
    resource: dict[str, Any],
    restrictions: tuple[Restriction, ...] | None,
    matcher: RestrictionMatcher | None,
) -> bool:
    if restrictions is None:
        return True
    if matcher is None:
        return False  # cannot check the restriction: fail closed
    return any(matcher(resource, restriction) for restriction in restrictions)


def _grant_for_reading(context: AccessContext, kind: str) -> _Grant | None:
    return _grant(context, kind, Interaction.READ) or _grant(context, kind, Interaction.SEARCH_TYPE)


def is_visible(
    context: AccessContext, resource: dict[str, Any], matcher: RestrictionMatcher | None = None
) -> bool:
    """Return whether the token may see the resource (scopes, compartment, restrictions)."""
    kind = resource.get("resourceType")
    grant = _grant_for_reading(context, kind) if isinstance(kind, str) else None
    if grant is None:
        return False
    bound = grant.patient_id is not None and (is_patient_data(kind) or kind == "Patient")
    if bound and not in_patient_compartment(resource, str(grant.patient_id)):
        return False
    return _meets(resource, grant.restrictions, matcher)


def ensure_visible(
    context: AccessContext, resource: dict[str, Any], matcher: RestrictionMatcher | None = None
) -> None:
    """Raise the ``NotFound`` of an unknown id unless the token may see the resource."""
    if not is_visible(context, resource, matcher):
        reference = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise NotFound(f"{reference} is not known", message_id="MSG_NO_EXIST")


def filter_visible(
    context: AccessContext,
    resources: Iterable[dict[str, Any]],
    matcher: RestrictionMatcher | None = None,
) -> list[dict[str, Any]]:
    """Keep only the resources the token may see (for includes, history and operations).

    A deleted version has no content to judge: pass only entries with a resource.
    """
    return [resource for resource in resources if is_visible(context, resource, matcher)]


def ensure_writable(
    context: AccessContext,
    interaction: Interaction,
    resource: dict[str, Any],
    matcher: RestrictionMatcher | None = None,
) -> None:
    """Raise ``Forbidden`` unless the token may store this content (create, update, patch).

    A compartment-bound token may only write into its own compartment; v2 restrictions must
    hold for the new content.
    """
    kind = resource.get("resourceType")
    grant = _grant(context, kind if isinstance(kind, str) else None, interaction)
    if grant is None:
        raise insufficient_scope(f"no scope grants {interaction} on {kind}")
    if grant.patient_id is not None and not in_patient_compartment(resource, grant.patient_id):
        raise insufficient_scope("a patient's token can only write that patient's records")
    if not _meets(resource, grant.restrictions, matcher):
        raise insufficient_scope("the resource is outside the token's query restrictions")


# -- writes: who pushed it -------------------------------------------------------------------


def source_of(context: AccessContext) -> str:
    """Return the ``meta.source`` that records who wrote through this token."""
    if context.organization:
        return context.organization
    if context.client_id:
        return CLIENT_SOURCE_PREFIX + context.client_id
    return SUBJECT_SOURCE_PREFIX + context.subject


def stamp_source(resource: dict[str, Any], context: AccessContext) -> dict[str, Any]:
    """Return a copy of the resource whose ``meta.source`` names the facility or client."""
    stamped = dict(resource)
    meta = resource.get("meta")
    new_meta: dict[str, Any] = copy.deepcopy(meta) if isinstance(meta, dict) else {}
    new_meta["source"] = source_of(context)
    stamped["meta"] = new_meta
    return stamped

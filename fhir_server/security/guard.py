"""Request-scoped security: who is calling this request, and the checks every layer applies.

The API sets ``current`` once per request (the verified ``AccessContext``, or none when
access control is off). Interactions and operations then call the functions below without
knowing about HTTP: ``authorize`` before acting, ``check_visible``/``visible`` on what they
read, ``prepare_write`` on what they store, and ``audit`` for every outcome. With access
control off every check passes, and auditing still happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fhir_server.security import policy
from fhir_server.security.policy import AccessRequest, Decision
from fhir_server.security.tokens import AccessContext

__all__ = [
    "RequestSecurity",
    "authorize",
    "check_visible",
    "current",
    "prepare_write",
    "visible",
]


@dataclass
class RequestSecurity:
    """The caller of the current request and what the policy decided for it."""

    context: AccessContext | None
    address: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)
    bundle: bool = False
    #: The interaction the request turned out to be, when its endpoint alone does not say
    #: (a Bundle posted to the base is a ``transaction`` or a ``batch``).
    interaction: str | None = None
    #: Whether the request leaves an AuditEvent: only then are ``touched`` and ``patients``
    #: (which cost a walk of every resource read) collected.
    audited: bool = True


current: ContextVar[RequestSecurity | None] = ContextVar("fhir_request_security", default=None)


def _context() -> AccessContext | None:
    security = current.get()
    return security.context if security is not None else None


def authorize(request: AccessRequest) -> Decision | None:
    """Decide ``request`` for the current caller; None when access control is off.

    Raises ``Forbidden`` (403) or the hidden ``NotFound`` (404) of the policy.
    """
    security = current.get()
    if security is None or security.context is None:
        return None
    decision = policy.authorize(security.context, request)
    security.decisions.append(decision)
    return decision


def check_visible(resource: dict[str, Any]) -> None:
    """Raise the ``NotFound`` of an unknown id if the caller may not see ``resource``."""
    context = _context()
    if context is not None:
        policy.ensure_visible(context, resource)
    note_touched([resource])


def visible(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the resources the caller may see (for includes, history and operations)."""
    context = _context()
    kept = list(resources) if context is None else policy.filter_visible(context, resources)
    note_touched(kept)
    return kept


def prepare_write(resource: dict[str, Any], interaction: str) -> None:
    """Check the caller may store ``resource``; record who wrote it in ``meta.source``."""
    context = _context()
    if context is None:
        return
    policy.ensure_writable(context, policy.interaction_for(AccessRequest(interaction)),
                           resource)
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["source"] = policy.source_of(context)
    resource["meta"] = meta


def note_touched(resources: Sequence[dict[str, Any]]) -> None:
    """Remember the resources (and their patients) the request touched, for its AuditEvent."""
    security = current.get()
    if security is None or not security.audited:
        return
    for resource in resources[:50]:
        kind, id = resource.get("resourceType"), resource.get("id")
        if kind and id:
            security.touched.append(f"{kind}/{id}")
            security.patients |= policy.compartment_patients(resource)


def narrowing() -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """The search parameters (and compartment) the policy added to the current search."""
    security = current.get()
    if security is None or not security.decisions:
        return [], None
    decision = security.decisions[-1]
    return list(decision.search_params), decision.compartment


def filter_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Drop the entries of a searchset/history/document Bundle the caller may not see.

    Entries without a resource (deletions in history) are kept only for callers that are
    not limited to one patient's compartment, since nothing shows whose they were.
    """
    context = _context()
    entries = bundle.get("entry") or []
    resources = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
    kept_ids = {id(r) for r in visible(resources)}
    outcome_only = {"OperationOutcome"}
    kept = [
        e for e in entries
        if (isinstance(e.get("resource"), dict) and (id(e["resource"]) in kept_ids
                                                    or e["resource"].get("resourceType")
                                                    in outcome_only))
        or (e.get("resource") is None and (context is None or context.patient_id is None))
    ]
    if len(kept) != len(entries):
        bundle = {**bundle, "entry": kept} if kept else {
            k: v for k, v in bundle.items() if k != "entry"}
    return bundle

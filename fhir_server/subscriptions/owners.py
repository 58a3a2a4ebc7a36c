"""Who a subscription delivers for: its owner, the caller who created or last changed it.

The owner's ``Caller`` facts (subject, scopes, the patient it is bound to, facility, client,
``fhirUser``, the App Launch authorization) are stored with the subscription when it is
written. A notification only ever carries what the owner may read *now*: each resource is
judged at delivery time by the one access policy (``security.policy.authorize`` for a read of
it, then ``Access.readable``), exactly as a read by the owner's token would be; a Consent
withdrawn or a scope narrowed in between is respected. Writes by the delivery worker itself
(``WORKER``: the status of the subscription) keep the owner.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from fhir_server.errors import FhirError
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.caller import Caller
from fhir_server.security.policy import AccessRequest, authorize
from fhir_server.security.scopes import Interaction, parse_scopes

__all__ = ["WORKER", "owner_facts", "owner_of", "readable_by"]

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


def readable_by(owner: Caller, resource: dict[str, Any],
                registry: SearchParameterRegistry, context: Collection[str] = ()) -> bool:
    """Whether the owner may read ``resource`` now (the policy's answer to a read of it).

    ``context``: the patients of the resource its security context names.
    """
    request = AccessRequest(Interaction.READ, str(resource.get("resourceType")),
                            str(resource.get("id", "")) or None)
    try:
        access = authorize(owner, request, registry)
    except FhirError:
        return False
    return access.readable(resource, context)

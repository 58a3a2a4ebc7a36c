"""``$status`` (Subscriptions Backport IG, OperationDefinition-backport-subscription-status):
the status of one Subscription (``Subscription/[id]/$status``) or of every one the caller may
read (``Subscription/$status``, narrowed by ``id`` and ``status``), as a ``searchset`` Bundle
of SubscriptionStatus resources (``query-status``): status, the number of events since the
subscription started, and the last error."""

from __future__ import annotations

from typing import Any

from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read
from fhir_server.operations.parameters import OperationInput
from fhir_server.search.parse import parse_search
from fhir_server.security.policy import Access
from fhir_server.subscriptions.notifications import Notice, status_resource
from fhir_server.subscriptions.plans import shape_of

__all__ = ["status", "subscription_notice"]

#: The most subscriptions one type-level ``$status`` answers for.
_MOST = 1000


async def subscription_notice(services: Services, resource: dict[str, Any],
                              kind: str) -> Notice:
    """The Notice of a stored Subscription: its status and counters from the outbox."""
    id = str(resource["id"])
    state = await services.store.outbox.state(id)
    topic, content, version = shape_of(resource)
    return Notice(id, topic, str(resource.get("status")), kind,
                  state.events if state else 0, content, version,
                  resource.get("error") or (state.error if state else None))


async def status(services: Services, access: Access, call: OperationInput) -> Outcome:
    """``$status`` at instance or type level."""
    if call.id is not None:
        stored = (await read(services, access, "Subscription", call.id)).stored
        assert stored is not None
        resources = [stored.resource()]
    else:
        params = [("_count", str(_MOST))]
        if call.values.get("id"):
            params.append(("_id", ",".join(call.values["id"])))
        if call.values.get("status"):
            params.append(("status", ",".join(call.values["status"])))
        query = access.scoped(parse_search("Subscription", params, services.registry,
                                           strict=True, max_count=_MOST).query)
        resources = [match.resource() for match in (await services.search(query)).matches]
    entries = []
    for resource in resources:
        notice = await subscription_notice(services, resource, "query-status")
        found = status_resource(notice, [], services.base_url)
        entries.append({"fullUrl": f"urn:uuid:{found['id']}", "resource": found,
                        "search": {"mode": "match"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "total": len(entries), "entry": entries}
    return Outcome(200, body=bundle)

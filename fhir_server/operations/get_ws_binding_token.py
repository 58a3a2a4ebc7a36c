"""``$get-ws-binding-token`` (Subscriptions Backport IG,
OperationDefinition-backport-subscription-get-ws-binding-token): a token a websocket client
sends (``bind-with-token <token>``) to bind its connection to websocket Subscriptions, with
its expiry and the websocket URL. At instance level for that Subscription; at type level for
the ``id`` parameters, or for every websocket Subscription the caller may read. Each named
Subscription must be readable by the caller (else 404, as an unknown id) and use the
websocket channel (else 400)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read
from fhir_server.operations.parameters import OperationInput
from fhir_server.search.parse import parse_search
from fhir_server.security.policy import Access
from fhir_server.subscriptions.binding_tokens import mint, websocket_url

__all__ = ["get_ws_binding_token"]

_MOST = 100


async def _named(services: Services, access: Access, ids: list[str]) -> list[str]:
    for id in ids:
        stored = (await read(services, access, "Subscription", id)).stored
        assert stored is not None
        channel = stored.resource().get("channel") or {}
        if channel.get("type") != "websocket":
            raise BadRequest(f"Subscription/{id} does not use the websocket channel",
                             message_id="MSG_SUBSCRIPTION_NOT_WEBSOCKET", expression=("id",))
    return ids


async def _all_websocket(services: Services, access: Access) -> list[str]:
    query = parse_search("Subscription", [("type", "websocket"), ("_count", str(_MOST))],
                         services.registry, strict=True).query
    found = await services.search(access.scoped(query))
    return [match.id for match in found.matches]


async def get_ws_binding_token(services: Services, access: Access,
                               call: OperationInput) -> Outcome:
    """Issue a binding token for the caller's websocket Subscriptions."""
    ids = [call.id] if call.id is not None else list(call.values.get("id", ()))
    subscriptions = await (_named(services, access, ids) if ids
                           else _all_websocket(services, access))
    if not subscriptions:
        raise BadRequest("There is no websocket Subscription to bind",
                         message_id="MSG_SUBSCRIPTION_NOT_WEBSOCKET")
    binding, token = mint(services.settings, access.caller.subject, subscriptions)
    expiration = datetime.fromtimestamp(binding.expires, UTC).isoformat().replace("+00:00", "Z")
    parameters: list[dict[str, Any]] = [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": expiration},
        *({"name": "subscription", "valueString": id} for id in subscriptions),
        {"name": "websocket-url", "valueUrl": websocket_url(services.settings)}]
    return Outcome(200, body={"resourceType": "Parameters", "parameter": parameters})

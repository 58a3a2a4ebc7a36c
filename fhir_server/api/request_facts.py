"""What the access line and the request metrics say about a request, read from its ASGI scope
once the application has answered it.

Starlette leaves the matched endpoint and path parameters in the scope; the endpoint's route
name (``api.routes``) is the interaction of the endpoints outside FHIR. Below the FHIR base the
adapter notes what the router made of the request (:func:`note_caller`): the interaction (a
Bundle posted to the base is a ``transaction`` or a ``batch``, an operation is ``$name``), the
resource type, and the token's client id, never the token.
Every value comes from a bounded set (route names, R4 resource types, the server's operations)
so that neither the metrics' label sets nor the log can be grown by what a client sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from fhir_server.operations import OPERATIONS
from fhir_server.resources import is_resource_type

__all__ = ["RequestFacts", "RouteNames", "note_caller"]

_CALLER = "fhir_server.caller"
_OPERATION_NAMES = frozenset(name for _, _, name in OPERATIONS)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """A request as operators see it: interaction, resource type (or ``""``), client id."""

    interaction: str
    resource_type: str
    client_id: str | None


def note_caller(scope: Scope, client_id: str | None, interaction: str | None = None,
                resource_type: str | None = None) -> None:
    """Record who called (a client id, or None) and what the FHIR request was (its
    interaction and resource type), for the request's access line and metrics."""
    scope[_CALLER] = (client_id, interaction, resource_type)


class RouteNames:
    """Route names by endpoint, learnt from the application's routes on first use."""

    def __init__(self) -> None:
        self._names: dict[Callable[..., Any], str] | None = None

    def facts(self, scope: Scope) -> RequestFacts:
        """The facts of an answered request (``unmatched`` when no route matched)."""
        route = self._name(scope)
        client_id, decided, kind = scope.get(_CALLER) or (None, None, None)
        interaction = decided or route
        if interaction.startswith("$"):
            interaction = interaction if interaction[1:] in _OPERATION_NAMES else "$unknown"
        kind = kind or ""
        return RequestFacts(interaction, kind if is_resource_type(kind) else "", client_id)

    def _name(self, scope: Scope) -> str:
        if self._names is None:
            app = scope.get("app")
            routes = getattr(app, "routes", None)
            if routes is None:
                return "unmatched"
            self._names = {route.endpoint: route.name for route in routes
                           if hasattr(route, "endpoint")}
        endpoint = scope.get("endpoint")
        return self._names.get(endpoint, "unmatched") if endpoint is not None else "unmatched"

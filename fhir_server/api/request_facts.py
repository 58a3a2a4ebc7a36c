"""What the access line and the request metrics say about a request, read from its ASGI scope
once the application has answered it.

The router leaves the matched endpoint and path parameters in the scope; the endpoint's route
name (``api.routes``) is the interaction, refined where the route alone does not say: a Bundle
posted to the base is a ``transaction`` or a ``batch``, an operation is ``$name``. The caller
is noted by the access layer (:func:`note_caller`): the token's client id, never the token.
Every value comes from a bounded set (route names, R4 resource types, the server's operations)
so that neither the metrics' label sets nor the log can be grown by what a client sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def note_caller(scope: Scope, client_id: str | None, interaction: str | None = None) -> None:
    """Record who called (a client id, or None) and, when the endpoint decided it, the
    interaction (``transaction``, ``batch``), for the request's access line and metrics."""
    scope[_CALLER] = (client_id, interaction)


class RouteNames:
    """Route names by endpoint, learnt from the application's routes on first use."""

    def __init__(self) -> None:
        self._names: dict[Callable[..., Any], str] | None = None

    def facts(self, scope: Scope) -> RequestFacts:
        """The facts of an answered request (``unmatched`` when no route matched)."""
        params: Mapping[str, str] = scope.get("path_params") or {}
        route = self._name(scope)
        client_id, decided = scope.get(_CALLER) or (None, None)
        interaction = decided or route
        if route == "operation":
            op = params.get("op", "")
            interaction = f"${op}" if op in _OPERATION_NAMES else "$unknown"
        kind = params.get("type", "")
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

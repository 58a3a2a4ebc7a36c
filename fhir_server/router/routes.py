"""The FHIR route table: (method, path pattern below the base, route name). No logic here
but the matching of a path against the table.

The same table classifies an HTTP request and a Bundle entry's ``request.url``, so both reach
the same interaction. Pattern segments: a literal, ``{type}`` (a resource type), ``{id}``,
``{vid}`` (a version), ``{compartment}`` (a compartment type) and ``$op`` (a segment naming an
operation). Literal segments and operations win over ``{type}``/``{id}``: the table is read in
order and a variable never matches a segment that starts with ``_`` or ``$``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

from fhir_server.errors import MethodNotAllowed, NotFound

__all__ = ["PUBLIC_ROUTES", "ROUTES", "Match", "Route", "match_route"]


@dataclass(frozen=True)
class Route:
    """One row: an HTTP method, a path pattern below the FHIR base, and the route's name."""

    method: str
    pattern: str
    name: str

    @property
    def segments(self) -> tuple[str, ...]:
        """The pattern's segments (none for the base itself)."""
        return _segments(self.pattern)


ROUTES: tuple[Route, ...] = (
    Route("GET", "metadata", "capabilities"),
    Route("POST", "", "bundle"),
    Route("GET", "", "search-system"),
    Route("POST", "_search", "search-system"),
    Route("GET", "_history", "history-system"),
    Route("GET", "$op", "operation"),
    Route("POST", "$op", "operation"),
    Route("POST", "{type}/_search", "search-type"),
    Route("GET", "{type}/_history", "history-type"),
    Route("GET", "{type}/$op", "operation"),
    Route("POST", "{type}/$op", "operation"),
    Route("GET", "{type}", "search-type"),
    Route("POST", "{type}", "create"),
    Route("PUT", "{type}", "conditional-update"),
    Route("PATCH", "{type}", "conditional-patch"),
    Route("DELETE", "{type}", "conditional-delete"),
    Route("GET", "{type}/{id}/_history", "history-instance"),
    Route("GET", "{type}/{id}/_history/{vid}", "vread"),
    Route("GET", "{type}/{id}/$op", "operation"),
    Route("POST", "{type}/{id}/$op", "operation"),
    Route("GET", "{type}/{id}", "read"),
    Route("PUT", "{type}/{id}", "update"),
    Route("PATCH", "{type}/{id}", "patch"),
    Route("DELETE", "{type}/{id}", "delete"),
    Route("GET", "{compartment}/{id}/{type}", "search-compartment"),
)

#: Routes served without a token (the CapabilityStatement).
PUBLIC_ROUTES = frozenset({"capabilities"})


@dataclass(frozen=True)
class Match:
    """A matched route and the values of its variables."""

    name: str
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    operation: str | None = None
    compartment: str | None = None


@cache
def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(part for part in pattern.split("/") if part)


#: The routes by their number of segments, in table order (a path can match no other).
_BY_LENGTH: dict[int, tuple[Route, ...]] = {
    length: tuple(route for route in ROUTES if len(route.segments) == length)
    for length in {len(route.segments) for route in ROUTES}
}


_VARIABLES = {"{type}": "resource_type", "{id}": "id", "{vid}": "version",
              "{compartment}": "compartment", "$op": "operation"}


def _bind(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    bound: dict[str, str] = {}
    for want, part in zip(pattern, parts, strict=True):
        if want == "$op":
            if not part.startswith("$") or len(part) == 1:
                return None
            bound["operation"] = part[1:]
        elif want in _VARIABLES:
            if part.startswith(("_", "$")):
                return None
            bound[_VARIABLES[want]] = part
        elif want != part:
            return None
    return bound


@lru_cache(maxsize=4096)
def match_route(method: str, path: str) -> Match:
    """Return the route of ``method`` on ``path`` (below the base, without a query).

    Raises ``NotFound`` (``MSG_NO_ENDPOINT``) for a path no route has, ``MethodNotAllowed``
    (with ``Allow``) for a known path and another method. ``HEAD`` is ``GET``. Remembered:
    a push's entries name the same few paths (``Patient``, ``Encounter``...).
    """
    method = "GET" if method == "HEAD" else method
    parts = [part for part in path.split("/") if part]
    allowed: list[str] = []
    for route in _BY_LENGTH.get(len(parts), ()):
        bound = _bind(route.segments, parts)
        if bound is None:
            continue
        if route.method == method:
            return Match(route.name, **bound)
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path or '/'}",
                               headers={"Allow": ", ".join(sorted(set(allowed)))})
    raise NotFound(f"No FHIR endpoint at {path or '/'}", message_id="MSG_NO_ENDPOINT")

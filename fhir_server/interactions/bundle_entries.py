"""Entries of a batch or transaction Bundle: each ``entry.request`` as a ``FhirRequest``, and
the references between entries (R4 http.html#transaction, bundle.html#references).

``parse_entry`` reads one entry into an ``Entry``: its request (matched against the same route
table as HTTP requests), its ``fullUrl`` and resource. ``rewrite_references`` replaces every
``Reference.reference`` (nested elements and extensions included) that names another entry's
``fullUrl`` with ``Type/id``, and resolves conditional references (``Patient?identifier=...``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError, Issue
from fhir_server.interactions.references import references_in
from fhir_server.interactions.write import Write
from fhir_server.resources import ID_PATTERN, is_resource_type
from fhir_server.router.request import FhirRequest
from fhir_server.router.routes import match_route
from fhir_server.search.model import SearchQuery
from fhir_server.security.policy import Access

__all__ = [
    "ORDER",
    "Entry",
    "Optimistic",
    "at_entry",
    "parse_entry",
    "query_pairs",
    "references_in",
    "rewrite_references",
    "status_text",
]

#: Processing order of a transaction (R4 3.1.0.11.2): DELETE, POST, PUT/PATCH, then GET/HEAD.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
#: The routes an entry of each method may take (a GET entry: any route that reads).
_WRITE_ROUTES = {
    "POST": ("create",),
    "PUT": ("update", "conditional-update"),
    "PATCH": ("patch", "conditional-patch"),
    "DELETE": ("delete", "conditional-delete"),
}
#: What resolving an entry set in its resource: its id and its references' values.
Signature = tuple[object, tuple[str, ...]]


@dataclass
class Optimistic:
    """What resolving the Bundle outside the lock found for an entry: the ``Type/id`` it
    would write, and the resolved resource's signature with its search index."""

    target: str | None
    signature: Signature | None = None
    index: object | None = None


@dataclass
class Entry:
    """One entry of a Bundle while it is processed.

    ``write`` is the prepared write (None for a read); ``holders`` the objects of the
    resource that carry a reference (found once: resolution changes their values, not which
    objects hold them); ``existing`` the id a POST's ``ifNoneExist`` matched; ``optimistic``
    what the resolution outside the lock found; ``renames`` the targets that resolution
    under the lock found otherwise; ``conditions`` the parsed searches of its conditional
    references.
    """

    index: int
    request: FhirRequest
    full_url: str | None = None
    resource: dict[str, Any] | None = None
    access: Access | None = None
    write: Write | None = None
    holders: list[dict[str, Any]] = field(default_factory=list)
    existing: str | None = None
    optimistic: Optimistic | None = None
    renames: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, SearchQuery] = field(default_factory=dict)
    #: The entry's HTTP method and the type its request is about (read very often).
    method: str = field(init=False)
    resource_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.method = self.request.method
        self.resource_type = str(self.request.resource_type)

    @property
    def target(self) -> str | None:
        """``Type/id`` of what the entry writes, once known."""
        if self.write is None or self.write.id is None:
            return None
        return f"{self.resource_type}/{self.write.id}"


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, remembered: a Bundle's criteria are read
    several times, about 5 µs each time."""
    return list(_query_pairs(query))


@functools.lru_cache(maxsize=4096)
def _query_pairs(query: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(query, keep_blank_values=True))


def _fail(index: int, text: str, message_id: str) -> BadRequest:
    return BadRequest(f"Bundle.entry[{index}]: {text}", message_id=message_id,
                      expression=(f"Bundle.entry[{index}].request",))


def status_text(status: int) -> str:
    """Return ``Bundle.entry.response.status`` for an HTTP status (``201 Created``)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    return value if isinstance(value, str) else None


def parse_entry(index: int, entry: object, base_url: str) -> Entry:
    """Return ``Bundle.entry[index]`` as an ``Entry``; raise ``BadRequest`` located there."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise _fail(index, "every entry needs a request", "MSG_BUNDLE_REQUEST_MISSING")
    request = entry["request"]
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or method not in ORDER or not isinstance(url, str) or not url:
        raise _fail(index, "request.method (GET, HEAD, POST, PUT, PATCH or DELETE) and "
                    "request.url are required", "MSG_BUNDLE_REQUEST_INVALID")
    path, mark, query = url.partition("?")
    if path.startswith(base_url + "/"):
        path = path[len(base_url) + 1:]
    elif "://" in path:
        raise _fail(index, f"request.url '{url}' is not on this server", "MSG_BUNDLE_URL")
    try:
        matched = match_route(method, path)
    except FhirError:
        raise _fail(index, f"{method} {url} is not a request this server answers",
                    "MSG_BUNDLE_URL") from None
    _check_route(index, method, matched.name, url)
    if matched.resource_type is not None and not is_resource_type(matched.resource_type):
        raise _fail(index, f"request.url '{url}' names no resource type", "MSG_BUNDLE_URL")
    resource = entry.get("resource")
    full_url = entry.get("fullUrl")
    return Entry(
        index,
        FhirRequest(
            method, matched.name, matched.resource_type, matched.id, matched.version,
            matched.operation, matched.compartment,
            params=tuple(query_pairs(query)) if mark else (),
            body=resource if isinstance(resource, dict) else None,
            if_match=_text(request, "ifMatch"), if_none_match=_text(request, "ifNoneMatch"),
            if_none_exist=_text(request, "ifNoneExist"),
            if_modified_since=_text(request, "ifModifiedSince"),
        ),
        full_url=full_url if isinstance(full_url, str) else None,
        resource=resource if isinstance(resource, dict) else None,
    )


def _check_route(index: int, method: str, route: str, url: str) -> None:
    allowed = _WRITE_ROUTES.get(method)
    if allowed is not None and route not in allowed:
        raise _fail(index, f"a {method} entry's url is the resource type, Type/id or "
                    f"Type?criteria, not '{url}'", "MSG_BUNDLE_URL")
    parts = url.partition("?")[0].split("/")
    if len(parts) > 1 and not ID_PATTERN.match(parts[-1]) and route in (
            "update", "patch", "delete", "read"):
        raise _fail(index, f"'{parts[-1]}' is not a valid id", "MSG_ID_INVALID")


def at_entry(exc: FhirError, index: int, resource_type: str | None) -> FhirError:
    """Return ``exc`` with its issues located at ``Bundle.entry[index]``."""
    prefix = f"Bundle.entry[{index}]"

    def locate(expression: str) -> str:
        if expression.startswith("Bundle.entry["):
            return expression
        if resource_type and expression.startswith(resource_type):
            return f"{prefix}.resource{expression[len(resource_type):]}"
        return f"{prefix}.{expression}" if expression else prefix

    issues = [
        Issue(i.severity, i.code, i.message_id,
              i.diagnostics if i.diagnostics.startswith(prefix) else f"{prefix}: {i.diagnostics}",
              tuple(locate(e) for e in i.expression) or (prefix,))
        for i in exc.issues
    ]
    located = type(exc)(issues[0].diagnostics, message_id=exc.message_id, issues=issues,
                        headers=exc.headers)
    located.status = exc.status
    return located


Resolver = Callable[[str, str], Awaitable[str]]


def conditional_reference(reference: str) -> tuple[str, str] | None:
    """``(type, query)`` of a conditional reference (``Patient?identifier=...``), else None."""
    kind, mark, query = reference.partition("?")
    if not mark or "/" in kind:
        return None
    return kind, query


async def rewrite_references(
    holders: list[dict[str, Any]], targets: dict[str, str], resolve_conditional: Resolver
) -> None:
    """Point references at their entries' final ``Type/id`` and resolve conditional ones.

    A ``urn:uuid:``/``urn:oid:`` reference that names no entry raises ``BadRequest``.
    """
    for holder in holders:
        reference: str = holder["reference"]
        if reference in targets:
            holder["reference"] = targets[reference]
        elif reference.startswith(("urn:uuid:", "urn:oid:")):
            raise BadRequest(f"Reference '{reference}' names no entry of the Bundle",
                             message_id="MSG_BUNDLE_REFERENCE_UNRESOLVED")
        elif (conditional := conditional_reference(reference)) is not None:
            kind, query = conditional
            if not is_resource_type(kind):
                raise BadRequest(f"Conditional reference '{reference}' names no resource type",
                                 message_id="MSG_BUNDLE_REFERENCE_UNRESOLVED")
            found = await resolve_conditional(kind, query)
            holder["reference"] = f"{kind}/{found}"

"""Entries of a batch or transaction Bundle: parsing ``entry.request`` and rewriting
references (R4 http.html#transaction, bundle.html#references).

A ``PlannedEntry`` is one request of the Bundle with its target (type, id or search
criteria), its resource and its preconditions. ``rewrite_references`` replaces every
``Reference.reference`` (nested elements and extensions included) that names another entry's
``fullUrl`` with ``Type/id``, and resolves conditional references (``Patient?identifier=...``)
through a search in the transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError, Issue
from fhir_server.resources import ID_PATTERN, is_resource_type

__all__ = [
    "ORDER",
    "PlannedEntry",
    "at_entry",
    "parse_entry",
    "query_pairs",
    "references_in",
    "rewrite_references",
    "status_text",
]

#: Processing order of a transaction (R4 3.1.0.11.2): DELETE, POST, PUT/PATCH, then GET/HEAD.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class PlannedEntry:
    """One entry's request, resolved step by step while the Bundle is processed."""

    index: int
    method: str
    resource_type: str
    id: str | None = None
    version: str | None = None
    query: str | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def criteria(self) -> list[tuple[str, str]]:
        """The search criteria of a conditional request (its query string)."""
        return query_pairs(self.query or "")


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, remembered: a Bundle's criteria are read
    four times or more (found before the lock and under it, then each entry's target), about
    5 µs each time."""
    return list(_query_pairs(query))


@functools.lru_cache(maxsize=4096)
def _query_pairs(query: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(query, keep_blank_values=True))


def _fail(index: int, text: str, message_id: str) -> BadRequest:
    return BadRequest(f"Bundle.entry[{index}]: {text}", message_id=message_id,
                      expression=(f"Bundle.entry[{index}].request",))


def _split_url(index: int, url: str, base_url: str) -> tuple[list[str], str | None]:
    path, mark, query = url.partition("?")
    if path.startswith(base_url + "/"):
        path = path[len(base_url) + 1:]
    elif "://" in path:
        raise _fail(index, f"request.url '{url}' is not on this server", "MSG_BUNDLE_URL")
    return [p for p in path.split("/") if p], (query if mark else None)


def status_text(status: int) -> str:
    """Return ``Bundle.entry.response.status`` for an HTTP status (``201 Created``)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def parse_entry(index: int, entry: object, base_url: str) -> PlannedEntry:
    """Return the planned request of ``Bundle.entry[index]``; raise ``BadRequest``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise _fail(index, "every entry needs a request", "MSG_BUNDLE_REQUEST_MISSING")
    request = entry["request"]
    method, url = request.get("method"), request.get("url")
    if method not in ORDER or not isinstance(url, str) or not url:
        raise _fail(index, "request.method and request.url are required",
                    "MSG_BUNDLE_REQUEST_INVALID")
    parts, query = _split_url(index, url, base_url)
    if not parts or not is_resource_type(parts[0]):
        raise _fail(index, f"request.url '{url}' names no resource type", "MSG_BUNDLE_URL")
    planned = PlannedEntry(
        index, method, parts[0], query=query, full_url=entry.get("fullUrl"),
        resource=entry.get("resource"),
        if_match=request.get("ifMatch"), if_none_match=request.get("ifNoneMatch"),
        if_none_exist=request.get("ifNoneExist"),
        if_modified_since=request.get("ifModifiedSince"),
    )
    _set_target(planned, parts, url)
    return planned


def _set_target(planned: PlannedEntry, parts: list[str], url: str) -> None:
    index = planned.index
    if len(parts) >= 2:
        if not ID_PATTERN.match(parts[1]):
            raise _fail(index, f"'{parts[1]}' is not a valid id", "MSG_ID_INVALID")
        planned.id = parts[1]
    if len(parts) == 4 and parts[2] == "_history":
        planned.version = parts[3]
    elif len(parts) > 2:
        planned.extra["path"] = parts[2:]
    needs_resource = planned.method in ("POST", "PUT", "PATCH")
    if needs_resource and not isinstance(planned.resource, dict):
        raise _fail(index, f"a {planned.method} entry needs a resource",
                    "MSG_BUNDLE_RESOURCE_MISSING")
    if planned.method == "POST" and (planned.id or planned.query):
        raise _fail(index, "a POST entry's url is the resource type", "MSG_BUNDLE_URL")
    if planned.method in ("PUT", "DELETE", "PATCH") and not (planned.id or planned.query):
        raise _fail(index, f"a {planned.method} entry needs an id or search criteria",
                    "MSG_BUNDLE_URL")


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


def references_in(value: object) -> list[dict[str, Any]]:
    """Every JSON object carrying a string ``reference``, at any depth, in document order."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict | list):
        _collect_references(value, found)
    return found


#: Types that hold no JSON object: most values of a resource, skipped without ``isinstance``.
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _collect_references(value: dict[str, Any] | list[Any], found: list[dict[str, Any]]) -> None:
    # Exact type tests first: parsed JSON is made of plain dicts and lists, and a recursive
    # function filling one list costs a third of nested generators (visit Bundle: 65 µs
    # against 170); subclasses still take the isinstance path.
    if type(value) is dict or (type(value) is not list and isinstance(value, dict)):
        if isinstance(value.get("reference"), str):
            found.append(value)
        items: Iterable[Any] = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is dict or kind is list or (
            kind not in _LEAVES and isinstance(item, dict | list)
        ):
            _collect_references(item, found)


Resolver = Callable[[str, list[tuple[str, str]]], Awaitable[str]]


async def rewrite_references(
    resource: dict[str, Any],
    targets: dict[str, str],
    resolve_conditional: Resolver,
    holders: list[dict[str, Any]] | None = None,
) -> None:
    """Point references at their entries' final ``Type/id`` and resolve conditional ones.

    A ``urn:uuid:``/``urn:oid:`` reference that names no entry raises ``BadRequest``.
    """
    for holder in references_in(resource) if holders is None else holders:
        reference: str = holder["reference"]
        if reference in targets:
            holder["reference"] = targets[reference]
        elif reference.startswith(("urn:uuid:", "urn:oid:")):
            raise BadRequest(f"Reference '{reference}' names no entry of the Bundle",
                             message_id="MSG_BUNDLE_REFERENCE_UNRESOLVED")
        elif "?" in reference and "/" not in reference.partition("?")[0]:
            rtype, _, query = reference.partition("?")
            if not is_resource_type(rtype):
                raise BadRequest(f"Conditional reference '{reference}' names no resource type",
                                 message_id="MSG_BUNDLE_REFERENCE_UNRESOLVED")
            found = await resolve_conditional(rtype, query_pairs(query))
            holder["reference"] = f"{rtype}/{found}"

"""The search interaction: ``GET [base]/[type]?...``, compartment and system search.

Implements FHIR R4 3.1.0 "search" (http://hl7.org/fhir/R4/http.html#search) and the
searchset Bundle of 3.1.1.2 (http://hl7.org/fhir/R4/search.html): entries with ``fullUrl``,
``resource`` and ``search.mode`` (``match``, ``include``, and one ``outcome`` entry listing
parameters ignored under lenient handling), ``self``/``next``/``previous`` links carrying the
paging cursor, and ``total`` only when ``_total`` asked for it. No HTTP types here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from fhir_server import decimals
from fhir_server.conformance import structure
from fhir_server.errors import Issue
from fhir_server.search.model import (
    DEFAULT_LIMITS,
    SearchLimits,
    SearchQuery,
    SearchResult,
    Visibility,
)
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.audit import check_audit_search
from fhir_server.storage.port import StoredResource

__all__ = ["SearchStore", "Searchset", "search", "searchset"]

_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


class SearchStore(Protocol):
    """What search needs from a store: one method running a parsed query."""

    async def search(self, query: SearchQuery) -> SearchResult:
        """Return a page of results for ``query``."""
        ...


@dataclass(frozen=True)
class Searchset:
    """A searchset Bundle and the stored resources it holds (matches, then includes)."""

    bundle: dict[str, Any]
    resources: tuple[StoredResource, ...]


async def searchset(
    store: SearchStore,
    registry: SearchParameterRegistry,
    base_url: str,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    strict: bool,
    compartment: tuple[str, str] | None = None,
    default_count: int = 20,
    max_count: int = 1000,
    visibility: Visibility | None = None,
    limits: SearchLimits = DEFAULT_LIMITS,
    raw: bool = False,
) -> Searchset:
    """Return the searchset Bundle for ``params`` on a type, a compartment or the system,
    and the stored resources it holds.

    ``default_count`` and ``max_count`` bound the page size (``_count``); ``visibility`` is
    what the caller may see (the store applies it to matches, includes, chains and totals);
    ``limits`` the size of the query (``LimitExceeded``). With ``raw``, an entry that
    ``_elements``/``_summary`` do not shape holds the stored JSON as it is
    (``orjson.Fragment``, written out unparsed by ``decimals.dumps``), not a parsed object.

    Raises ``BadRequest``/``NotSupported`` for invalid values (and, under ``strict``, unknown
    parameters or modifiers), ``BadRequest``/``Gone`` for an invalid or expired cursor.
    """
    parsed = parse_search(resource_type, params, registry, strict=strict, base_url=base_url,
                          default_count=default_count, max_count=max_count, limits=limits)
    query = replace(parsed.query, compartment=compartment or parsed.query.compartment,
                    visibility=visibility)
    check_audit_search(query)
    result = await store.search(query)
    path = _path(base_url.rstrip("/"), resource_type, compartment)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = _links(path, params, query.cursor, result)
    as_stored = raw and not _shapes(query)
    entries = [_entry(base_url, stored, "match", query, as_stored) for stored in result.matches]
    entries += [_entry(base_url, stored, "include", query, as_stored)
                for stored in result.included]
    issues = (*parsed.issues, *result.issues)
    if issues:
        entries.append(_outcome(issues))
    if entries:
        bundle["entry"] = entries
    return Searchset(bundle, (*result.matches, *result.included))


async def search(
    store: SearchStore,
    registry: SearchParameterRegistry,
    base_url: str,
    resource_type: str | None,
    params: list[tuple[str, str]],
    **options: Any,
) -> dict[str, Any]:
    """Return the searchset Bundle of :func:`searchset` (every entry a parsed object)."""
    found = await searchset(store, registry, base_url, resource_type, params, **options)
    return found.bundle


def _path(base_url: str, resource_type: str | None, compartment: tuple[str, str] | None) -> str:
    if compartment is not None:
        return f"{base_url}/{compartment[0]}/{compartment[1]}/{resource_type or '*'}"
    return f"{base_url}/{resource_type}" if resource_type else base_url


def _links(
    path: str, params: Sequence[tuple[str, str]], cursor: str | None, result: SearchResult
) -> list[dict[str, str]]:
    """Return self, next and previous links; the page position is only in ``_cursor``."""
    kept = [(name, value) for name, value in params if name != "_cursor"]

    def url(page_cursor: str | None) -> str:
        query = kept + ([("_cursor", page_cursor)] if page_cursor else [])
        return f"{path}?{urlencode(query)}" if query else path

    links = [{"relation": "self", "url": url(cursor)}]
    if result.next_cursor:
        links.append({"relation": "next", "url": url(result.next_cursor)})
    if result.prev_cursor:
        links.append({"relation": "previous", "url": url(result.prev_cursor)})
    return links


def _entry(base_url: str, stored: StoredResource, mode: str, query: SearchQuery,
           as_stored: bool) -> dict[str, Any]:
    resource: object = (orjson.Fragment(stored.content) if as_stored
                        else _shaped(decimals.loads(stored.content), query))
    return {
        "fullUrl": f"{base_url.rstrip('/')}/{stored.resource_type}/{stored.id}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _shapes(query: SearchQuery) -> bool:
    """Whether ``_elements`` or ``_summary`` change the resources of the page."""
    return bool(query.elements) or query.summary in ("true", "text", "data")


def _shaped(resource: dict[str, Any], query: SearchQuery) -> dict[str, Any]:
    """Apply ``_elements`` or ``_summary`` (true, text, data) and mark the result SUBSETTED."""
    kind = resource.get("resourceType", "")
    if query.elements:
        keep = set(query.elements) | structure.mandatory_elements(kind) | _ALWAYS
    elif query.summary == "true":
        keep = set(structure.summary_elements(kind)) | _ALWAYS
    elif query.summary == "text":
        keep = {"text"} | structure.mandatory_elements(kind) | _ALWAYS
    elif query.summary == "data":
        keep = set(resource) - {"text"}
    else:
        return resource
    kept = {key: value for key, value in resource.items() if key in keep}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    kept["meta"] = meta
    return kept


def _outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    return {
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [issue.to_fhir() for issue in issues],
        },
        "search": {"mode": "outcome"},
    }

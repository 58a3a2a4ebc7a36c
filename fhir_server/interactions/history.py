"""history at instance, type and system level (R4 http.html#history).

Parameters ``_count``, ``_since`` and ``_at``; pages are linked with a keyset cursor
(``_cursor``, the write sequence number below which the next page starts), so a page does not
shift while others write.

A caller sees only versions it may see: the store narrows type and system history to the
resources visible now (``HistoryQuery.visibility``), and each version's content is judged as a
read would judge it. Instance history of a resource the caller may not see answers 404, as
for an unknown id; deletions are listed for resources the caller sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fhir_server.errors import BadRequest, NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.instants import instant_range, to_storage_instant
from fhir_server.interactions.read import check_deleted_visible
from fhir_server.security.policy import Access
from fhir_server.storage.port import HistoryQuery, StoredResource

__all__ = ["HistoryRequest", "history", "parse_count"]

_KNOWN = {"_count", "_since", "_at", "_cursor", "_format", "_pretty", "_summary", "_elements"}


@dataclass(frozen=True)
class HistoryRequest:
    """Which history is asked for: system (no type), type (no id) or instance."""

    resource_type: str | None = None
    id: str | None = None


def parse_count(value: str | None, default: int, maximum: int) -> int:
    """Return the page size of ``_count`` (capped at ``maximum``); raise ``BadRequest``."""
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"_count must be a non-negative integer, not '{value[:40]}'",
                         message_id="MSG_PARAM_INVALID", expression=("_count",))
    return min(int(value), maximum) if len(value) <= 9 else maximum


def _query(services: Services, access: Access, target: HistoryRequest,
           params: dict[str, str]) -> HistoryQuery:
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise BadRequest(f"Unknown history parameter(s): {', '.join(unknown)}",
                         message_id="MSG_PARAM_UNKNOWN", expression=tuple(unknown))
    settings = services.settings
    count = parse_count(params.get("_count"), settings.default_count, settings.max_count)
    since = params.get("_since")
    at = params.get("_at")
    cursor = params.get("_cursor")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise BadRequest("The paging cursor is invalid", message_id="MSG_PAGE_CURSOR_INVALID")
    return HistoryQuery(
        resource_type=target.resource_type,
        id=target.id,
        since=to_storage_instant(instant_range(since, "_since")[0]) if since else None,
        at=to_storage_instant(instant_range(at, "_at")[1]) if at else None,
        count=count,
        before_seq=int(cursor) if cursor else None,
        visibility=access.visibility if target.id is None else None,
    )


def _path(services: Services, target: HistoryRequest) -> str:
    parts = [p for p in (target.resource_type, target.id) if p]
    return "/".join([services.base_url, *parts, "_history"])


async def _check_instance(services: Services, access: Access, target: HistoryRequest) -> None:
    """404 for the history of a resource the caller may not see (as for an unknown id)."""
    if access.visibility is None:
        return
    assert target.resource_type is not None and target.id is not None
    await check_deleted_visible(services, access, target.resource_type, target.id)


def _visible(access: Access, entries: Sequence[StoredResource]) -> list[StoredResource]:
    """The versions the caller may see; a deletion is kept (its resource was judged by the
    store's narrowing, or by ``_check_instance``)."""
    if access.visibility is None:
        return list(entries)
    return [s for s in entries if s.deleted or access.readable(s.resource())]


def _entry(base: str, stored: StoredResource) -> dict[str, Any]:
    url = f"{stored.resource_type}/{stored.id}"
    method = "POST" if stored.method == "POST" else stored.method
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if not stored.deleted:
        entry["resource"] = stored.resource()
    entry["request"] = {"method": method, "url": stored.resource_type if method == "POST" else url}
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
    entry["response"] = {"status": status, "etag": f'W/"{stored.version}"',
                         "lastModified": stored.last_updated}
    return entry


async def history(
    services: Services, access: Access, target: HistoryRequest, params: dict[str, str]
) -> Outcome:
    """Return a ``history`` Bundle of the requested level, newest first."""
    query = _query(services, access, target, params)
    if target.id is not None:
        await _check_instance(services, access, target)
    page = await services.reader(target.resource_type).history(query)
    if target.id is not None and not page.entries and query == HistoryQuery(
        target.resource_type, target.id, count=query.count
    ):
        raise NotFound(f"{target.resource_type}/{target.id} is not known",
                       message_id="MSG_NO_EXIST")
    await access.load_grants(services.store, [s.resource() for s in page.entries
                                               if not s.deleted])
    path = _path(services, target)
    keep = {k: v for k, v in params.items() if k in ("_count", "_since", "_at")}
    links = [{"relation": "self", "url": path + ("?" + urlencode(params) if params else "")}]
    if page.next_seq is not None:
        links.append({"relation": "next",
                      "url": path + "?" + urlencode({**keep, "_cursor": page.next_seq})})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": [_entry(services.base_url, stored) for stored in _visible(access, page.entries)],
    }
    if not bundle["entry"]:
        del bundle["entry"]
    return Outcome(200, body=bundle)

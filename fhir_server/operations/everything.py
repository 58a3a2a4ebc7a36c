"""``Patient/[id]/$everything`` (R4 OperationDefinition Patient-everything): the citizen's record.

The answer is a ``searchset`` Bundle: the resources of the Patient's compartment (the Patient
included) as ``match`` entries, and the resources they refer to that an app needs to show them
(``DISPLAY_TYPES``) as ``include`` entries. Parameters: ``start``/``end`` (care dates),
``_since`` (changed at or after an instant), ``_type``, ``_count``.

Paging is a keyset on the row id (write order of creation) under a fixed upper bound on
``lastUpdated`` (``_until``, fixed by the first page): a resource created or updated while the
app pages falls outside this answer and into the next ``_since``, so no page repeats or skips
one. ``Bundle.meta.lastUpdated`` is the watermark for the next ``_since``: everything changed
at or before it is in this answer (see docs/citizen-app.md).

Each referenced resource is sent once over the pages of an answer: a next link carries, in
``_sent``, a 48-bit hash of each resource the pages so far included (8 characters each), and a
page leaves out the ones already sent, so a client that collects the pages gets no duplicates.

Fetching is set-wise: one store query per page, plus one per referenced type.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.errors import BadRequest
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.history import parse_count
from fhir_server.interactions.instants import instant_range, to_storage_instant
from fhir_server.interactions.read import read
from fhir_server.operations.parameters import OperationInput
from fhir_server.search.dates import date_range
from fhir_server.search.model import SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.security.audit import check_audit_search
from fhir_server.security.policy import Access
from fhir_server.storage.port import StoredResource

__all__ = [
    "COMMIT_MARGIN",
    "DISPLAY_TYPES",
    "EverythingRequest",
    "clinical_range",
    "compartment_resources",
    "display_resources",
    "everything",
    "references_of",
]

#: How long a write may take from being stamped (``lastUpdated``) to being visible to readers
#: (the write scope, the group commit and its fsync). The watermark lags "now" by this much so
#: that a write stamped before it but committed after the query is still caught next time.
COMMIT_MARGIN = timedelta(seconds=5)
#: Referenced resource types the app needs to display the record (facility, doctor, drug).
DISPLAY_TYPES = ("Organization", "Practitioner", "PractitionerRole", "Location", "Medication")
#: The access log grows with every read; it is asked for explicitly (``_type=AuditEvent``).
_NOT_BY_DEFAULT = frozenset({"AuditEvent"})
_DEFAULT_COUNT = 100
_KNOWN = frozenset({"start", "end", "_since", "_type", "_count", "_cursor", "_until",
                    "_sent", "_format", "_pretty"})  # fmt: skip
_SENT_HASH_BYTES = 6  # 8 characters of base64url per resource already sent
_MAX_IDS_PER_QUERY = 500


@cache
def _compartment_types() -> tuple[str, ...]:
    """The resource types that can be in a Patient compartment (R4 compartmentdefinition)."""
    table = resources.files("fhir_server").joinpath("data/r4/compartment_patient.json")
    return tuple(sorted(k for k in orjson.loads(table.read_bytes()) if not k.startswith("_")))


@dataclass(frozen=True)
class EverythingRequest:
    """A parsed ``$everything`` call; instants are in the store's fixed-width UTC form."""

    patient_id: str
    count: int
    types: tuple[str, ...]
    until: str
    since: str | None = None
    start: int | None = None
    end: int | None = None
    cursor: str | None = None
    sent: frozenset[str] = frozenset()

    def query(self, registry: Any) -> SearchQuery:
        """The compartment query of one page: changed in ``[since, until]``, by row id."""
        bounds = [("_lastUpdated", f"le{self.until}")]
        if self.since is not None:
            bounds.append(("_lastUpdated", f"ge{self.since}"))
        clauses = parse_search(None, bounds, registry, strict=True).query.clauses
        return SearchQuery(
            None,
            clauses=clauses,
            count=self.count,
            types=self.types,
            compartment=("Patient", self.patient_id),
            cursor=self.cursor,
        )

    def link_params(self, cursor: str | None,
                    sent: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """The query string of a page link of this answer (``sent``: the included resources
        the pages up to the linked one have sent, as ``sent_key`` values)."""
        pairs = [("_count", str(self.count)), ("_until", self.until)]
        if self.since is not None:
            pairs.append(("_since", self.since))
        if self.types != _default_types():
            pairs.append(("_type", ",".join(self.types)))
        for name, micros in (("start", self.start), ("end", self.end)):
            if micros is not None:
                pairs.append((name, _instant(micros)))
        if sent:
            pairs.append(("_sent", "".join(sorted(sent))))
        return pairs + ([("_cursor", cursor)] if cursor else [])


def _instant(micros: int) -> str:
    return to_storage_instant(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros))


@cache
def _default_types() -> tuple[str, ...]:
    return tuple(kind for kind in _compartment_types() if kind not in _NOT_BY_DEFAULT)


def _types(value: str | None) -> tuple[str, ...]:
    if not value:
        return _default_types()
    wanted = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [kind for kind in wanted if kind not in _compartment_types()]
    if unknown:
        raise BadRequest(
            f"_type: {', '.join(unknown)} not in the Patient compartment",
            message_id="MSG_PARAM_INVALID",
            expression=("_type",),
        )
    return wanted


def _date_bound(call: OperationInput, name: str, high: bool) -> int | None:
    value = call.value(name)
    if value is None:
        return None
    try:
        low_micros, high_micros = date_range(value)
    except ValueError:
        raise BadRequest(
            f"Parameter {name}: '{value}' is not a date",
            message_id="MSG_PARAM_INVALID",
            expression=(name,),
        ) from None
    return high_micros if high else low_micros


def parse_request(call: OperationInput, services: Services) -> EverythingRequest:
    """Return the request of a call; raise ``BadRequest`` for unknown or invalid parameters."""
    unknown = sorted(set(call.values) - _KNOWN)
    if unknown:
        raise BadRequest(
            f"Unknown $everything parameter(s): {', '.join(unknown)}",
            message_id="MSG_PARAM_UNKNOWN",
            expression=tuple(unknown),
        )
    settings = services.settings
    since, until = call.value("_since"), call.value("_until")
    return EverythingRequest(
        patient_id=str(call.id),
        count=max(1, parse_count(call.value("_count"), _DEFAULT_COUNT, settings.max_count)),
        types=_types(call.value("_type")),
        until=_storage_instant(until, "_until") if until else _now(),
        since=_storage_instant(since, "_since") if since else None,
        start=_date_bound(call, "start", high=False),
        end=_date_bound(call, "end", high=True),
        cursor=call.value("_cursor"),
        sent=_sent(call.value("_sent") or ""),
    )


def sent_key(stored: StoredResource) -> str:
    """The short hash by which a page link names an included resource already sent."""
    digest = hashlib.blake2b(f"{stored.resource_type}/{stored.id}".encode(),
                             digest_size=_SENT_HASH_BYTES).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _sent(value: str) -> frozenset[str]:
    width = _SENT_HASH_BYTES * 4 // 3
    if len(value) % width or not value.isascii():
        raise BadRequest("_sent is not a list of sent resources", message_id="MSG_PARAM_INVALID",
                         expression=("_sent",))
    return frozenset(value[i:i + width] for i in range(0, len(value), width))


def _storage_instant(value: str, name: str) -> str:
    return to_storage_instant(instant_range(value, name)[0])


def _now() -> str:
    return to_storage_instant(datetime.now(UTC))


def watermark(until: str) -> str:
    """The ``_since`` of the next sync: ``until`` less the commit margin."""
    moment = datetime.fromisoformat(until) - COMMIT_MARGIN
    return to_storage_instant(moment)


async def everything(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``$everything`` for ``call.id``; 404/410 when the Patient is unknown or deleted
    (or not the caller's to see)."""
    await read(services, access, "Patient", str(call.id))
    request = parse_request(call, services)
    query = access.scoped(request.query(services.registry))
    check_audit_search(query)  # _type=AuditEvent is asked for on its own
    result = await services.search(query)
    matches = [s for s in result.matches if _in_care_range(s, request.start, request.end)]
    included = [s for s in await display_resources(services, access, matches)
                if sent_key(s) not in request.sent]
    path = f"{services.base_url}/Patient/{request.patient_id}/$everything"
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": watermark(request.until)},
        "type": "searchset",
        "link": [{"relation": "self",
                  "url": _url(path, request.link_params(request.cursor, request.sent))}],
    }
    if result.next_cursor:
        sent = request.sent | {sent_key(s) for s in included}
        next_url = _url(path, request.link_params(result.next_cursor, sent))
        bundle["link"].append({"relation": "next", "url": next_url})
    entries = [_entry(services.base_url, s, "match") for s in matches]
    entries += [_entry(services.base_url, s, "include") for s in included]
    if entries:
        bundle["entry"] = entries
    return Outcome(200, body=bundle)


def _url(path: str, params: list[tuple[str, str]]) -> str:
    return f"{path}?{urlencode(params)}"


def _entry(base_url: str, stored: StoredResource, mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url}/{stored.resource_type}/{stored.id}",
        "resource": stored.resource(),
        "search": {"mode": mode},
    }


def _in_care_range(stored: StoredResource, start: int | None, end: int | None) -> bool:
    """True when the resource's care dates overlap ``[start, end)`` (or it has none)."""
    if start is None and end is None:
        return True
    found = clinical_range(stored.resource())
    if found is None:
        return True
    low, high = found
    return (start is None or high > start) and (end is None or low < end)


async def compartment_resources(
    services: Services, access: Access, patient_id: str
) -> list[StoredResource]:
    """Return every current resource of the Patient's compartment (default types) that the
    caller may see, set-wise."""
    request = EverythingRequest(
        patient_id, count=services.settings.max_count, types=_default_types(), until=_now()
    )
    query = access.scoped(request.query(services.registry))
    found: list[StoredResource] = []
    while True:
        result = await services.search(query)
        found.extend(result.matches)
        if not result.next_cursor:
            return found
        query = replace(query, cursor=result.next_cursor)


async def display_resources(
    services: Services, access: Access, resources: Sequence[StoredResource]
) -> list[StoredResource]:
    """Return the ``DISPLAY_TYPES`` resources that ``resources`` refer to (two levels deep)
    that the caller may see.

    One query per referenced type and level; a facility's parent or a role's practitioner is
    the second level.
    """
    have = {(s.resource_type, s.id) for s in resources}
    found: list[StoredResource] = []
    frontier = [s.resource() for s in resources]
    for _level in range(2):
        wanted = {key for r in frontier for key in references_of(r)
                  if key[0] in DISPLAY_TYPES and key not in have}  # fmt: skip
        fetched = await _fetch(services, access, wanted)
        have |= {(s.resource_type, s.id) for s in fetched}
        found += fetched
        frontier = [s.resource() for s in fetched]
    return found


async def _fetch(
    services: Services, access: Access, keys: Iterable[tuple[str, str]]
) -> list[StoredResource]:
    """Read resources by (type, id): one ``_id`` search per type and 500 ids."""
    by_type: dict[str, list[str]] = {}
    for kind, id in sorted(keys):
        by_type.setdefault(kind, []).append(id)
    found: list[StoredResource] = []
    for kind, ids in by_type.items():
        for first in range(0, len(ids), _MAX_IDS_PER_QUERY):
            chunk = ids[first : first + _MAX_IDS_PER_QUERY]
            clauses = parse_search(
                kind, [("_id", ",".join(chunk))], services.registry, strict=True
            ).query.clauses
            query = access.scoped(SearchQuery(kind, clauses=clauses, count=len(chunk)))
            result = await services.search(query)
            found.extend(result.matches)
    return found


def references_of(value: Any) -> Iterator[tuple[str, str]]:
    """Yield the (type, id) of every relative literal reference anywhere in ``value``."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            parts = reference.split("/")
            if len(parts) == 2 and parts[0][:1].isupper() and parts[1]:
                yield parts[0], parts[1]
        for item in value.values():
            if isinstance(item, dict | list):
                yield from references_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_of(item)


#: Where each type keeps its care date (the first present wins); others have none.
_CARE_DATES: dict[str, tuple[str, ...]] = {
    "Encounter": ("period",),
    "Condition": ("onsetDateTime", "onsetPeriod", "recordedDate"),
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "Immunization": ("occurrenceDateTime", "recorded"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
    "DocumentReference": ("date",),
    "Appointment": ("start",),
    "ServiceRequest": ("occurrenceDateTime", "authoredOn"),
    "CarePlan": ("period",),
    "Coverage": ("period",),
}


def clinical_range(resource: dict[str, Any]) -> tuple[int, int] | None:
    """Return the care dates of ``resource`` as ``[low, high)`` UTC microseconds, or None."""
    for name in _CARE_DATES.get(resource.get("resourceType", ""), ()):
        value = resource.get(name)
        if isinstance(value, str):
            return _range(value, value)
        if isinstance(value, dict) and (value.get("start") or value.get("end")):
            return _range(value.get("start"), value.get("end"))
    return None


def _range(low: str | None, high: str | None) -> tuple[int, int] | None:
    try:
        low_micros = date_range(low)[0] if low else -(2**62)
        high_micros = date_range(high)[1] if high else 2**62
    except ValueError:
        return None
    return low_micros, high_micros

"""The searches an export pages through (``Segment``), built from its request and the
caller's access: every one carries the caller's visibility (``Access.scoped``), so the
export holds exactly what the one access policy lets the caller see.

Type by type (system exports, and Patient exports of all patients): one search per type,
or one per ``_typeFilter`` alternative of the type. Patient by patient (Group exports,
listed patients, output organized by patient): for each patient, the searches of that
patient's compartment: the Patient, every type without a ``_typeFilter`` in one search, and
one search per alternative of the others. A resource that an earlier alternative of its type
matched is not repeated by a later one (``Segment.earlier``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

from fhir_server.errors import NotSupported
from fhir_server.jobs.export.request import ExportRequest
from fhir_server.search.indexing import index_resource
from fhir_server.search.matching import matches, visible
from fhir_server.search.model import AnyClause, Grant, SearchIndex, SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.policy import Access

__all__ = ["Plan", "Segment"]

Clauses = tuple[AnyClause, ...]


@dataclass(frozen=True)
class Segment:
    """One search of an export: its ``query`` (visibility included), the ``types`` it
    reaches, and the alternatives of its type that come before it (``earlier``)."""

    types: tuple[str, ...]
    query: SearchQuery
    earlier: tuple[SearchQuery, ...] = ()

    def judge(self, resource: dict[str, object], registry: SearchParameterRegistry,
              grants: Iterable[Grant] = ()) -> bool | None:
        """Whether the segment holds ``resource`` (a version read from history, which no
        search index holds any more): the caller may see it (``grants``: the Consent grants
        of its patients, for a Consent rule), its query matches it and no earlier
        alternative does. None when the query needs other resources to decide (a chain,
        ``_has``)."""
        index = index_resource(resource, registry)
        seen = self.query.visibility
        if seen is not None and not visible(seen, index, grants):
            return False
        try:
            return matches(bare(self.query), index) and not self.held_earlier(index)
        except NotSupported:
            return None

    def held_earlier(self, index: SearchIndex) -> bool:
        """Whether an earlier alternative of the segment's type holds a resource the caller
        may see (its visibility is not judged again)."""
        return any(matches(bare(query), index) for query in self.earlier)

    def needs_grants(self) -> bool:
        """Whether judging a resource needs its patients' Consent grants (a Consent rule
        the store joins itself)."""
        seen = self.query.visibility
        return seen is not None and seen.consent is not None and seen.consent.grants is None


def bare(query: SearchQuery) -> SearchQuery:
    """The query without the caller's visibility (judged apart)."""
    return replace(query, visibility=None) if query.visibility is not None else query


class Plan:
    """The segments of one export for one caller (deterministic: a resumed run finds the
    same segments at the same positions)."""

    def __init__(self, request: ExportRequest, access: Access, registry: SearchParameterRegistry,
                 page_size: int) -> None:
        self.request = request
        self.access = access
        self.registry = registry
        self.page_size = page_size
        self.types = tuple(kind for kind in request.types if _readable(access, kind))
        self.alternatives = self._alternatives()

    def _time(self, kind: str | None) -> Clauses:
        params = []
        if self.request.since:
            params.append(("_lastUpdated", f"gt{self.request.since}"))
        if self.request.until:
            params.append(("_lastUpdated", f"lt{self.request.until}"))
        return parse_search(kind, params, self.registry).query.clauses if params else ()

    def _alternatives(self) -> dict[str, list[Clauses]]:
        """Per type with a ``_typeFilter``: the clauses of each of its queries (ORed)."""
        found: dict[str, list[Clauses]] = {}
        for text in self.request.type_filters:
            kind, _, query = text.partition("?")
            if kind in self.types:
                parsed = parse_search(kind, parse_qsl(query, keep_blank_values=True),
                                      self.registry, strict=True)
                found.setdefault(kind, []).append(parsed.query.clauses)
        return found

    def _query(self, kind: str | None, clauses: Clauses, types: tuple[str, ...] = (),
               patient: str | None = None) -> SearchQuery:
        compartment = ("Patient", patient) if patient is not None else None
        query = SearchQuery(kind, clauses=clauses + self._time(kind), count=self.page_size,
                            types=types, compartment=compartment)
        return self.access.scoped(query)

    def _of_type(self, kind: str, patient: str | None = None) -> list[Segment]:
        segments: list[Segment] = []
        for clauses in self.alternatives.get(kind, [()]):
            query = self._query(kind, clauses, patient=patient)
            segments.append(Segment((kind,), query, tuple(s.query for s in segments)))
        return segments

    def by_type(self) -> list[Segment]:
        """The segments of a type-by-type export."""
        return [segment for kind in self.types for segment in self._of_type(kind)]

    def of_patient(self, patient: str) -> list[Segment]:
        """The segments of one patient's compartment (the Patient first)."""
        segments = self._of_type("Patient", patient) if "Patient" in self.types else []
        plain = tuple(k for k in self.types if k != "Patient" and k not in self.alternatives)
        if plain:
            segments.append(Segment(plain, self._query(None, (), plain, patient)))
        for kind in self.types:
            if kind != "Patient" and kind in self.alternatives:
                segments += self._of_type(kind, patient)
        return segments


def _readable(access: Access, kind: str) -> bool:
    return access.visibility is None or access.visibility.readable(kind)

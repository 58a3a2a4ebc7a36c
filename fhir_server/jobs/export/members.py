"""The patients of a patient-by-patient export: a Group's members, the listed patients, or
every patient the caller may see; kept on disk, sorted, beside the export's files.

A Group is a stored resource an operator creates. Its members are the patients its
``member`` elements name (active ones), and, for a Group of the Bulk Cohort profile, the
patients that meet every ``member-filter`` expression (a FHIR search, evaluated when the
export starts, with the caller's access): a ``Patient?...`` expression gives the patients
it finds, an expression on another type (``Encounter?service-provider.identifier=...``) the
patients in whose compartment it finds something. The members are the intersection of what
the Group names (and of the kick-off's ``patient`` list). docs/bulk-export.md has the
Groups of a facility's patients and of a province's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError
from fhir_server.search.cursor import Cursor, decode_cursor, encode_cursor
from fhir_server.search.indexing import compartment_patients
from fhir_server.search.model import SearchQuery
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.security.policy import Access
from fhir_server.storage.port import ResourceStore

__all__ = ["MEMBER_FILTER", "GroupCriteria", "Members", "collect_members", "group_criteria"]

MEMBER_FILTER = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/member-filter"
_QUERY_LANGUAGE = "application/x-fhir-query"
_PAGE = 1000


@dataclass(frozen=True)
class GroupCriteria:
    """Who a Group's members are: the patients it names (``named``: None when it names
    none) and its member-filter searches (``Type?query``)."""

    named: tuple[str, ...] | None
    filters: tuple[str, ...]


def _member_ids(group: dict[str, Any]) -> tuple[str, ...] | None:
    members = [m for m in group.get("member") or [] if not m.get("inactive")]
    if not members:
        return None
    ids = []
    for member in members:
        reference = str((member.get("entity") or {}).get("reference", ""))
        kind, _, id = reference.rpartition("/")
        if kind.rsplit("/", 1)[-1] != "Patient" or not id:
            raise BadRequest(f"Group member '{reference[:80]}' is not a Patient; only groups "
                             "of patients are exported", message_id="MSG_EXPORT_GROUP")
        ids.append(id)
    return tuple(dict.fromkeys(ids))


def _filter(extension: dict[str, Any], registry: SearchParameterRegistry) -> str:
    expression = extension.get("valueExpression") or {}
    text = str(expression.get("expression", ""))
    kind, _, query = text.partition("?")
    if expression.get("language") != _QUERY_LANGUAGE or not query:
        raise BadRequest("A member-filter is an application/x-fhir-query 'Type?query'",
                         message_id="MSG_EXPORT_GROUP")
    try:
        parse_search(kind, parse_qsl(query, keep_blank_values=True), registry, strict=True)
    except FhirError as exc:
        raise BadRequest(f"member-filter '{text[:100]}': {exc.diagnostics}",
                         message_id="MSG_EXPORT_GROUP") from None
    return text


def group_criteria(group: dict[str, Any], registry: SearchParameterRegistry) -> GroupCriteria:
    """The criteria of a Group; raise ``BadRequest`` (``MSG_EXPORT_GROUP``) for a Group
    that is not a group of patients this server can evaluate."""
    if group.get("type") != "person":
        raise BadRequest("Only Groups of type person (patients) are exported",
                         message_id="MSG_EXPORT_GROUP")
    filters = tuple(_filter(extension, registry)
                    for extension in group.get("modifierExtension") or []
                    if extension.get("url") == MEMBER_FILTER)
    unknown = [e.get("url") for e in group.get("modifierExtension") or []
               if e.get("url") != MEMBER_FILTER]
    if unknown:
        raise BadRequest(f"The Group has a modifier extension this server does not know: "
                         f"{unknown[0]}", message_id="MSG_EXPORT_GROUP")
    return GroupCriteria(_member_ids(group), filters)


class Members:
    """A sorted set of patient ids on disk, built from sources that are intersected."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS found (patient TEXT, source INTEGER, "
            "PRIMARY KEY (patient, source)) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS members (patient TEXT PRIMARY KEY) WITHOUT ROWID;")

    def close(self) -> None:
        self.conn.close()

    def add(self, source: int, patients: Iterable[str]) -> None:
        """Record patients found by one source."""
        self.conn.executemany("INSERT OR IGNORE INTO found VALUES (?, ?)",
                              ((patient, source) for patient in patients))

    def settle(self, sources: int) -> int:
        """Keep the patients every one of ``sources`` found; return how many."""
        self.conn.execute("BEGIN")
        self.conn.execute("DELETE FROM members")
        self.conn.execute("INSERT INTO members SELECT patient FROM found GROUP BY patient "
                          "HAVING count(*) = ?", (sources,))
        self.conn.execute("DELETE FROM found")
        self.conn.execute("COMMIT")
        return self.count()

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM members").fetchone()[0])

    def after(self, patient: str, limit: int) -> list[str]:
        """The members after ``patient`` in id order ("" for the first ones)."""
        rows = self.conn.execute("SELECT patient FROM members WHERE patient > ? "
                                 "ORDER BY patient LIMIT ?", (patient, limit))
        return [str(row[0]) for row in rows]

    def __contains__(self, patient: object) -> bool:
        return self.conn.execute("SELECT 1 FROM members WHERE patient = ?",
                                 (patient,)).fetchone() is not None


async def _add_found(store: ResourceStore, query: SearchQuery,
                     registry: SearchParameterRegistry, members: Members, source: int) -> None:
    """Add the patients a search finds: the Patients it matches, or those in whose
    compartment its matches are; a page at a time."""
    after = 0
    while True:
        page = query if not after else replace(
            query, cursor=encode_cursor(query, Cursor((), after)))
        result = await store.search(page)
        found: list[str] = []
        for match in result.matches:
            if match.resource_type == "Patient":
                found.append(match.id)
            else:
                found += compartment_patients(match.resource(), registry)
        members.add(source, found)
        if result.next_cursor is None:
            return
        after = decode_cursor(page, result.next_cursor).rid


async def collect_members(store: ResourceStore, access: Access,
                          registry: SearchParameterRegistry, members: Members,
                          named: Iterable[tuple[str, ...] | None], filters: Iterable[str]
                          ) -> int:
    """Fill ``members`` with the patients every source agrees on: each list of ``named``
    ids (None: not a source), each filter search (``Type?query``); with no source at all,
    every Patient the caller may see. Return how many members there are."""
    sources = 0
    for ids in named:
        if ids is not None:
            members.add(sources, ids)
            sources += 1
    searches = list(filters) or ([] if sources else ["Patient?"])
    for text in searches:
        kind, _, query = text.partition("?")
        params = [*parse_qsl(query, keep_blank_values=True), ("_count", str(_PAGE))]
        parsed = parse_search(kind, params, registry, strict=True, max_count=_PAGE).query
        await _add_found(store, access.scoped(parsed), registry, members, sources)
        sources += 1
    return members.settle(sources)

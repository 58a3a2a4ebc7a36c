"""Builders of test resources and queries for the search tests (one place, not copied literals)."""

from __future__ import annotations

import sqlite3
from functools import cache
from typing import Any

import orjson

from fhir_server.search.indexing import index_resource
from fhir_server.search.model import SearchIndex, SearchQuery, SearchResult
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.storage.sqlite.schema import CORE_SCHEMA_SQL
from fhir_server.storage.sqlite.search_sql import run_search
from fhir_server.storage.sqlite.search_tables import SCHEMA_SQL, delete_index, replace_index
from fhir_server.storage.sqlite.search_where import Unions

CCCD = "http://cccd.gov.vn"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BLOOD_PRESSURE = [
    {
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"},
    },
    {
        "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
        "valueQuantity": {"value": 80, "system": UCUM, "code": "mm[Hg]"},
    },
]


@cache
def registry() -> SearchParameterRegistry:
    """Return the R4 registry (shared: it is immutable)."""
    return SearchParameterRegistry.load()


@cache
def unions() -> Unions:
    """The unions whose rows the store does not keep, as the store finds them."""
    return Unions.of(registry())


def patient(id: str = "p1", **fields: Any) -> dict[str, Any]:
    """Return a Patient with a Vietnamese name, a CCCD and a birth date, overridable."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": id,
        "meta": {"lastUpdated": "2026-01-01T00:00:00.000000+00:00"},
        "identifier": [{"system": CCCD, "value": "001090012345"}],
        "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}],
        "gender": "male",
        "birthDate": "1990-05-02",
    }
    resource.update(fields)
    return resource


def observation(id: str = "o1", **fields: Any) -> dict[str, Any]:
    """Return a final heart-rate Observation of Patient/p1, overridable."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T10:00:00+07:00",
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": UCUM, "code": "/min"},
    }
    resource.update(fields)
    return resource


def index(resource: dict[str, Any]) -> SearchIndex:
    """Return the search index of ``resource``."""
    return index_resource(resource, registry())


def query(resource_type: str | None, text: str) -> SearchQuery:
    """Return the strict parse of a query string such as ``name=nguyen&_count=5``."""
    params = [tuple(part.split("=", 1)) for part in text.split("&") if part]
    pairs = [(name, value) for name, value in params]
    return parse_search(resource_type, pairs, registry(), strict=True).query




class Database:
    """A database with the store's schema (core and search tables), in memory unless given
    a file."""

    def __init__(self, path: str = ":memory:") -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.executescript(CORE_SCHEMA_SQL + SCHEMA_SQL)
        self.clock = 0

    def add(self, resource: dict[str, Any]) -> int:
        """Create or update ``resource`` (a new version), indexing it; return its rid."""
        self.clock += 1
        last_updated = (
            f"2026-01-01T00:00:{self.clock // 1_000_000:02d}.{self.clock % 1_000_000:06d}+00:00"
        )
        resource = {**resource, "meta": {**resource.get("meta", {}), "lastUpdated": last_updated}}
        kind, ident = resource["resourceType"], resource["id"]
        found = self.conn.execute(
            "SELECT rid, version FROM resources WHERE type = ? AND id = ?", (kind, ident)
        ).fetchone()
        version = found[1] + 1 if found else 1
        if found:
            rid = found[0]
            self.conn.execute(
                "UPDATE resources SET version = ?, last_updated = ?, deleted = 0 WHERE rid = ?",
                (version, last_updated, rid),
            )
        else:
            rid = self.conn.execute(
                "INSERT INTO resources (type, id, version, last_updated) VALUES (?, ?, 1, ?)",
                (kind, ident, last_updated),
            ).lastrowid
        self.conn.execute(
            "INSERT INTO versions (rid, type, id, version, last_updated, method, content) "
            "VALUES (?, ?, ?, ?, ?, 'PUT', ?)",
            (rid, kind, ident, version, last_updated, orjson.dumps(resource)),
        )
        # As the store does: no rows of unions (combo-code, combo-code-value-quantity).
        replace_index(self.conn, int(rid), index_resource(resource, registry()),
                      unions())
        return int(rid)

    def delete(self, resource_type: str, id: str) -> None:
        """Mark a resource deleted and drop its index rows."""
        rid = self.conn.execute(
            "SELECT rid FROM resources WHERE type = ? AND id = ?", (resource_type, id)
        ).fetchone()[0]
        self.conn.execute("UPDATE resources SET deleted = 1 WHERE rid = ?", (rid,))
        delete_index(self.conn, rid)

    def search(self, resource_type: str | None, text: str) -> SearchResult:
        """Run the search ``text`` (a query string) and return the result."""
        return run_search(self.conn, query(resource_type, text), registry(),
                          unions())

    def ids(self, resource_type: str | None, text: str) -> list[str]:
        """Return the ids of the first page of matches, in order."""
        return [stored.id for stored in self.search(resource_type, text).matches]

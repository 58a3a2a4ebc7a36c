"""The SQLite search index tables: one per parameter type, keyed by the resource's ``rid``.

Each table is ``WITHOUT ROWID`` with the primary key ``(rid, param, value...)`` so that the rows
of one resource are clustered (replace and delete by ``rid`` are range operations, ``_sort``
and ``_include`` read them directly) and one secondary index ``(param, value...)`` answers
searches; SQLite appends the primary key to it, so it covers ``rid`` without a lookup.

References are indexed by target first, ``(id, param, type)``: every search names the target
id (a url-only reference is stored, and searched, with the id ``""``), and new resources have
time-ordered ids (``new_id``), so the rows of a new visit's references to its new Patient and
Encounter land on the same page whatever their parameter, and the references of any one
target together (value index pages dirtied per visit Bundle: 22.8 to 7.2 on a small store;
docs/performance.md). A store made before this order gets the index at its next open (8 s
for the 3.2 million rows of a store of 1,000,000 resources).

Parameter codes are stored as ``param_key(code)``, a 31-bit CRC of the code: a small integer
that is the same in every process and database, so no code table needs to be read or
locked. ``check_param_keys`` verifies that the registered codes do not collide.

``consent_grant`` holds the ``grants`` of a Consent's index (``search.consent``), one row per
rule keyed by the patient and the actor it concerns, so that a clinician's search joins the
grants of each patient it reaches (``search_where``); its code and label are stored as token
rows hold them as well (code, system key), to join those. ``consent_change`` counts, per
patient, the changes of their grants (kept by triggers, whatever writes them), so that grants
read before can be known to be still current (``consent_sql.GrantMemo``).

Values are the normal forms of ``fhir_server.search.model`` (dates in UTC microseconds,
strings folded, ``""`` for an absent url). Token and quantity systems, long URLs repeated in
most rows, are stored as ``system_key(system)``: a 64-bit hash (0 for "no system"), which
takes 8 bytes instead of 20 to 40 and cannot collide in practice (2**-64 per pair).
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from typing import Protocol, cast

from fhir_server.search.model import Grant, ParamType, SearchIndex

__all__ = [
    "GRANT_COLUMNS",
    "SCHEMA_SQL",
    "TABLES",
    "TypeSkips",
    "check_param_keys",
    "delete_index",
    "grant_row",
    "insert_fresh",
    "param_key",
    "replace_index",
    "system_key",
]

TABLES: dict[ParamType, str] = {
    ParamType.STRING: "search_string",
    ParamType.TOKEN: "search_token",
    ParamType.DATE: "search_date",
    ParamType.NUMBER: "search_number",
    ParamType.QUANTITY: "search_quantity",
    ParamType.REFERENCE: "search_reference",
    ParamType.URI: "search_uri",
    ParamType.COMPOSITE: "search_composite",
}
"""The table holding each parameter type's rows (``:text`` rows are in ``search_text``)."""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS search_string (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, folded TEXT NOT NULL, exact TEXT NOT NULL,
  PRIMARY KEY (rid, param, folded, exact)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_string_value ON search_string (param, folded);
CREATE INDEX IF NOT EXISTS search_string_head ON search_string (param, substr(folded, 1, 2), rid);
CREATE TABLE IF NOT EXISTS search_token (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, code TEXT NOT NULL, system INTEGER NOT NULL,
  PRIMARY KEY (rid, param, code, system)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_token_value ON search_token (param, code, system);
CREATE TABLE IF NOT EXISTS search_text (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, text TEXT NOT NULL,
  PRIMARY KEY (rid, param, text)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_text_value ON search_text (param, text);
CREATE TABLE IF NOT EXISTS search_date (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
  PRIMARY KEY (rid, param, low, high)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_date_value ON search_date (param, low, high);
CREATE TABLE IF NOT EXISTS search_number (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, low REAL NOT NULL, high REAL NOT NULL,
  PRIMARY KEY (rid, param, low, high)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_number_value ON search_number (param, low, high);
CREATE TABLE IF NOT EXISTS search_quantity (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, code TEXT NOT NULL, system INTEGER NOT NULL,
  low REAL NOT NULL, high REAL NOT NULL,
  PRIMARY KEY (rid, param, code, system, low, high)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_quantity_value ON search_quantity (param, code, low);
CREATE TABLE IF NOT EXISTS search_reference (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
  url TEXT NOT NULL, PRIMARY KEY (rid, param, type, id, url)) WITHOUT ROWID;
DROP INDEX IF EXISTS search_reference_value;
CREATE INDEX IF NOT EXISTS search_reference_target ON search_reference (id, param, type);
CREATE TABLE IF NOT EXISTS search_uri (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, uri TEXT NOT NULL,
  PRIMARY KEY (rid, param, uri)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_uri_value ON search_uri (param, uri);
CREATE TABLE IF NOT EXISTS search_composite (
  rid INTEGER NOT NULL, param INTEGER NOT NULL, element INTEGER NOT NULL,
  PRIMARY KEY (rid, param, element)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_compartment (
  patient TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (patient, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_compartment_rid ON search_compartment (rid);
CREATE TABLE IF NOT EXISTS consent_grant (
  patient TEXT NOT NULL, actor TEXT NOT NULL, rid INTEGER NOT NULL, rule INTEGER NOT NULL,
  permit INTEGER NOT NULL, scope TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER NOT NULL,
  purpose TEXT NOT NULL, type TEXT NOT NULL, target TEXT NOT NULL,
  code TEXT NOT NULL, code_value TEXT NOT NULL, code_system INTEGER NOT NULL,
  label TEXT NOT NULL, label_value TEXT NOT NULL, label_system INTEGER NOT NULL,
  consent TEXT NOT NULL, PRIMARY KEY (patient, actor, rid, rule)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS consent_grant_rid ON consent_grant (rid);
CREATE TABLE IF NOT EXISTS consent_change (
  patient TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS consent_grant_added AFTER INSERT ON consent_grant BEGIN
  INSERT INTO consent_change VALUES (NEW.patient, 1)
  ON CONFLICT (patient) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS consent_grant_removed AFTER DELETE ON consent_grant BEGIN
  INSERT INTO consent_change VALUES (OLD.patient, 1)
  ON CONFLICT (patient) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS consent_grant_changed AFTER UPDATE ON consent_grant BEGIN
  INSERT INTO consent_change VALUES (OLD.patient, 1)
  ON CONFLICT (patient) DO UPDATE SET n = n + 1;
  INSERT INTO consent_change VALUES (NEW.patient, 1)
  ON CONFLICT (patient) DO UPDATE SET n = n + 1; END;
"""

_INSERTS = {
    "strings": "INSERT OR IGNORE INTO search_string",
    "tokens": "INSERT OR IGNORE INTO search_token",
    "texts": "INSERT OR IGNORE INTO search_text",
    "dates": "INSERT OR IGNORE INTO search_date",
    "numbers": "INSERT OR IGNORE INTO search_number",
    "quantities": "INSERT OR IGNORE INTO search_quantity",
    "references": "INSERT OR IGNORE INTO search_reference",
    "uris": "INSERT OR IGNORE INTO search_uri",
}
#: Rows per INSERT statement of :func:`insert_rows`, largest first.
_CHUNKS = (32, 8)
_ALL_TABLES = (*TABLES.values(), "search_text")
#: The columns of ``consent_grant`` that hold a ``Grant``, in its field order.
GRANT_COLUMNS = ("consent, patient, actor, permit, scope, since, until, purpose, type, target, "
                 "code, label")
_GRANT_INSERT = ("INSERT OR IGNORE INTO consent_grant VALUES "
                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_KEYS: dict[str, int] = {}


def param_key(code: str) -> int:
    """Return the small stable integer that stands for a parameter code in the tables."""
    key = _KEYS.get(code)
    if key is None:
        key = _KEYS[code] = zlib.crc32(code.encode()) & 0x7FFFFFFF
    return key


@lru_cache(maxsize=4096)
def system_key(system: str) -> int:
    """Return the 64-bit integer stored for a token or quantity system (0 for none)."""
    if not system:
        return 0
    return int.from_bytes(
        hashlib.blake2b(system.encode(), digest_size=8).digest(), "big", signed=True
    )


#: The value indexes a bulk load into an empty store drops and builds again at its end: built
#: from the finished tables they cost one sorted pass, instead of an insertion at a random
#: place of a growing B-tree for every index row. The token index stays, because conditional
#: creates look identifiers up while the load runs; so do the ``rid`` keys of every table.
DEFERRABLE_INDEXES = (
    "search_string_value", "search_string_head", "search_text_value", "search_date_value",
    "search_number_value", "search_quantity_value", "search_reference_target", "search_uri_value",
)  # fmt: skip


def drop_deferrable_indexes(conn: sqlite3.Connection) -> None:
    """Drop :data:`DEFERRABLE_INDEXES` (call in a write transaction).

    Searches stay correct without them, only slower. Every open of the store creates missing
    indexes again (``SCHEMA_SQL`` says ``CREATE INDEX IF NOT EXISTS``), so a load that stops
    half-way leaves no store without them once it is opened again.
    """
    for name in DEFERRABLE_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def _split(token: str) -> tuple[str, int]:
    """``system|code`` as the code and the system's key of token rows ("", 0 for none)."""
    if not token:
        return "", 0
    system, _, code = token.partition("|")
    return code, system_key(system)


def grant_row(rid: int, rule: int, grant: Grant) -> tuple[object, ...]:
    """The ``consent_grant`` row of rule number ``rule`` of the Consent ``rid``: the grant,
    plus its code and label as token rows hold them (code, system key), for the join."""
    return (grant.patient, grant.actor, rid, rule, int(grant.permit), grant.scope, grant.start,
            grant.end, grant.purpose, grant.resource_type, grant.target, grant.code,
            *_split(grant.code), grant.label, *_split(grant.label), grant.consent)


def check_param_keys(codes: Iterable[str]) -> None:
    """Raise ``ValueError`` if two distinct codes share a key (checked at start-up)."""
    seen: dict[int, str] = {}
    for code in set(codes):
        for variant in (code, f"{code}:identifier", f"{code}:of-type"):
            other = seen.setdefault(param_key(variant), variant)
            if other != variant:
                raise ValueError(f"search parameter codes {other!r} and {variant!r} collide")


class TypeSkips(Protocol):
    """Codes whose rows are not stored, per resource type (``search_where.Unions``)."""

    def skipped(self, resource_type: str) -> Collection[str]: ...


def _skipped(skip: Collection[str] | TypeSkips, resource_type: str) -> Collection[str]:
    """The codes of ``skip`` for a resource of ``resource_type`` (a ``TypeSkips``: its codes
    of the type). Told apart by the ``skipped`` attribute, not ``isinstance``: a check
    against a runtime-checkable protocol costs about 60,000 instructions (every attribute of
    the protocol looked up), and it ran twice for every resource written, 14 % of the
    store's own instructions in a visit push (docs/performance.md)."""
    skipped = getattr(skip, "skipped", None)
    if skipped is None:
        return cast("Collection[str]", skip)
    return cast("Collection[str]", skipped(resource_type))


def _rows(
    rid: int, index: SearchIndex, skip: Collection[str] = ()
) -> dict[str, list[tuple[object, ...]]]:
    """Return the insert rows of each table: (rid, param key, values...), without the rows
    of the codes in ``skip``."""
    return {
        "strings": [(rid, param_key(c), f, e) for c, f, e in index.strings if c not in skip],
        "tokens": [(rid, param_key(c), code, system_key(s))
                   for c, s, code in index.tokens if c not in skip],
        "texts": [(rid, param_key(c), t) for c, t in index.texts if c not in skip],
        "dates": [(rid, param_key(c), lo, hi) for c, lo, hi in index.dates if c not in skip],
        "numbers": [(rid, param_key(c), lo, hi) for c, lo, hi in index.numbers if c not in skip],
        "quantities": [(rid, param_key(c), u, system_key(s), lo, hi)
                       for c, s, u, lo, hi in index.quantities if c not in skip],
        "references": [(rid, param_key(c), t, i, u)
                       for c, t, i, u in index.references if c not in skip],
        "uris": [(rid, param_key(c), u) for c, u in index.uris if c not in skip],
    }  # fmt: skip


def replace_index(
    conn: sqlite3.Connection, rid: int, index: SearchIndex,
    skip: Collection[str] | TypeSkips = (),
) -> None:
    """Replace the index rows of resource ``rid`` (call inside the write's transaction);
    a resource just inserted has none to delete: :func:`insert_fresh`."""
    delete_index(conn, rid)
    insert_fresh(conn, [(rid, index)], skip)


def insert_fresh(
    conn: sqlite3.Connection, items: Sequence[tuple[int, SearchIndex]],
    skip: Collection[str] | TypeSkips = (),
) -> None:
    """Insert the index rows of resources that have none yet, all of them together, table by
    table (:func:`insert_rows`; a visit Bundle's dozen resources: about 15 % less CPU than one
    statement per resource and table, on a store of 1,000,000 resources).

    Each composite element's components are stored under a negative pseudo-resource id: a
    composite element is itself a small index whose rows have the codes ``"0"``, ``"1"``...;
    its rows go in the ordinary tables under the id ``-(rid * 64 + element)`` so that the
    compiler can require all components to match within the same element.

    ``skip`` holds the codes whose rows are not stored: the registry's unions, which the
    compiler searches through their members' rows (``SearchParameterRegistry.unions``), its
    composite unions, searched through their member composites' elements
    (``composite_unions``, ``search_where.Unions``), and, per type, its aliases, searched
    through another parameter's rows of the type (Observation ``patient``: ``subject``'s
    rows of Patients; ``SearchParameterRegistry.aliases``).
    """
    tables: dict[str, list[tuple[object, ...]]] = {table: [] for table in _INSERTS}
    composites: list[tuple[int, int, int]] = []
    compartments: list[tuple[str, int]] = []
    grants: list[tuple[object, ...]] = []
    for rid, index in items:
        grants += [grant_row(rid, n, grant) for n, grant in enumerate(index.grants)]
        codes = _skipped(skip, index.resource_type)
        for table, rows in _rows(rid, index, codes).items():
            tables[table] += rows
        kept = [(code, element) for code, element in index.composites if code not in codes]
        for position, (code, element) in enumerate(kept[:64]):
            element_id = -(rid * 64 + position)
            composites.append((rid, param_key(code), element_id))
            for table, rows in _rows(element_id, element).items():
                tables[table] += rows
        compartments += [(patient, rid) for patient in index.compartments]
    for table, rows in tables.items():
        insert_rows(conn, _INSERTS[table], rows)
    insert_rows(conn, "INSERT OR IGNORE INTO search_composite", composites)
    insert_rows(conn, "INSERT OR IGNORE INTO search_compartment", compartments)
    if grants:
        conn.executemany(_GRANT_INSERT, grants)


@lru_cache(maxsize=256)
def _values_sql(head: str, width: int, count: int) -> str:
    row = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([row] * count)}"


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``head VALUES (...)`` for every row (all of one width): in statements of 32 and of 8
    rows while that many are left, the rest with ``executemany``.

    One statement of many rows costs SQLite one execution (its cursors opened once, one
    statement journal) where ``executemany`` costs one per row; a visit Bundle's index rows
    cost 7.7 % fewer of the store's instructions so (docs/performance.md). Two sizes keep the
    statements few, so that the connection's statement cache keeps them all prepared.
    """
    if not rows:
        return
    width, start, total = len(rows[0]), 0, len(rows)
    for size in _CHUNKS:
        if total - start >= size:
            sql = _values_sql(head, width, size)
            while total - start >= size:
                conn.execute(sql, [value for row in rows[start:start + size] for value in row])
                start += size
    if start < total:
        conn.executemany(_values_sql(head, width, 1), rows[start:])


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    """Delete every index row of resource ``rid`` (and of its composite elements)."""
    low, high = -(rid * 64 + 63), -(rid * 64)
    for table in _ALL_TABLES:
        if table != "search_composite":
            conn.execute(f"DELETE FROM {table} WHERE rid BETWEEN ? AND ?", (low, high))
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
    conn.execute("DELETE FROM search_compartment WHERE rid = ?", (rid,))
    conn.execute("DELETE FROM consent_grant WHERE rid = ?", (rid,))

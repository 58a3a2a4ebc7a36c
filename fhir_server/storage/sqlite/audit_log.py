"""The audit log of the embedded store: AuditEvents in an append-only table of their own.

Every read of the server writes an AuditEvent, so the audit trail grows at the rate of all
traffic together. Stored like other resources (a ``resources`` row, a ``versions`` row and
about twenty search index rows) an event cost more to write than the read it records. Here
an event is one ``audit_events`` row (its JSON plus the few columns it is searched by) and,
later, one reference row per patient, entity and agent it names: about six B-tree insertions
instead of forty. The references wait in the event's ``refs`` column (a JSON array of
``<kind><reference>`` strings) and move into the indexed ``audit_refs`` every
:data:`MERGE_ROWS` references wait, in key order; searches read both through the view
``audit_refs_all``, and ``audit_merged`` holds the last event moved and how many references
wait.

A request that read several patients' records leaves one AuditEvent per patient
(``AuditRecord.groups``), stored as one ``audit_events`` row (what the events share, and each
event's resources, patients and Consents in its compact record) and one narrow
``audit_groups`` row per event (``seq``, ``k``, the patients and entities that event names),
so a page of 50 Patients writes one wide row and 50 narrow ones instead of 50 wide rows.
Every reader sees the events one by one: a search joins ``audit_groups`` (an event is a row
of ``audit_events`` and, if it has groups, one of its ``k``), a reference parameter matches
an event only when that event names the reference (``_group_names``), and the event ``k`` is
built from the record alone (``AuditRecord.event_record``), with the id
``event_id_in_group(id, k)``. So a citizen's log shows each access as the event of her own
records, exactly what a row per event gave. Rows without groups (every log written before,
and every request of one patient) have no ``audit_groups`` rows and are that one event.

AuditEvents are never updated or deleted (the API refuses it), so there is one version per
event and no history beyond it. They are searched by the parameters of
``fhir_server.security.audit.AUDIT_SEARCH_PARAMS`` (the ones an administrator or a citizen
looks for: who, whose records, when, what, how it ended); ``check_audit_search`` refuses the
rest before the query reaches the store.

Columns: ``at``/``at_high`` is the ``[low, high)`` microsecond range of ``recorded``;
``type`` and ``subtype`` hold the codings as ``\\x1fsystem|code\\x1f`` runs so a token is one
``instr`` (known systems shortened, see ``_SHORT_SYSTEMS``); a reference's ``kind`` is 0 for
an entity that is a Patient, 1 for any other entity, 2 for an agent (``Type/id``, or
``identifier|system|value``); the R4 parameter ``patient`` looks in kinds 0 and 2 (a Patient
as entity or as agent), ``entity`` in 0 and 1.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.audit_record import (
    MAX_GROUPS,
    AuditRecord,
    action_of,
    event_id_in_group,
    group_of_event_id,
    outcome_for_status,
    type_and_subtype_keys,
)
from fhir_server.errors import BadRequest
from fhir_server.search.cursor import decode_cursor, page_window
from fhir_server.search.dates import date_range
from fhir_server.search.model import (
    Clause,
    ClauseValue,
    DateValue,
    Modifier,
    ReferenceValue,
    SearchQuery,
    SearchResult,
    StringValue,
    TokenValue,
    TotalMode,
    Visibility,
)
from fhir_server.search.ranges import range_predicate
from fhir_server.storage.port import HistoryPage, HistoryQuery, StoredResource
from fhir_server.storage.sqlite.keyset import keyset_page, page_boundary
from fhir_server.storage.sqlite.search_where import (
    Condition,
    last_updated_condition,
    range_condition,
)
from fhir_server.storage.versions import now_instant

__all__ = [
    "AUDIT_SCHEMA_SQL",
    "AUDIT_TYPE",
    "Prepared",
    "append",
    "content_of",
    "create",
    "exists",
    "history",
    "insert",
    "prepare",
    "read",
    "search",
]

AUDIT_TYPE = "AuditEvent"
AUDIT_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS audit_events (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL, last_updated TEXT NOT NULL,
  at INTEGER NOT NULL, at_high INTEGER NOT NULL, action TEXT, outcome TEXT,
  type TEXT NOT NULL, subtype TEXT NOT NULL, address TEXT, content BLOB NOT NULL, refs TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS audit_events_id ON audit_events (id);
CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at);
CREATE TABLE IF NOT EXISTS audit_refs (
  kind INTEGER NOT NULL, ref TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (kind, ref, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_merged (seq INTEGER NOT NULL, waiting INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit_groups (
  seq INTEGER NOT NULL, k INTEGER NOT NULL, refs TEXT NOT NULL,
  PRIMARY KEY (seq, k)) WITHOUT ROWID;
"""
#: The reference rows of the events after the last merge, read from their ``refs`` column.
_TAIL_REFS = (
    "SELECT CAST(substr(j.value, 1, 1) AS INTEGER) AS kind, substr(j.value, 2) AS ref, "
    "a.seq AS seq FROM audit_events a, json_each(a.refs) j "
    "WHERE a.seq > (SELECT seq FROM audit_merged)"
)
_VIEW_SQL = (
    "CREATE VIEW audit_refs_all AS SELECT kind, ref, seq FROM audit_refs UNION ALL " + _TAIL_REFS
)
#: Events keep their references in their ``refs`` column (no index, nothing more to write)
#: until this many references wait; then they move into ``audit_refs`` in key order, in one
#: statement (a read's event names two, a visit push's about fourteen).
MERGE_ROWS = 16_384
_PATIENT, _ENTITY, _AGENT = 0, 1, 2
_SEP = "\x1f"
#: The code systems of every record's type and subtype, stored as one character each in those
#: columns (110 bytes less per event); logs written before hold them whole, and searches look
#: for both forms.
_SHORT_SYSTEMS = {
    "http://terminology.hl7.org/CodeSystem/audit-event-type": "\x01",
    "http://hl7.org/fhir/restful-interaction": "\x02",
    "urn:fhir-server:operation": "\x03",
    "http://dicom.nema.org/resources/ontology/DCM": "\x04",
}
_ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
_OUTCOME_SYSTEM = "http://hl7.org/fhir/audit-event-outcome"
_INSERT_HEAD = (
    "INSERT INTO audit_events (seq, id, last_updated, at, at_high, action, outcome, type, "
    "subtype, address, content, refs) VALUES "
)
#: Six columns, as ``keyset.keyset_page`` wants, the second being ``at`` (see :func:`_stored`).
#: The "rid" is the event's ``k`` in its row; the row's ``seq`` is the last sort key.
_STORED = "coalesce(g.k, 0) AS rid, a.at, a.id, 1 AS version, a.last_updated, a.content"
#: Every event: a row, joined with its groups if it has some (one event per group).
_EVENTS = "audit_events a LEFT JOIN audit_groups g ON g.seq = a.seq"


# -- writing -----------------------------------------------------------------------------------


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the audit log's tables; call in a write transaction.

    A log written before the ``refs`` column existed kept its waiting reference rows in a
    table ``audit_refs_recent``: they move into ``audit_refs`` here, once.
    """
    for statement in AUDIT_SCHEMA_SQL.split(";"):  # executescript would commit first
        if statement.strip():
            conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_events)")}
    if "refs" not in columns:
        conn.execute("ALTER TABLE audit_events ADD COLUMN refs TEXT")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_merged)")}
    if "waiting" not in columns:
        conn.execute("ALTER TABLE audit_merged ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "audit_refs_recent" in tables:
        conn.execute("DROP VIEW IF EXISTS audit_refs_all")
        conn.execute("INSERT OR IGNORE INTO audit_refs SELECT kind, ref, seq "
                     "FROM audit_refs_recent ORDER BY kind, ref, seq")
        conn.execute("DROP TABLE audit_refs_recent")
        tables.discard("audit_refs_all")
    if conn.execute("SELECT count(*) FROM audit_merged").fetchone()[0] == 0:
        # Every event before this point has its reference rows in audit_refs already.
        conn.execute("INSERT INTO audit_merged (seq) "
                     "SELECT coalesce(max(seq), 0) FROM audit_events")
    if "audit_refs_all" not in tables:
        conn.execute(_VIEW_SQL)


def append(conn: sqlite3.Connection, records: Sequence[AuditRecord | dict[str, Any]]) -> bool:
    """Store audit records (compact) and AuditEvents (as given); call in a write transaction.

    A record is stored as its compact JSON array and becomes an AuditEvent when read; an
    AuditEvent created through the API is stored as its JSON. Either way, version 1, and one
    row: what it is searched by waits in its ``refs`` column. Returns whether enough references
    wait for :func:`merge_recent_refs` (the caller runs it).
    """
    return insert(conn, prepare(records))


@dataclass(frozen=True)
class Prepared:
    """The ``audit_events`` rows of some records (their ``seq`` given by :func:`insert`: the
    next after the largest), the ``audit_groups`` rows of records with groups (``(row index,
    k, refs)``) and how many references they name; made outside any transaction by
    :func:`prepare`, stored by :func:`insert`."""

    rows: list[tuple[object, ...]]
    references: int
    groups: list[tuple[int, int, str]]


def prepare(records: Sequence[AuditRecord | dict[str, Any]]) -> Prepared:
    """Build the rows of ``records`` (Python work only: no connection is needed)."""
    last_updated = now_instant()
    rows: list[tuple[object, ...]] = []
    groups: list[tuple[int, int, str]] = []
    references = 0
    for item in records:
        if isinstance(item, AuditRecord) and item.groups:
            named = item.group_refs()
            groups += ((len(rows), k, _refs_column(sorted(own))) for k, own in enumerate(named))
            refs = sorted(item.agent_refs().union(*named))
        else:
            refs = sorted(item.refs()) if isinstance(item, AuditRecord) else _refs(item)
        references += len(refs)
        if isinstance(item, AuditRecord):
            rows.append(_record_row(None, item, last_updated, refs))
        else:
            rows.append(_event_row(None, item, last_updated, refs))
    return Prepared(rows, references, groups)


def insert(conn: sqlite3.Connection, prepared: Prepared) -> bool:
    """Store prepared rows; call in a write transaction. Returns whether enough references
    wait for :func:`merge_recent_refs`.

    Rows go in by statements of up to ``_ROWS_PER_INSERT`` rows each: a few calls into
    SQLite per batch instead of one per row, so a writer thread takes the GIL back only a few
    times per batch.
    """
    rows = prepared.rows
    first = int(conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM audit_events").fetchone()[0])
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        values: list[object] = []
        for seq, row in enumerate(chunk, first + start):
            values.append(seq)
            values += row[1:]
        conn.execute(_insert_sql(len(chunk)), values)
    groups = prepared.groups
    for start in range(0, len(groups), _GROUP_ROWS_PER_INSERT):
        part = groups[start:start + _GROUP_ROWS_PER_INSERT]
        conn.execute(_GROUP_INSERT_HEAD + ", ".join("(?, ?, ?)" for _ in part),
                     [value for row, k, refs in part for value in (first + row, k, refs)])
    conn.execute("UPDATE audit_merged SET waiting = waiting + ?", (prepared.references,))
    waiting = conn.execute("SELECT waiting FROM audit_merged").fetchone()[0]
    return bool(waiting >= MERGE_ROWS)


#: Rows per INSERT statement (12 values each; SQLite allows 32,766 per statement).
_ROWS_PER_INSERT = 250
_GROUP_ROWS_PER_INSERT = 1000
_GROUP_INSERT_HEAD = "INSERT INTO audit_groups (seq, k, refs) VALUES "


@functools.cache
def _insert_sql(count: int) -> str:
    marks = "(" + ", ".join("?" for _ in range(12)) + ")"
    return _INSERT_HEAD + ", ".join(marks for _ in range(count))


def merge_recent_refs(conn: sqlite3.Connection) -> None:
    """Move the reference rows of the events since the last merge into ``audit_refs``; call
    in a write transaction.

    A patient's reference row inserted straight into ``audit_refs`` lands at that patient's
    place in the B-tree: each event dirtied a page of its own, written to the WAL at commit and
    again by the checkpoint (about 1.1 pages per read event, measured). Kept in the event's own
    row until a merge, and moved then in key order, each leaf page is written once for all the
    events of its patients since the last merge.
    """
    conn.execute(f"INSERT OR IGNORE INTO audit_refs SELECT kind, ref, seq FROM ({_TAIL_REFS}) "
                 "ORDER BY kind, ref, seq")
    conn.execute("UPDATE audit_merged SET seq = (SELECT coalesce(max(seq), 0) FROM audit_events), "
                 "waiting = 0")


def create(conn: sqlite3.Connection, event: dict[str, Any]) -> StoredResource:
    """Store one AuditEvent (its ``id`` assigned) and return it as stored.

    Its reference rows wait with the others; the next batch of records moves them.
    """
    append(conn, [event])
    found = read(conn, event["id"])
    assert found is not None
    return found


@functools.cache
def _interaction_columns(interaction: str) -> tuple[str, str, str]:
    """The ``action``, ``type`` and ``subtype`` columns of a record's interaction."""
    kind, subtypes = type_and_subtype_keys(interaction)
    short = [_short_key(*key.split("|", 1)) for key in subtypes]
    type_column = _SEP + _short_key(*kind.split("|", 1)) + _SEP
    return action_of(interaction), type_column, _SEP + _SEP.join(short) + _SEP


def _short_key(system: str, code: str) -> str:
    return f"{_SHORT_SYSTEMS.get(system, system)}|{code}"


def _record_row(seq: int | None, record: AuditRecord, last_updated: str,
                refs: Sequence[tuple[int, str]]) -> tuple[object, ...]:
    action, kind, subtypes = _interaction_columns(record.interaction)
    outcome = outcome_for_status(record.status).value
    low = record.recorded - record.recorded % 1000  # recorded is kept to the millisecond
    return (seq, record.id, last_updated, low, low + 1000, action, outcome, kind, subtypes,
            record.address, orjson.dumps(record.compact()), _refs_column(refs))  # fmt: skip


def _event_row(seq: int | None, event: dict[str, Any], last_updated: str,
               refs: Sequence[tuple[int, str]]) -> tuple[object, ...]:
    recorded = event.get("recorded")
    low, high = date_range(recorded) if isinstance(recorded, str) else (0, 0)
    network = [a.get("network") for a in _list(event.get("agent"))]
    addresses = [n.get("address") for n in network if isinstance(n, dict)]
    content = orjson.dumps(_with_meta(event, last_updated))
    kinds = _codings([event.get("type")]), _codings(_list(event.get("subtype")))
    return (seq, event["id"], last_updated, low, high, _text(event.get("action")),
            _text(event.get("outcome")), *kinds, next(iter(addresses), None), content,
            _refs_column(refs))  # fmt: skip


def _refs_column(refs: Sequence[tuple[int, str]]) -> str:
    """The ``refs`` column: a JSON array of ``<kind><reference>`` (see ``_TAIL_REFS``)."""
    return orjson.dumps([f"{kind}{ref}" for kind, ref in refs]).decode()


def _with_meta(event: dict[str, Any], last_updated: str) -> dict[str, Any]:
    meta = dict(event.get("meta") or {})
    meta["versionId"] = "1"
    meta["lastUpdated"] = last_updated
    event["meta"] = meta
    return event


def content_of(stored: bytes, last_updated: str, id: str, at: int, k: int = 0) -> bytes:
    """Return the AuditEvent JSON of a stored row's ``k``-th event (building it from a compact
    record, whose ``id`` and ``at`` columns give the id and recorded time)."""
    if stored[:1] != b"[":
        return stored
    event = AuditRecord.from_compact(orjson.loads(stored), id, at).event_record(k).to_event()
    return orjson.dumps(_with_meta(event, last_updated))


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _codings(codings: Sequence[object]) -> str:
    parts = [_short_key(str(c.get("system", "")), str(c.get("code", "")))
             for c in codings if isinstance(c, dict)]
    return _SEP + _SEP.join(parts) + _SEP


def _reference(target: object) -> str | None:
    if not isinstance(target, dict):
        return None
    reference = target.get("reference")
    if isinstance(reference, str):
        return reference.split("/_history/", 1)[0]
    identifier = target.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        return f"identifier|{identifier.get('system', '')}|{identifier['value']}"
    return None


def _refs(event: dict[str, Any]) -> list[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for item in _list(event.get("entity")):
        ref = _reference(item.get("what"))
        if ref is not None:
            found.add((_PATIENT if ref.startswith("Patient/") else _ENTITY, ref))
    for item in _list(event.get("agent")):
        ref = _reference(item.get("who"))
        if ref is not None:
            found.add((_AGENT, ref))
    return sorted(found)


# -- reading -----------------------------------------------------------------------------------


def read(conn: sqlite3.Connection, id: str) -> StoredResource | None:
    """Return the AuditEvent ``id`` or None."""
    where, args = _event_is(id)
    row = conn.execute(
        f"SELECT a.last_updated, a.content, a.at, a.id, coalesce(g.k, 0) FROM {_EVENTS} "
        f"WHERE {where} LIMIT 1", args).fetchone()
    if row is None:
        return None
    content = content_of(bytes(row[1]), row[0], row[3], row[2], row[4])
    return StoredResource(AUDIT_TYPE, id, 1, row[0], content, "POST")


def exists(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Return which of ``ids`` are stored AuditEvents (a probe each; no event is built)."""
    found: set[str] = set()
    for id in dict.fromkeys(ids):
        where, args = _event_is(id)
        if conn.execute(f"SELECT 1 FROM {_EVENTS} WHERE {where} LIMIT 1", args).fetchone():
            found.add(id)
    return found


def _event_is(id: str) -> Condition:
    """The event ``id``: a row of that id (its first event), or the ``k``-th of a row."""
    exact: Condition = "(a.id = ? AND coalesce(g.k, 0) = 0)", [id]
    grouped = group_of_event_id(id)
    if grouped is None:
        return exact
    return f"{exact[0]} OR (a.id = ? AND g.k = ?)", [id, *grouped]


def history(conn: sqlite3.Connection, query: HistoryQuery) -> HistoryPage:
    """Type or instance history of AuditEvents: each event's single version, newest first."""
    seen, seen_args = _visible(query.visibility)
    where, args = [seen], list(seen_args)
    if query.id is not None:
        same, same_args = _event_is(query.id)
        where.append(same)
        args += same_args
    for sql, value in (("a.last_updated >= ?", query.since), ("a.last_updated <= ?", query.at)):
        if value is not None:
            where.append(sql)
            args.append(value)
    if query.before_seq is not None:  # an event's place: its row's seq, then its k
        seq, k = divmod(query.before_seq, MAX_GROUPS)
        where.append("(a.seq < ? OR (a.seq = ? AND g.k < ?))")
        args += [seq, seq, k]
    rows = conn.execute(
        f"SELECT a.seq * {MAX_GROUPS} + coalesce(g.k, 0), a.id, a.last_updated, a.content, "
        f"a.at FROM {_EVENTS} WHERE {' AND '.join(f'({w})' for w in where)} "
        "ORDER BY a.seq DESC, g.k DESC LIMIT ?", [*args, query.count + 1]).fetchall()
    more = len(rows) > query.count
    rows = rows[: query.count]
    entries = []
    for place, id, lu, content, at in rows:
        k = place % MAX_GROUPS
        entries.append(StoredResource(AUDIT_TYPE, event_id_in_group(id, k), 1, lu,
                                      content_of(bytes(content), lu, id, at, k), "POST"))
    return HistoryPage(entries, next_seq=rows[-1][0] if more and rows else None,
                       seqs=[row[0] for row in rows])


# -- search ------------------------------------------------------------------------------------


def search(conn: sqlite3.Connection, query: SearchQuery) -> SearchResult:
    """Run an AuditEvent search (its clauses already checked by the search layer)."""
    where, params = _filter(query)
    cursor = decode_cursor(query, query.cursor) if query.cursor else None
    keys: list[tuple[Condition, bool]] = [
        ((_SORT_COLUMNS[key.code], []), key.descending) for key in query.sort
    ]
    # The events in the order of the sort keys, then of their row, then of their group (the
    # "rid"), both ascending as a row per event's seq was: SQLite reads the rows in order and
    # sorts only each row's groups.
    keys.append((("a.seq", []), False))
    source = f"SELECT {_STORED}{{keys}} FROM {_EVENTS} WHERE {where}"
    fetched = keyset_page(conn, (source, params), keys, cursor, query.count) if query.count else []
    rows, has_next, has_prev = page_window(fetched, query.count, cursor)
    total = None
    if query.total is not TotalMode.NONE:
        total = int(conn.execute(
            f"SELECT COUNT(*) FROM {_EVENTS} WHERE {where}", params).fetchone()[0])
    return SearchResult(
        matches=tuple(_stored(row) for row in rows),
        total=total,
        next_cursor=page_boundary(query, rows[-1:], len(keys), has_next),
        prev_cursor=page_boundary(query, rows[:1], len(keys), has_prev, backward=True),
    )


_SORT_COLUMNS = {"date": "a.at", "_lastUpdated": "a.last_updated"}


def _stored(row: tuple[Any, ...]) -> StoredResource:
    k, at, id, _, last_updated, content = row[:6]
    return StoredResource(AUDIT_TYPE, event_id_in_group(id, k), 1, last_updated,
                          content_of(bytes(content), last_updated, id, at, k))


def _filter(query: SearchQuery) -> Condition:
    parts: list[Condition] = []
    if query.compartment is not None:
        parts.append(_ref_in(_PATIENT, f"Patient/{query.compartment[1]}"))
    parts.append(_clauses(query.clauses))
    parts.append(_visible(query.visibility))
    return _all(parts)


def _all(parts: list[Condition]) -> Condition:
    if not parts:
        return "1", []
    return " AND ".join(f"({s})" for s, _ in parts), [p for _, ps in parts for p in ps]


def _clauses(clauses: Sequence[Any]) -> Condition:
    parts: list[Condition] = []
    for clause in clauses:
        if not isinstance(clause, Clause):
            raise BadRequest("AuditEvent searches have no chains or _has",
                             message_id="MSG_AUDIT_SEARCH")
        alternatives = [_value(clause, value) for value in clause.values]
        sql = " OR ".join(f"({s})" for s, _ in alternatives) or "0"
        negate = clause.modifier is Modifier.NOT
        parts.append((f"NOT ({sql})" if negate else sql, [p for _, ps in alternatives for p in ps]))
    return _all(parts)


def _visible(seen: Visibility | None) -> Condition:
    """``Visibility`` over the audit log: an AuditEvent is in the compartment of the patients
    it names (R4: AuditEvent's ``patient`` parameter); under Consent, a clinician or facility
    sees the events naming it as an agent that succeeded (``search.consent``)."""
    if seen is None or seen.everything:
        return "1", []
    if not seen.readable(AUDIT_TYPE):
        return "0", []
    parts: list[Condition] = []
    if seen.bound(AUDIT_TYPE):
        parts.append(_ref_in(_PATIENT, f"Patient/{seen.patient}"))
    if seen.consent is not None:  # a clinician or facility: its own accesses that were done
        own = seen.consent.own
        parts.append(_all([_ref_in(_AGENT, own), ("a.outcome = '0'", [])])
                     if own and "/" in own and ":" not in own else ("0", []))
    alternatives = seen.restricted(AUDIT_TYPE)
    if alternatives is not None:
        options = [_clauses(clauses) for clauses in alternatives]
        parts.append((" OR ".join(f"({s})" for s, _ in options) or "0",
                      [p for _, ps in options for p in ps]))
    return _all(parts)


#: The ``audit_refs`` kinds each reference parameter looks in (see the module docstring).
_PARAM_KINDS = {_PATIENT: "kind IN (0, 2)", _ENTITY: "kind IN (0, 1)", _AGENT: "kind = 2"}


def _ref_in(param: int, ref: str) -> Condition:
    return _ref_where(param, "ref = ?", [ref])


def _ref_where(param: int, test: str, args: list[object]) -> Condition:
    """The events that name, as ``param`` looks for it, a reference passing ``test`` (on
    ``kind`` and ``ref``): their row names one, and so does the event's group if it has one
    (an agent is every group's)."""
    kinds = _PARAM_KINDS[param]
    row = f"a.seq IN (SELECT seq FROM audit_refs_all WHERE {kinds} AND {test})"
    if param == _AGENT:
        return row, args
    group = (f"g.refs IS NULL OR EXISTS (SELECT 1 FROM (SELECT CAST(substr(value, 1, 1) AS "
             f"INTEGER) AS kind, substr(value, 2) AS ref FROM json_each(g.refs)) "
             f"WHERE {kinds} AND {test})")
    if param == _PATIENT:  # as the agent (a citizen's own access): every group's
        agent, agent_args = _ref_where(_AGENT, test, args)
        return f"{row} AND ({group} OR {agent})", [*args, *args, *agent_args]
    return f"{row} AND ({group})", [*args, *args]


def _value(clause: Clause, value: ClauseValue) -> Condition:
    code = clause.code
    if isinstance(value, DateValue):
        predicate = range_predicate(value.prefix, value.low, value.high)
        if code == "_lastUpdated":
            return last_updated_condition(predicate, "a")
        return range_condition(predicate, ("a.at", "a.at_high"))
    if isinstance(value, ReferenceValue):
        kind = {"patient": _PATIENT, "entity": _ENTITY}.get(code, _AGENT)
        target = value.type or clause.target_type or ("Patient" if kind == _PATIENT else None)
        if value.url is not None:
            return _ref_in(kind, value.url)
        if target is None:
            return _ref_where(kind, "substr(ref, -length(?)) = ?", [f"/{value.id}"] * 2)
        return _ref_in(kind, f"{target}/{value.id}")
    if isinstance(value, TokenValue):
        return _token(clause, value)
    if isinstance(value, StringValue) and code == "address":
        if clause.modifier is Modifier.EXACT:
            return "a.address = ?", [value.text]
        return "substr(lower(a.address), 1, length(?)) = ?", [value.folded, value.folded]
    raise BadRequest(f"AuditEvent cannot be searched by '{code}' that way",
                     message_id="MSG_AUDIT_SEARCH")


def _token(clause: Clause, value: TokenValue) -> Condition:
    code = clause.code
    if code == "_id":
        return _event_is(value.code or "")
    if code == "agent":  # agent:identifier=system|value
        if value.system is not None:
            return _ref_in(_AGENT, f"identifier|{value.system}|{value.code or ''}")
        suffix = f"|{value.code}"
        return ("a.seq IN (SELECT seq FROM audit_refs_all WHERE kind = 2 AND "
                "ref >= 'identifier|' AND ref < 'identifier}' AND substr(ref, -length(?)) = ?)",
                [suffix, suffix])
    if code in ("action", "outcome"):
        system = _ACTION_SYSTEM if code == "action" else _OUTCOME_SYSTEM
        if value.system not in (None, system) or value.code is None:
            return "0", []
        return f"a.{code} = ?", [value.code]
    column = "a.subtype" if code == "subtype" else "a.type"
    if value.system is None:
        return f"instr({column}, ?) > 0", [f"|{value.code}{_SEP}"]
    code_part = "" if value.code is None else f"{value.code}{_SEP}"
    short = _SHORT_SYSTEMS.get(value.system, value.system)
    needles: list[object] = list(
        dict.fromkeys((f"{_SEP}{short}|{code_part}", f"{_SEP}{value.system}|{code_part}"))
    )
    return " OR ".join(f"instr({column}, ?) > 0" for _ in needles), needles

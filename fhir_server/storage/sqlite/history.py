"""History queries of the embedded store (instance, type and system level).

Entries come newest first in write order (``versions.seq``); the next page starts below the
last ``seq`` returned, so pages stay stable while others write. A query's ``visibility``
keeps the versions of resources the caller may see now (``search_where``'s rule on their
``resources`` row).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_server.storage.port import HistoryPage, HistoryQuery, StoredResource
from fhir_server.storage.sqlite.bodies import json_bytes
from fhir_server.storage.sqlite.search_where import WhereCompiler

__all__ = ["fetch_page"]

_COLUMNS = "v.seq, v.type, v.id, v.version, v.last_updated, v.content, v.method"


def _conditions(query: HistoryQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if query.resource_type is not None:
        where.append("v.type = ?")
        args.append(query.resource_type)
    if query.id is not None:
        where.append("v.id = ?")
        args.append(query.id)
    if query.since is not None:
        where.append("v.last_updated >= ?")
        args.append(query.since)
    if query.at is not None:
        # _at: versions that were current at the instant: written at or before it, and not
        # replaced by a later version written at or before it.
        where.append(
            "v.last_updated <= ? AND NOT EXISTS (SELECT 1 FROM versions n WHERE "
            "n.rid = v.rid AND n.version = v.version + 1 AND n.last_updated <= ?)"
        )
        args.extend([query.at, query.at])
    if query.before_seq is not None:
        where.append("v.seq < ?")
        args.append(query.before_seq)
    if query.visibility is not None:
        seen, seen_args = WhereCompiler(visibility=query.visibility).visible(
            "r", query.resource_type)
        where.append(f"v.rid IN (SELECT r.rid FROM resources r WHERE {seen})")
        args.extend(seen_args)
    return where, args


def fetch_page(conn: sqlite3.Connection, query: HistoryQuery) -> HistoryPage:
    """Return up to ``query.count`` versions matching the query, newest first."""
    where, args = _conditions(query)
    sql = f"SELECT {_COLUMNS} FROM versions v"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY v.seq DESC LIMIT ?"
    rows = conn.execute(sql, [*args, query.count + 1]).fetchall()
    more = len(rows) > query.count
    rows = rows[: query.count]
    entries = [
        StoredResource(rtype, id, version, last_updated, json_bytes(content), method,
                       content is None)
        for _seq, rtype, id, version, last_updated, content, method in rows
    ]
    next_seq = rows[-1][0] if more and rows else None
    return HistoryPage(entries, next_seq=next_seq, seqs=[row[0] for row in rows])

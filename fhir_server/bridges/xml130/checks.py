"""Checks of a visit's records before mapping: the tables it must have, and each field's type
and size against its standard (``data/fields.json``).

Every problem is an ``Issue`` located at the field (``XML2[3].LIEU_DUNG``) with a Vietnamese and
an English text; errors reject the visit, warnings (a field the standard does not have, a table
that is not imported) are reported with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fhir_server.bridges.xml130.engine import where
from fhir_server.bridges.xml130.envelope import Hoso, problem
from fhir_server.bridges.xml130.tables import Standard, Table
from fhir_server.errors import Issue

__all__ = ["Records", "check_visit"]

Records = dict[str, list[dict[str, str]]]
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _field_problem(table: Table, name: str, text: str) -> tuple[str, str, str, str] | None:
    """(message id, Vietnamese, English, severity) of a field's problem, or None."""
    facts = table.facts.get(name)
    if facts is None:
        return ("MSG_XML130_FIELD_UNKNOWN",
                f"trường không có trong Bảng {table.name} ({table.standard})",
                f"no such field in {table.name} of standard {table.standard}; it is not "
                "imported", "warning")
    if facts.size is not None and len(text) > facts.size:
        return ("MSG_XML130_TOO_LONG", f"dài {len(text)} ký tự, tối đa {facts.size}",
                f"{len(text)} characters, at most {facts.size} allowed", "error")
    if facts.kind == "number" and text and not _NUMBER.fullmatch(text):
        return ("MSG_XML130_NOT_NUMBER", f"'{text}' không phải là số",
                f"'{text}' is not a number", "error")
    return None


def _field_issues(table: Table, record: Mapping[str, str], position: int) -> list[Issue]:
    issues: list[Issue] = []
    limits = table.limits
    for name, text in record.items():
        limit = limits.get(name)
        if limit is not None and len(text) <= limit[0] and not (
                limit[1] and text and not _NUMBER.fullmatch(text)):
            continue  # a known field within its size and type: most of them
        found = _field_problem(table, name, text)
        if found is not None:
            message_id, vi, en, severity = found
            issues.append(problem(message_id, where(table, position, name), vi, en, severity))
    return issues


def _rows(table: Table, records: list[dict[str, str]], ma_lk: str) -> list[Issue]:
    issues: list[Issue] = []
    seen: set[str] = set()
    for position, record in enumerate(records, start=1):
        issues += _field_issues(table, record, position)
        if record.get("MA_LK", "").strip() != ma_lk:
            issues.append(problem("MSG_XML130_MA_LK", where(table, position, "MA_LK"),
                                  f"MA_LK khác với Bảng 1 ({ma_lk})",
                                  f"MA_LK differs from XML1's ({ma_lk})"))
        number = record.get("STT", "").strip()
        if table.many and (not number.isdigit() or number in seen):
            issues.append(problem("MSG_XML130_STT", where(table, position, "STT"),
                                  f"STT '{number}' thiếu, không phải số hoặc bị trùng",
                                  f"STT '{number}' is missing, not a number or repeated"))
        seen.add(number)
    return issues


def _xml1(records: Records) -> tuple[str, list[Issue]]:
    rows = records.get("XML1") or []
    if len(rows) != 1:
        return "", [problem("MSG_XML130_XML1", "XML1", "hồ sơ phải có đúng một Bảng 1 (TONG_HOP)",
                            "a visit needs exactly one XML1 record (TONG_HOP)")]
    ma_lk = rows[0].get("MA_LK", "").strip()
    if not ma_lk:
        return "", [problem("MSG_XML130_MA_LK", "XML1.MA_LK", "thiếu MA_LK", "MA_LK is missing")]
    return ma_lk, []


def check_visit(standard: Standard, hoso: Hoso) -> tuple[Records, str, list[Issue]]:
    """The visit's records by table, its MA_LK, and every problem of its tables and fields."""
    records: Records = {}
    issues = list(hoso.problems)
    for item in hoso.files:
        if item.kind in records:
            issues.append(problem("MSG_XML130_TABLE_TWICE", item.kind,
                                  "bảng được gửi hai lần trong một hồ sơ",
                                  "the table appears twice in one HOSO"))
        records[item.kind] = list(item.records)  # read, never changed: no copies
    ma_lk, first = _xml1(records)
    issues += first
    for kind, rows in records.items():
        issues += _rows(standard.tables[kind], rows, ma_lk) if ma_lk else []
    return records, ma_lk, issues

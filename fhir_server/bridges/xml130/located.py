"""FHIR validation issues of a converted visit, located back at the XML field.

The push path (or the dry run's own validation) names an element of an entry:
``Bundle.entry[5].resource.dosageInstruction[0].text``. The entry came from a table's record
and the element from a field's target path, so the issue is re-located at
``XML2[3].LIEU_DUNG``; the FHIR expression is kept as the second expression.
"""

from __future__ import annotations

import re

from fhir_server.bridges.xml130.engine import Instance, where
from fhir_server.bridges.xml130.tables import Standard, Table
from fhir_server.bridges.xml130.transaction import Plan
from fhir_server.errors import Issue

__all__ = ["locate_issue"]

_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\](?:\.resource)?\.?(.*)$")
_INDEX = re.compile(r"\[[^\]]*\]")
_HEAD = re.compile(r"^(section|note)\[(\d+)\]")


def _by_content(table: Table, inst: Instance, path: str) -> str | None:
    match = _HEAD.match(path)
    if match is None:
        return None
    items = inst.resource.get(match.group(1)) or []
    index = int(match.group(2))
    if index >= len(items):
        return None
    if match.group(1) == "section":
        coding = ((items[index].get("code") or {}).get("coding") or [{}])[0]
        return str(coding.get("code", "")).partition(".")[2] or None
    text = str(items[index].get("text", ""))
    return next((rule.name for rule in table.rules.values() for t in rule.targets
                 if t.kind == "note" and text.startswith(f"{t.option('label')}: ")), None)


def _by_path(table: Table, inst: Instance, path: str) -> str | None:
    bare = _INDEX.sub("", path)
    best, length = None, -1
    for rule in table.rules.values():
        for target in rule.targets:
            own = _INDEX.sub("", target.path)
            if inst.role not in target.roles or not own:
                continue
            related = bare == own or bare.startswith(own + ".") or own.startswith(bare + ".")
            if related and len(own) > length:
                best, length = rule.name, len(own)
    return best


def locate_issue(issue: Issue, plan: Plan, standard: Standard) -> Issue:
    """The issue re-located at its table, record and field (unchanged if it cannot be)."""
    match = next((m for e in issue.expression if (m := _ENTRY.match(e))), None)
    if match is None or int(match.group(1)) >= len(plan.sources):
        return issue
    inst = plan.sources[int(match.group(1))]
    if inst is None:
        return issue
    table = standard.tables[inst.table]
    path = match.group(2)
    name = _by_content(table, inst, path) or _by_path(table, inst, path)
    at = where(table, inst.position, name)
    text = (f"{at}: dữ liệu không hợp lệ theo hồ sơ FHIR / invalid under the FHIR profiles "
            f"({issue.diagnostics})")
    return Issue(issue.severity, issue.code, issue.message_id, text, (at, *issue.expression))

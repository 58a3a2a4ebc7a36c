"""The mapping engine: XML 130 records -> FHIR resources of a visit, and back.

``map_tables`` reads a visit's records (table name -> records, each field name -> text) with
the tables of one standard and returns the resources the roles make (``Instance``: table,
role, number, the record's position, the resource without ids or links) and the issues found
(bilingual, located at the field: ``XML2[3].LIEU_DUNG``). ``unmap_tables`` reads resources back
into records: for every mapped field, ``unmap_tables(map_tables(x))`` gives x's value again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.bridges.xml130.envelope import problem
from fhir_server.bridges.xml130.kinds import KINDS, LIST_KINDS, Context, Put, compile_put
from fhir_server.bridges.xml130.paths import write
from fhir_server.bridges.xml130.tables import Role, Rule, Standard, Table, Target
from fhir_server.bridges.xml130.values import split_list
from fhir_server.errors import Issue

__all__ = ["Instance", "Mapped", "map_tables", "unmap_tables", "where"]

Records = Mapping[str, Sequence[Mapping[str, str]]]


@dataclass
class Instance:
    """One resource a role made: from which table and record (position from 1), its number
    (the row's STT, or its place among the role's resources) and the resource itself."""

    table: str
    role: str
    n: int
    position: int
    resource: dict[str, Any]


@dataclass
class Mapped:
    """The resources of a visit and the issues found mapping it."""

    instances: list[Instance] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    def of(self, table: str, role: str) -> list[Instance]:
        """The instances of one role, in order."""
        return [i for i in self.instances if i.table == table and i.role == role]


def where(table: Table, position: int, name: str | None = None) -> str:
    """The expression of a record (``XML2[3]``, from 1) or of one of its fields."""
    base = f"{table.name}[{position}]" if table.many else table.name
    return f"{base}.{name}" if name else base


def _row_number(table: Table, record: Mapping[str, str], position: int) -> int:
    text = record.get("STT", "").strip()
    return int(text) if table.many and text.isdigit() else position


def _count(table: Table, role: Role, record: Mapping[str, str]) -> int:
    if role.source in ("always", "row"):
        return 1
    names = (role.source,) if isinstance(role.source, str) else role.source
    rules = [table.rules.get(n) for n in names]
    texts = [record.get(r.name, "").strip() for r in rules if r is not None and r.targets]
    if isinstance(role.source, str) and texts and table.rules[role.source].split:
        return len(split_list(texts[0]))
    return 1 if any(texts) else 0


def _instances(table: Table, record: Mapping[str, str], position: int) -> dict[str, list[Instance]]:
    number = _row_number(table, record, position)
    made: dict[str, list[Instance]] = {}
    for role in table.roles.values():
        made[role.name] = [
            Instance(table.name, role.name, number if table.many else n, position,
                     orjson.loads(role.blank))
            for n in range(1, _count(table, role, record) + 1)
        ]
    return made


def _fallback(target: Target, records: Records) -> str:
    source = target.option("fallback")
    if not source:
        return ""
    other, _, name = str(source).partition(".")
    rows = records.get(other) or [{}]
    text = rows[0].get(name, "").strip()
    return text[:8] if target.kind == "date" else text  # a day from a time


def _writer(target: Target, facility: str) -> Put:
    """The target's ``put`` for a facility, compiled once (``kinds.compile_put``)."""
    local = target.local(facility)
    put: Put | None = local.memo.get("put")
    if put is None:
        put = local.memo["put"] = compile_put(local)
    return put


def _put(insts: list[Instance], target: Target, values: str | list[str],
         context: Context) -> None:
    """Write the text (or one item of a split list per instance) into each instance."""
    put, sets = _writer(target, context.facility), target.sets
    items = [values] * len(insts) if isinstance(values, str) else values
    for inst, item in zip(insts, items, strict=False):  # fewer items: the rest get nothing
        put(inst.resource, item, context)
        for path, value in sets:
            write(inst.resource, path, copy.deepcopy(value))


def _values(rule: Rule, target: Target, text: str, insts: list[Instance]) -> str | list[str]:
    """The field's text, or its items when the rule splits it over several resources."""
    if not rule.split or target.kind in LIST_KINDS:
        return text
    items = split_list(text)
    if target.reverse and len(items) > len(insts):
        raise ValueError(f"{len(items)} values but the visit has {len(insts)} "
                         f"{'/'.join(target.roles)} to carry them")
    return items[:len(insts)]


def _targets(target: Target, roles: Mapping[str, list[Instance]]) -> list[Instance]:
    return [i for role in target.roles for i in roles.get(role, [])]


def _empty(target: Target, insts: list[Instance]) -> None:
    for inst in insts:
        for path, value in (target.option("if_empty") or {}).items():
            write(inst.resource, path, copy.deepcopy(value))


def _apply(table: Table, rule: Rule, own: str, position: int,
           roles: Mapping[str, list[Instance]], context: Context,
           records: Records) -> list[Issue]:
    """Write one field (``own``, stripped) into the instances of its targets' roles, with
    ``context`` naming it; the issues of its value."""
    issues: list[Issue] = []
    for target in rule.targets:
        text = own or _fallback(target, records)
        insts = roles.get(target.roles[0], []) if len(target.roles) == 1 \
            else _targets(target, roles)
        if not text:
            _empty(target, insts)
            continue
        try:
            if target.reverse and not insts:
                raise ValueError(f"the visit has no {'/'.join(target.roles)} to carry it")
            _put(insts, target, _values(rule, target, text, insts) if rule.split else text,
                 context)
        except ValueError as exc:
            issues.append(problem("MSG_XML130_VALUE", where(table, position, rule.name),
                                  f"giá trị '{text}' không hợp lệ", str(exc)))
            break  # one issue per field
        if context.warnings:
            issues += [problem("MSG_XML130_VALUE_TRUNCATED", where(table, position, rule.name),
                               "chỉ giữ mã đầu tiên", w, "warning")
                       for w in context.warnings]
            context.warnings.clear()
    return issues


def _copy_issue(table: Table, rule: Rule, record: Mapping[str, str], position: int,
                records: Records) -> list[Issue]:
    assert rule.same_as is not None
    other, name = rule.same_as
    mine, theirs = record.get(rule.name, "").strip(), (records.get(other) or [{}])[0]
    if not mine or mine == theirs.get(name, "").strip():
        return []
    return [problem("MSG_XML130_COPY_DIFFERS", where(table, position, rule.name),
                    f"khác {other}.{name}; giữ giá trị của {other}",
                    f"differs from {other}.{name}; {other}'s value is kept", "warning")]


#: A field compiled: ``(text, position, roles, context)`` -> its issues. The text is the
#: field's own (stripped, not empty).
Field = Callable[[str, int, Mapping[str, list[Instance]], Context], list[Issue]]


def _direct(table: Table, rule: Rule) -> Field | None:
    """The field as one function when it is the common case (one target of one role, no
    split, fallback, content when empty, fixed values or facility in its path); else None
    (``_apply`` interprets it)."""
    if len(rule.targets) != 1 or rule.split or rule.acts_when_empty:
        return None
    target = rule.targets[0]
    if len(target.roles) != 1 or target.sets or "{facility}" in target.path:
        return None
    role, reverse, put = target.roles[0], target.reverse, compile_put(target)

    def field(text: str, position: int, roles: Mapping[str, list[Instance]],
              context: Context) -> list[Issue]:
        insts = roles.get(role)
        try:
            if not insts and reverse:
                raise ValueError(f"the visit has no {role} to carry it")
            for inst in insts or ():
                put(inst.resource, text, context)
        except ValueError as exc:
            return [problem("MSG_XML130_VALUE", where(table, position, rule.name),
                            f"giá trị '{text}' không hợp lệ", str(exc))]
        return _warned(table, rule, position, context) if context.warnings else []
    return field


def _warned(table: Table, rule: Rule, position: int, context: Context) -> list[Issue]:
    found = [problem("MSG_XML130_VALUE_TRUNCATED", where(table, position, rule.name),
                     "chỉ giữ mã đầu tiên", w, "warning") for w in context.warnings]
    context.warnings.clear()
    return found


def _fields(table: Table) -> tuple[tuple[Rule, Field | None], ...]:
    """The table's active rules, each with its compiled form (None: interpreted), made once."""
    found: tuple[tuple[Rule, Field | None], ...] | None = table.memo.get("fields")
    if found is None:
        found = table.memo["fields"] = tuple(
            (rule, None if rule.same_as else _direct(table, rule)) for rule in table.active_rules)
    return found


def _map_record(table: Table, record: Mapping[str, str], position: int, facility: str,
                records: Records, mapped: Mapped) -> None:
    roles = _instances(table, record, position)
    context = Context(table.name, "", facility, record)  # one per record, named per field
    issues = mapped.issues
    for rule, direct in _fields(table):
        own = record.get(rule.name)
        own = own.strip() if own else ""
        if direct is not None:
            if own:
                context.field = rule.name
                issues += direct(own, position, roles, context)
        elif rule.same_as:
            issues += _copy_issue(table, rule, record, position, records)
        elif own or rule.acts_when_empty:
            context.field = rule.name
            issues += _apply(table, rule, own, position, roles, context, records)
    mapped.instances += [i for insts in roles.values() for i in insts]


def map_tables(standard: Standard, records: Records, facility: str) -> Mapped:
    """Map a visit's records (XML1 and the other imported tables) to resources."""
    mapped = Mapped()
    for name, table in standard.tables.items():
        if table.unmapped or name not in records:
            continue
        for position, record in enumerate(records[name], start=1):
            _map_record(table, record, position, facility, records, mapped)
    return mapped


def _value(rule: Rule, insts: list[Instance], table: str, facility: str) -> str:
    target = rule.targets[0].local(facility)
    context = Context(table, rule.name, facility)
    texts = [KINDS[target.kind].get(i.resource, target, context) for i in insts]
    if rule.split and target.kind not in LIST_KINDS:
        return ";".join(t for t in texts if t)
    return next((t for t in texts if t), "")


def _record(table: Table, by_role: Mapping[str, list[Instance]], number: int | None,
            keys: tuple[str, str], done: Mapping[str, list[dict[str, str]]]) -> dict[str, str]:
    ma_lk, facility = keys
    record: dict[str, str] = {}
    for rule in table.rules.values():
        if rule.key:
            record[rule.name] = ma_lk if rule.key == "visit" else str(number)
        elif rule.same_as:
            other, name = rule.same_as
            record[rule.name] = (done.get(other) or [{}])[0].get(name, "")
        elif rule.targets:
            insts = [i for role in rule.targets[0].roles for i in by_role.get(role, [])
                     if number is None or i.n == number]
            record[rule.name] = _value(rule, insts, table.name, facility)
    return record


def unmap_tables(standard: Standard, instances: Iterable[Instance], ma_lk: str,
                 facility: str) -> dict[str, list[dict[str, str]]]:
    """Records of every table the instances belong to (XML1 first), fields in table order."""
    grouped: dict[str, dict[str, list[Instance]]] = {}
    for inst in sorted(instances, key=lambda i: i.n):
        grouped.setdefault(inst.table, {}).setdefault(inst.role, []).append(inst)
    done: dict[str, list[dict[str, str]]] = {}
    for name, table in standard.tables.items():
        by_role = grouped.get(name)
        if table.unmapped or not by_role:
            continue
        numbers = sorted({i.n for insts in by_role.values() for i in insts}) \
            if table.many else [None]
        done[name] = [_record(table, by_role, n, (ma_lk, facility), done) for n in numbers]
    return done

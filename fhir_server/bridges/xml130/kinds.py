"""The value kinds of the mapping tables: how one XML field becomes FHIR, and back.

Each kind is a pair: ``put(resource, target, text, context)`` writes the value (raising
``ValueError`` for text the kind cannot read) and ``get(resource, target, context)`` returns the
XML text the resource gives back, or None. List kinds (``codings``, ``concepts``, ``actors``)
take a whole ``;``-separated field into one resource; scalar kinds take one value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from fhir_server.bridges.xml130 import address, freetext, lexical, persons, values
from fhir_server.bridges.xml130.paths import list_at, locate, read, setter, write
from fhir_server.bridges.xml130.tables import Target
from fhir_server.conformance.terminology import default_terminology

__all__ = ["KINDS", "LIST_KINDS", "Context", "Kind", "Put", "compile_put"]

Resource = dict[str, Any]
#: A target's ``put`` compiled: ``(resource, text, context)``.
Put = Callable[[Resource, str, "Context"], None]
_BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


@dataclass
class Context:
    """What a kind may need besides the value: the table, field and record being mapped and
    the visit's facility code, plus warnings it may add."""

    table: str
    field: str
    facility: str
    record: Mapping[str, str] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class Kind:
    """How one kind of value is written and read back."""

    put: Callable[[Resource, Target, str, Context], None]
    get: Callable[[Resource, Target, Context], str | None]


def _system(target: Target, context: Context) -> str:
    return str(target.option("system", "")).replace("{facility}", context.facility)


def _code(target: Target, text: str) -> str:
    pad = target.option("pad")
    code = text.zfill(pad) if pad else text
    mapping = target.option("map")
    if mapping is None:
        return code
    if code not in mapping:
        raise ValueError(f"'{text}' is not one of {', '.join(mapping)}")
    return str(mapping[code])


def _uncode(target: Target, code: Any) -> str | None:
    if code is None:
        return None
    mapping = target.option("map")
    if mapping is not None:
        code = next((k for k, v in mapping.items() if v == code), None)
    text = str(code) if code is not None else None
    return text.lstrip("0") or "0" if text and target.option("pad") else text


@cache
def _display(system_uri: str, code: str) -> str | None:
    try:
        concept = default_terminology().lookup(system_uri, code)
    except Exception:  # an unknown code system has no displays
        return None
    return concept.display if concept is not None else None


def _coding(target: Target, text: str, context: Context) -> dict[str, Any]:
    uri, code = _system(target, context), _code(target, text)
    coding = {"system": uri, "code": code}
    if target.option("display") and (shown := _display(uri, code)):
        coding["display"] = shown
    return coding


def _text_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    template = target.option("format")
    write(resource, target.path, template.format(text) if template else text)


def _text_get(resource: Resource, target: Target, context: Context) -> str | None:
    value = read(resource, target.path)
    return str(value) if value is not None else None


def _converted(into: Callable[[str], Any], back: Callable[[Any], str]) -> Kind:
    def put(resource: Resource, target: Target, text: str, context: Context) -> None:
        write(resource, target.path, into(text))

    def get(resource: Resource, target: Target, context: Context) -> str | None:
        value = read(resource, target.path)
        return back(value) if value is not None else None

    return Kind(put, get)


def _integer(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"'{text}' is not a whole number")
    return int(text)


def _coding_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    write(resource, target.path, _coding(target, text, context))


def _coding_get(resource: Resource, target: Target, context: Context) -> str | None:
    return _uncode(target, read(resource, target.path + ".code"))


def _concept_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    write(resource, target.path, {"coding": [_coding(target, text, context)]})


def _concept_get(resource: Resource, target: Target, context: Context) -> str | None:
    concept = read(resource, target.path)
    uri = _system(target, context)
    codings = (concept or {}).get("coding") or []
    return _uncode(target, next((c.get("code") for c in codings if c.get("system") == uri),
                                None))


def _identifier_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    write(resource, target.path, {"system": _system(target, context), "value": text})


def _identifier_get(resource: Resource, target: Target, context: Context) -> str | None:
    return _text_get(resource, Target(target.roles, target.path + ".value", "text", {}),
                     context)


def _first(target: Target, text: str, context: Context) -> str:
    items = values.split_list(text)
    if len(items) > 1 and target.option("first"):
        context.warnings.append(f"only the first of {len(items)} codes is kept")
    return items[0] if items and target.option("first") else text


def _reference_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    value = _first(target, text, context)
    write(resource, target.path, {"identifier": {"system": _system(target, context),
                                                 "value": value}})


def _reference_get(resource: Resource, target: Target, context: Context) -> str | None:
    return _text_get(resource, Target(target.roles, target.path + ".identifier.value",
                                      "text", {}), context)


def _codings_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    uri = _system(target, context)
    list_at(resource, target.path).extend({"system": uri, "code": c}
                                        for c in values.split_list(text))


def _codings_get(resource: Resource, target: Target, context: Context) -> str | None:
    uri = _system(target, context)
    codes = [c.get("code") for c in read(resource, target.path) or [] if c.get("system") == uri]
    return ";".join(codes) or None


def _concepts_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    uri = _system(target, context)
    list_at(resource, target.path).extend({"coding": [{"system": uri, "code": c}]}
                                        for c in values.split_list(text))


def _concepts_get(resource: Resource, target: Target, context: Context) -> str | None:
    uri = _system(target, context)
    codes = [(item.get("coding") or [{}])[0].get("code") for item in
             read(resource, target.path) or []
             if (item.get("coding") or [{}])[0].get("system") == uri]
    return ";".join(codes) or None


def _actor(target: Target, value: str, context: Context) -> dict[str, Any]:
    reference = {"identifier": {"system": _system(target, context), "value": value}}
    item = target.option("item")
    return {**target.option("fixed", {}), item: reference} if item else reference


def _actors_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    list_at(resource, target.path).extend(_actor(target, v, context)
                                        for v in values.split_list(text))


def _actors_get(resource: Resource, target: Target, context: Context) -> str | None:
    item, fixed, uri = target.option("item"), target.option("fixed", {}), _system(target, context)
    found = []
    for entry in read(resource, target.path) or []:
        reference = entry.get(item) if item else entry
        rest = {k: v for k, v in entry.items() if k != item} if item else {}
        identifier = (reference or {}).get("identifier") or {}
        if identifier.get("system") == uri and (not item or rest == fixed):
            found.append(str(identifier.get("value")))
    return ";".join(found) or None


def _person_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    identifier = persons.person_identifier(text, context.record.get("MA_QUOCTICH", ""))
    resource.setdefault("identifier", []).append(identifier)


def _person_get(resource: Resource, target: Target, context: Context) -> str | None:
    return persons.person_value(resource)


def _birth_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    day, moment = values.birth_from_xml(text)
    resource["birthDate"] = day
    if moment is not None:
        resource["_birthDate"] = {"extension": [{"url": _BIRTH_TIME, "valueDateTime": moment}]}


def _birth_get(resource: Resource, target: Target, context: Context) -> str | None:
    day = resource.get("birthDate")
    if not day:
        return None
    extensions = (resource.get("_birthDate") or {}).get("extension") or []
    moment = next((e.get("valueDateTime") for e in extensions if e.get("url") == _BIRTH_TIME),
                  None)
    return values.birth_to_xml(day, moment)


def _address_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    address.set_part(locate(resource, target.path, create=True), target.option("part"), text)


def _address_get(resource: Resource, target: Target, context: Context) -> str | None:
    found = locate(resource, target.path)
    return address.get_part(found, target.option("part")) if found else None


def _name_parts(resource: Resource, target: Target, text: str, context: Context) -> None:
    words = text.split()
    name = locate(resource, target.path, create=True)
    name["family"] = words[0]
    if len(words) > 1:
        name["given"] = words[1:]


def _day_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    start = datetime.fromisoformat(values.date_from_xml(text)).replace(tzinfo=values.VIETNAM)
    resource["start"] = start.isoformat()
    resource["end"] = (start + timedelta(days=1, seconds=-1)).isoformat()


def _day_get(resource: Resource, target: Target, context: Context) -> str | None:
    start = resource.get("start")
    return values.datetime_to_xml(start)[:8] if start else None


def _moment_put(resource: Resource, target: Target, text: str, context: Context) -> None:
    resource["start"] = resource["end"] = values.datetime_from_xml(text)


def _moment_get(resource: Resource, target: Target, context: Context) -> str | None:
    start = resource.get("start")
    return values.datetime_to_xml(start) if start else None


def _forward_only(resource: Resource, target: Target, context: Context) -> str | None:
    return None


KINDS: dict[str, Kind] = {
    "text": Kind(_text_put, _text_get),
    "integer": _converted(_integer, str),
    "decimal": _converted(values.number_from_xml, values.number_to_xml),
    "date": _converted(values.date_from_xml, values.date_to_xml),
    "datetime": _converted(values.datetime_from_xml, values.datetime_to_xml),
    "lookup": Kind(lambda r, t, x, c: write(r, t.path, _code(t, x)),
                   lambda r, t, c: _uncode(t, read(r, t.path))),
    "coding": Kind(_coding_put, _coding_get),
    "concept": Kind(_concept_put, _concept_get),
    "codings": Kind(_codings_put, _codings_get),
    "concepts": Kind(_concepts_put, _concepts_get),
    "identifier": Kind(_identifier_put, _identifier_get),
    "reference": Kind(_reference_put, _reference_get),
    "actors": Kind(_actors_put, _actors_get),
    "note": Kind(freetext.note_put, freetext.note_get),
    "section": Kind(freetext.section_put, freetext.section_get),
    "person_id": Kind(_person_put, _person_get),
    "birth": Kind(_birth_put, _birth_get),
    "address": Kind(_address_put, _address_get),
    "name_parts": Kind(_name_parts, _forward_only),
    "day": Kind(_day_put, _day_get),
    "moment": Kind(_moment_put, _moment_get),
    "result_value": Kind(freetext.result_put, freetext.result_get),
    "unit": Kind(freetext.unit_put, freetext.unit_get),
}
#: Kinds that read a whole ``;``-separated field into one resource.
LIST_KINDS = frozenset({"codings", "concepts", "actors"})


def _coder(target: Target) -> Callable[[str], str]:
    """``_code`` of one target with its options read once."""
    pad, mapping = target.option("pad"), target.option("map")
    if not pad and mapping is None:
        return str
    return lambda text: _code(target, text)


def _converting(target: Target, into: Callable[[str], Any]) -> Put:
    """Write ``into(text)`` at the path once the structural check's test accepts it."""
    put, test = setter(target.path), lexical.tester(target)

    def put_value(resource: Resource, text: str, context: Context) -> None:
        value = into(text)
        test(resource["resourceType"], value, text)
        put(resource, value)

    return put_value


def _made(target: Target, make: Callable[[str, str], Any]) -> Put | None:
    """A kind writing ``make(system, text)`` at the path; None when the system names the
    facility (it is then read for each visit)."""
    uri = str(target.option("system", ""))
    if "{facility}" in uri:
        return None
    put, test = setter(target.path), lexical.tester(target)

    def put_made(resource: Resource, text: str, context: Context) -> None:
        value = make(uri, text)
        test(resource["resourceType"], value, text)
        put(resource, value)

    return put_made


def _compiled(target: Target) -> Put | None:
    kind, code = target.kind, _coder(target)
    if kind == "text":
        template = target.option("format")
        return _converting(target, template.format if template else str)
    if kind in ("integer", "decimal", "date", "datetime"):
        into = {"integer": _integer, "decimal": values.number_from_xml,
                "date": values.date_from_xml, "datetime": values.datetime_from_xml}[kind]
        return _converting(target, into)
    if kind == "lookup":
        return _converting(target, code)
    if kind == "identifier":
        return _made(target, lambda uri, text: {"system": uri, "value": text})
    if kind in ("coding", "concept") and not target.option("display"):
        wrap = (lambda c: c) if kind == "coding" else (lambda c: {"coding": [c]})
        return _made(target, lambda uri, text: wrap({"system": uri, "code": code(text)}))
    return None


def compile_put(target: Target) -> Put:
    """The target's ``put`` as one function of the value, its path and options read once:
    what ``KINDS[target.kind].put(resource, target, text, context)`` does, with the structural
    check's test of each value it writes (``lexical``: ``ValueError`` for a value R4
    refuses)."""
    compiled = _compiled(target)  # tests the value it writes itself
    if compiled is not None:
        return compiled
    put = KINDS[target.kind].put
    return lexical.checked(lambda resource, text, context: put(resource, target, text, context),
                           target)

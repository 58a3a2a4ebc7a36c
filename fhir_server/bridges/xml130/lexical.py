"""Each value the route writes, checked as it is written with the structural checker's tests.

The tables and kinds fix which elements a visit's resources have and how they nest; a field's
text still decides each value's lexical form (a code with two inner spaces, a date the
calendar lacks, a facility code with a space inside a system URI). :func:`checked` wraps a
target's ``put``: after writing, it tests what the put wrote with the very test
``elements.check_structure`` makes of that element (``elements.value_check``: type, lexical
form, members, cardinality inside the value, required bindings, narrative), and raises
``ValueError`` with the checker's text. The engine reports it at the field
(``XML2[3].LIEU_DUNG``, ``MSG_XML130_VALUE``, Vietnamese and English) and the visit is
refused before its transaction. The required top-level elements of each resource (a
required element whose field was empty) are checked once the Bundle is built
(``visits._required``).

This is what lets the visit's transaction skip ``check_structure`` for the resources the
route built (``fhir_server.conformance.built``); the proof is the differential test
``tests/unit/bridges/test_xml130_lexical.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson

from fhir_server.bridges.xml130.paths import parse, read
from fhir_server.bridges.xml130.tables import Target
from fhir_server.conformance import primitives, structure
from fhir_server.conformance.elements import primitive_of, value_check
from fhir_server.errors import Issue

__all__ = ["Known", "Test", "checked", "plain_div", "proven_valid", "section_checked", "tester",
           "valid_uri"]

Resource = dict[str, Any]
Put = Callable[[Resource, str, Any], None]
#: Where a kind writes when not (only) at its target's path: (path, the last item only).
_WRITES: dict[str, tuple[tuple[str, bool], ...]] = {
    "person_id": (("identifier", False),),
    "birth": (("birthDate", False), ("_birthDate", False)),
    "day": (("start", False), ("end", False)),
    "moment": (("start", False), ("end", False)),
    "result_value": (("valueQuantity", False), ("valueString", False)),
    "unit": (("valueQuantity", False), ("note", False)),
    "section": (("section", True),),
}


def _spots(target: Target) -> tuple[tuple[str, bool], ...]:
    return _WRITES.get(target.kind) or ((target.path, False),)


@cache
def _test(resource_type: str, names: tuple[str, ...],
          item: bool) -> Callable[[Any], list[Issue]]:
    """The checker's test of the value at ``names`` (one item of it when ``item``)."""
    return value_check(resource_type, names, item)


Test = Callable[[str, Any, str], None]


#: Kinds whose written value depends on more than the field's text (another field, what the
#: resource holds already): their checks are never remembered.
_CONTEXTUAL = frozenset({"person_id", "unit", "address"})
_KNOWN_MAX = 4096


class Known:
    """The (resource type, text) pairs of one target whose written value passed its test:
    the same text writes the same value, so it is not tested again (bounded; a hospital's
    codes, doctors and labels repeat from visit to visit)."""

    __slots__ = ("pairs",)

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return pair in self.pairs

    def add(self, pair: tuple[str, str]) -> None:
        if len(self.pairs) >= _KNOWN_MAX:
            self.pairs.clear()
        self.pairs.add(pair)


#: Kinds whose every value is valid for the R4 primitive types named, whatever the field's
#: text: ``values.date_from_xml`` writes ``date.isoformat()`` of a real day and
#: ``values.datetime_from_xml`` that day with a real time of day, seconds ``00`` and
#: ``+07:00``, both only from 8 or 12 ASCII digits (year 0001-9999): R4's date form (also a
#: dateTime), and a dateTime with seconds and zone (also an instant). Proof:
#: ``test_xml130_lexical``, which checks every value the converters give for any text
#: against R4's own tests.
_ALWAYS_VALID = {"date": frozenset({"date", "dateTime"}),
                 "datetime": frozenset({"dateTime", "instant"})}


def proven_valid(kind: str, resource_type: str, path: str) -> bool:
    """Whether every value a ``kind`` writes at ``path`` of a ``resource_type`` passes the
    structural check's test there: the element is a primitive of a type that accepts every
    value of the kind (``_ALWAYS_VALID``), without a required binding, single where the path
    writes one value and repeating where it writes an item."""
    types = _ALWAYS_VALID.get(kind)
    if types is None:
        return False
    steps = parse(path)
    try:
        found = primitive_of(resource_type, tuple(name for name, _ in steps))
    except KeyError:
        return False
    return found is not None and found[0] in types and found[1] == (steps[-1][1] is not None)


def tester(target: Target) -> Test:
    """``test(resource_type, value, text)``: raise ``ValueError`` unless ``value`` (written
    from ``text``) is what the structural check accepts at the target's path (for puts that
    write one value there, a function of the text). Nothing is tested where the kind's
    values are valid there by construction (``proven_valid``)."""
    steps = parse(target.path)
    names, item = tuple(name for name, _ in steps), steps[-1][1] is not None
    known = Known()
    proven: dict[str, bool] = {}

    def test(resource_type: str, value: Any, text: str) -> None:
        skip = proven.get(resource_type)
        if skip is None:
            skip = proven[resource_type] = proven_valid(target.kind, resource_type, target.path)
        if skip or (resource_type, text) in known:
            return
        _raise(_test(resource_type, names, item)(value))
        known.add((resource_type, text))

    return test


def _length(resource: Resource, path: str) -> int:
    found = read(resource, path)
    return len(found) if isinstance(found, list) else 0


#: A narrative ``div`` that is one paragraph of plain text, as ``freetext.section_put``
#: writes it: XML characters only, ``<``, ``>`` and ``&`` escaped (``&amp;``, ``&lt;``,
#: ``&gt;``), some text that is not white space. Such a div is well-formed XHTML holding
#: only a ``div`` and a ``p``: what the narrative rules (txt-1, txt-2) accept. The
#: differential test (``test_xml130_lexical``) checks this against ``elements.value_check``.
_PLAIN_DIV = re.compile(
    r'<div xmlns="http://www\.w3\.org/1999/xhtml"><p>((?:[\t\n\r\x20-\x25\x27-\x3b=\x3f-\ud7ff'
    r'\ue000-\ufffd\U00010000-\U0010ffff]|&amp;|&lt;|&gt;)*)</p></div>')


def plain_div(div: object) -> bool:
    """Whether ``div`` is one paragraph of plain text (``_PLAIN_DIV``) with some text that is
    not white space: a narrative the structural check accepts whatever the text."""
    found = _PLAIN_DIV.fullmatch(div) if isinstance(div, str) else None
    return found is not None and bool(found.group(1).strip())


def _fixed_part(section: Any) -> bytes | None:
    """A section without its narrative's ``div`` (None when it is not a section with a
    ``text``): the part of a section that the field's text does not change."""
    text = section.get("text") if isinstance(section, dict) else None
    if not isinstance(text, dict):
        return None
    return orjson.dumps({**section, "text": {**text, "div": None}})


def section_checked(put: Put) -> Put:
    """``put`` (of the ``section`` kind: it appends one section) followed by the structural
    checker's test of the section it appended, done in full once per fixed part (title,
    code, narrative status) and resource type; afterwards a section with the same fixed part
    and a plain-text ``div`` (``plain_div``) passes without the test: the fixed part passed
    it already and such a narrative is one the test accepts. Any other section is tested in
    full."""
    passed: set[tuple[str, bytes]] = set()

    def put_section(resource: Resource, text: str, context: Any) -> None:
        put(resource, text, context)
        section = resource["section"][-1]
        kind, fixed = resource["resourceType"], _fixed_part(section)
        if fixed is not None and (kind, fixed) in passed and plain_div(section["text"]["div"]):
            return
        _raise(_test(kind, ("section",), True)(section))
        if fixed is not None and plain_div(section["text"]["div"]):
            if len(passed) >= _KNOWN_MAX:
                passed.clear()
            passed.add((kind, fixed))

    return put_section


def checked(put: Put, target: Target) -> Put:
    """``put`` followed by the structural checker's test of each value it wrote (of the
    items it appended, for a list that had some already); for the ``section`` kind,
    ``section_checked``."""
    if target.kind == "section":
        return section_checked(put)
    spots = [(path, tuple(name for name, _ in parse(path)),
              last or parse(path)[-1][1] is not None) for path, last in _spots(target)]

    known = None if target.kind in _CONTEXTUAL else Known()

    def put_checked(resource: Resource, text: str, context: Any) -> None:
        kind = resource["resourceType"]
        if known is not None and (kind, text) in known:
            put(resource, text, context)
            return
        before = [0 if item else _length(resource, path) for path, _, item in spots]
        put(resource, text, context)
        for (path, names, item), old in zip(spots, before, strict=True):
            value = read(resource, path)
            if old and isinstance(value, list):
                _raise([i for v in value[old:] for i in _test(kind, names, True)(v)])
            elif value is not None:
                _raise(_test(kind, names, item)(value[-1] if item and isinstance(value, list)
                                                else value))
        if known is not None:
            known.add((kind, text))

    return put_checked


def _raise(issues: list[Issue]) -> None:
    if issues:
        raise ValueError(issues[0].diagnostics)


@cache
def _uri() -> primitives.Valid:
    return primitives.validators(structure.load_table("r4_elements.json")["_primitives"])["uri"]


def valid_uri(text: str) -> bool:
    """Whether ``text`` is a valid R4 ``uri`` (a facility's code inside a system URI)."""
    return _uri()(text)

"""The free-text kinds of the mapping tables: labelled notes, Composition sections, and a
result's value and unit (a number with its unit, or a text; a unit without a number is a note).

A labelled note is ``"<label>: <value>"`` in an Annotation (or a string element); a section is
coded with ``<table>.<field>`` in ``xml130-field`` and shows the value in its narrative (dates
as dd/mm/yyyy). Both read back to the same text.
"""

from __future__ import annotations

import html
import re
from datetime import date, datetime
from typing import Any

from fhir_server.bridges.xml130 import values
from fhir_server.bridges.xml130.paths import list_at, read, write
from fhir_server.bridges.xml130.tables import Target

__all__ = [
    "note_get",
    "note_put",
    "result_get",
    "result_put",
    "section_get",
    "section_put",
    "unit_get",
    "unit_put",
]

Resource = dict[str, Any]
_FIELD_SYSTEM = "https://fhir.sskdt.vn/CodeSystem/xml130-field"
_DIV = re.compile(r'^<div xmlns="http://www.w3.org/1999/xhtml"><p>(.*)</p></div>$', re.S)


def note_put(resource: Resource, target: Target, text: str, context: Any) -> None:
    """Append ``label: text`` to the notes at the target's path (or set a string)."""
    line = f"{target.option('label')}: {text}"
    if target.path == "comment":
        write(resource, target.path, line)
        return
    list_at(resource, target.path).append({"text": line})


def note_get(resource: Resource, target: Target, context: Any) -> str | None:
    """The text of the note that carries the target's label."""
    prefix = f"{target.option('label')}: "
    found = read(resource, target.path)
    texts = [found] if isinstance(found, str) else [n.get("text", "") for n in found or []]
    return next((t[len(prefix):] for t in texts if t.startswith(prefix)), None)


def _shown(kind: str | None, text: str) -> str:
    if kind == "date":
        return date.fromisoformat(values.date_from_xml(text)).strftime("%d/%m/%Y")
    if kind == "datetime":
        return datetime.fromisoformat(values.datetime_from_xml(text)).strftime("%H:%M %d/%m/%Y")
    return text


def _unshown(kind: str | None, text: str) -> str:
    if kind == "date":
        return datetime.strptime(text, "%d/%m/%Y").strftime("%Y%m%d")
    if kind == "datetime":
        return datetime.strptime(text, "%H:%M %d/%m/%Y").strftime("%Y%m%d%H%M")
    return text


def section_put(resource: Resource, target: Target, text: str, context: Any) -> None:
    """Append a section coded with the field and showing its value."""
    shown = html.escape(_shown(target.option("format"), text), quote=False)
    code = {"system": _FIELD_SYSTEM, "code": f"{context.table}.{context.field}"}
    list_at(resource, "section").append({
        "title": target.option("label"), "code": {"coding": [code]},
        "text": {"status": "additional",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{shown}</p></div>'},
    })


def section_get(resource: Resource, target: Target, context: Any) -> str | None:
    """The value the field's section shows."""
    code = f"{context.table}.{context.field}"
    for section in resource.get("section") or []:
        coding = ((section.get("code") or {}).get("coding") or [{}])[0]
        if coding.get("system") == _FIELD_SYSTEM and coding.get("code") == code:
            match = _DIV.match((section.get("text") or {}).get("div", ""))
            return _unshown(target.option("format"), html.unescape(match.group(1))) \
                if match else None
    return None


def result_put(resource: Resource, target: Target, text: str, context: Any) -> None:
    """A number as ``valueQuantity.value``, anything else as ``valueString``."""
    try:
        resource.setdefault("valueQuantity", {})["value"] = values.number_from_xml(text)
    except ValueError:
        resource.pop("valueQuantity", None)
        resource["valueString"] = text


def result_get(resource: Resource, target: Target, context: Any) -> str | None:
    """The result's value as text."""
    quantity = resource.get("valueQuantity") or {}
    if "value" in quantity:
        return values.number_to_xml(quantity["value"])
    return resource.get("valueString")


def unit_put(resource: Resource, target: Target, text: str, context: Any) -> None:
    """The quantity's unit, or a labelled note when the value is not a number."""
    if "valueQuantity" in resource:
        resource["valueQuantity"]["unit"] = text
    else:
        note_put(resource, Target(target.roles, "note", "note", target.options), text, context)


def unit_get(resource: Resource, target: Target, context: Any) -> str | None:
    """The unit back."""
    unit = (resource.get("valueQuantity") or {}).get("unit")
    note = Target(target.roles, "note", "note", target.options)
    return str(unit) if unit is not None else note_get(resource, note, context)

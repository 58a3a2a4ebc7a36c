"""The NDJSON lines of an export: a stored resource as it is (its stored bytes, no parse), or
cut to the ``_elements`` asked (with the mandatory elements, and tagged SUBSETTED so that it
is never taken for the whole resource), and the header line of a patient's block in output
organized by patient (the IG's ``organizeOutputBy``)."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server import decimals
from fhir_server.conformance import structure
from fhir_server.storage.port import StoredResource

__all__ = ["Lines", "block_header"]

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


class Lines:
    """Turns stored resources into NDJSON lines, cut to ``elements`` when there are some
    (``Type.element`` for one type, ``element`` for every type)."""

    def __init__(self, elements: tuple[str, ...]) -> None:
        self.elements = elements
        self._kept: dict[str, frozenset[str]] = {}

    def _kept_of(self, kind: str) -> frozenset[str]:
        if kind not in self._kept:
            named = {e.rpartition(".")[2] for e in self.elements
                     if "." not in e or e.startswith(f"{kind}.")}
            self._kept[kind] = frozenset(named) | structure.mandatory_elements(kind) | _ALWAYS
        return self._kept[kind]

    def line(self, stored: StoredResource) -> bytes:
        """The line of one resource."""
        if not self.elements:
            return stored.content + b"\n"
        resource = stored.resource()
        kept = self._kept_of(stored.resource_type)
        cut: dict[str, Any] = {k: v for k, v in resource.items() if k in kept}
        meta = dict(cut.get("meta") or {})
        meta["tag"] = [*meta.get("tag", []), SUBSETTED]
        cut["meta"] = meta
        return decimals.dumps(cut) + b"\n"


def block_header(patient: str) -> bytes:
    """The line that opens a patient's block: a Parameters naming the Patient."""
    header = {"resourceType": "Parameters", "parameter": [
        {"name": "header", "valueReference": {"reference": f"Patient/{patient}"}}]}
    return orjson.dumps(header) + b"\n"

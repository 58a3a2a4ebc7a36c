"""The order ``fhir-server load``/``import`` stores things in, so that references resolve.

Referential integrity (``Settings.referential_integrity``) refuses a resource whose local
references name nothing stored yet. A folder of NDJSON files named after their types (a bulk
export's ``Patient-1.ndjson``...) is loaded in an order where what is referred to usually
comes first: the types outside a patient's record (Organization, Practitioner, Medication,
terminology...), then Patient, then Encounter, then the rest. What still refers to something
not stored yet (a type referring to a later one, an Encounter that is ``partOf`` a later one)
waits in a temporary file (``Deferred``) and is loaded again after everything else, pass
after pass while each pass stores something. What still waits then refers in a cycle
(an Encounter's ``diagnosis`` and its Condition's ``encounter``: written in one transaction
Bundle, they cannot be stored one at a time): the items whose references are all stored or
among the waiting ones (``resolvable``) are stored together without the check, which holds
once they all are; the others are rejected.

A stored resource's Vietnamese addresses carry the date the server read them on (the
``readOn`` of ``address-current-units``); loaded again, a resource is read on that date, not
today, so that it is stored as it was (``read_on``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from fhir_server.geography.addresses import CURRENT, addresses_of
from fhir_server.resources import resource_types
from fhir_server.search.indexing import compartment_types

__all__ = ["Deferred", "load_order", "read_on", "resolvable"]

#: Loaded first after the types outside any compartment, in this order.
_EARLY = ("Patient", "Encounter")


def load_order(path: Path) -> tuple[int, str]:
    """The sort key of a file of a folder: its type's rank (from the name's part before the
    first ``-`` or ``.``), then its name."""
    kind = path.name.split("-", 1)[0].split(".", 1)[0]
    if kind not in resource_types():
        rank = len(_EARLY) + 1
    elif kind not in compartment_types():
        rank = 0
    else:
        rank = _EARLY.index(kind) + 1 if kind in _EARLY else len(_EARLY) + 1
    return rank, path.name


class Deferred:
    """Items waiting for what they refer to: (where it came from, its JSON) in a temporary
    NDJSON file, so that memory stays bounded however many wait."""

    def __init__(self, folder: str | None = None) -> None:
        descriptor, name = tempfile.mkstemp(prefix="deferred-", suffix=".ndjson", dir=folder)
        self.path = name
        self._handle = os.fdopen(descriptor, "wb")
        self.count = 0

    def add(self, where: str, item: bytes) -> None:
        """Keep one item (its JSON on one line) for a later pass."""
        self._handle.write(orjson.dumps(where) + b"\n" + item.strip() + b"\n")
        self.count += 1

    def close(self) -> str:
        """Stop adding; return the file's path."""
        self._handle.close()
        return self.path

    @staticmethod
    def items(path: str) -> Iterator[tuple[str, bytes]]:
        """The items a deferred file holds, in the order they were added."""
        with open(path, "rb") as handle:
            while where := handle.readline():
                yield orjson.loads(where), handle.readline()


Key = tuple[str, str]


def resolvable(targets: Mapping[Key, Collection[Key]], stored: Collection[Key]) -> set[Key]:
    """The waiting items (their ``Type/id`` keys, with the keys they refer to) that can all be
    stored together: each refers only to what is ``stored`` or to another of them. An item
    that refers to anything else is left out, and so, in turn, is whatever refers to it."""
    kept = set(targets)
    while True:
        dropped = {key for key in kept
                   if any(t not in kept and t not in stored for t in targets[key])}
        if not dropped:
            return kept
        kept -= dropped


def read_on(resource: dict[str, Any]) -> date | None:
    """The date the server read the resource's addresses on when it stored it (None: it
    recorded none, or the resource has no address)."""
    for address in addresses_of(resource):
        for extension in address.get("extension", ()):
            if isinstance(extension, dict) and extension.get("url") == CURRENT:
                for part in extension.get("extension", ()):
                    if part.get("url") == "readOn":
                        try:
                            return date.fromisoformat(str(part.get("valueDate")))
                        except ValueError:
                            return None
    return None

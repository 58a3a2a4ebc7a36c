"""The MongoDB index specifications the store creates at ``open()``, one per query it serves.

Each entry is ``(collection, keys, options)`` exactly as passed to ``create_index``, so tests
assert them and ``docs/mongodb.md`` lists them with their queries. MongoDB cannot build a
compound index over two arrays of one document, so every compound index below combines
scalar fields (``pk``, ``type``, ``lastUpdated``) with at most one array of the ``idx``
sub-document (``idx.tokens``, ``idx.dates``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["INDEXES", "IndexSpec"]


@dataclass(frozen=True)
class IndexSpec:
    """One index: its collection, ordered key fields with direction, and options."""

    collection: str
    keys: tuple[tuple[str, int], ...]
    options: tuple[tuple[str, Any], ...]
    serves: str

    def create_args(self) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        """Return the positional keys and keyword options of ``create_index``."""
        return list(self.keys), dict(self.options)


def _spec(
    collection: str, name: str, keys: tuple[tuple[str, int], ...], serves: str, **options: Any
) -> IndexSpec:
    return IndexSpec(collection, keys, (("name", name), *sorted(options.items())), serves)


INDEXES: tuple[IndexSpec, ...] = (
    _spec(
        "resources",
        "type_lastUpdated",
        (("type", 1), ("lastUpdated", 1)),
        "search by type sorted or filtered by _lastUpdated; scan of one type",
    ),
    _spec(
        "resources",
        "type_rid",
        (("type", 1), ("rid", 1)),
        "search by type in the default order, keyset pages (rid > n)",
    ),
    _spec(
        "resources",
        "type_date",
        (("type", 1), ("idx.sd.date", -1), ("rid", 1)),
        "_sort=-date over a whole type (Encounter?_sort=-date, Observation?code=X&_sort=-date): "
        "the page read newest first, as the embedded store walks its date index",
    ),
    _spec(
        "resources",
        "token",
        (("idx.tokens.p", 1), ("idx.tokens.c", 1), ("idx.tokens.s", 1)),
        "identifier=system|value (conditional create of Patient by CCCD), code=...",
    ),
    _spec(
        "resources",
        "patient_type_code",
        (("pk", 1), ("type", 1), ("idx.tokens.p", 1), ("idx.tokens.c", 1)),
        "Observation?patient=X&code=Y inside one health book",
    ),
    _spec(
        "resources",
        "patient_type_date",
        (("pk", 1), ("type", 1), ("idx.dates.p", 1), ("idx.dates.lo", 1)),
        "Encounter?patient=X&date=ge2026 inside one health book",
    ),
    _spec(
        "resources",
        "compartment_type",
        (("idx.compartments", 1), ("type", 1), ("rid", 1)),
        "Patient/X/$everything, compartment searches in the default order, patient=X",
    ),
    _spec(
        "resources",
        "reference",
        (("idx.references.i", 1), ("idx.references.t", 1), ("idx.references.p", 1)),
        "reference searches and _revinclude",
    ),
    _spec(
        "resources",
        "string",
        (("idx.strings.p", 1), ("idx.strings.f", 1)),
        "name=nguyen (folded starts-with, a prefix range on the index)",
    ),
    _spec(
        "resources",
        "consent_actor",
        (("idx.grants.a", 1), ("idx.grants.sc", 1)),
        "the Consent grants naming a clinician or facility (MongoStore.resolve)",
        sparse=True,
    ),
    _spec(
        "resources",
        "consent_patient",
        (("idx.grants.pt", 1),),
        "the Consent grants of the patients a resource belongs to (single reads)",
        sparse=True,
    ),
    _spec(
        "versions",
        "instance_version",
        (("type", 1), ("id", 1), ("version", 1)),
        "vread and instance history; no two writers store one version",
        unique=True,
    ),
    _spec("versions", "seq", (("seq", -1),), "system history newest first", unique=True),
    _spec("versions", "type_seq", (("type", 1), ("seq", -1)), "type history newest first"),
    _spec("versions", "lastUpdated", (("lastUpdated", 1),), "history _since and _at"),
    _spec("subscription_state", "changed", (("changed", 1),),
          "the subscriptions changed since a worker last looked"),
    _spec("subscription_state", "next_attempt", (("next_attempt", 1),),
          "subscriptions whose next delivery attempt is due"),
    _spec("subscription_events", "subscription_number", (("subscription", 1), ("number", 1)),
          "a subscription's events in order ($events, delivery)", unique=True),
    _spec("subscription_events", "created", (("created", 1),), "purge of old events"),
)
"""Every index the store needs; ``_id`` indexes exist without being listed."""

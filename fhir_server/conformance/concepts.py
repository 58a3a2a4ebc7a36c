"""The concepts of the terminology service: what a code means, as the service answers it.

A :class:`Concept` is one code of a CodeSystem with its display, designations and properties;
a :class:`Translation` one target of a ConceptMap; a :class:`ValidationResult` the answer of
``$validate-code``. :class:`CanonicalIndex` holds conformance resources by canonical URL, with
``|version`` or, without one, the last loaded version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "CanonicalIndex",
    "Concept",
    "ConceptProperty",
    "Designation",
    "Resource",
    "Translation",
    "ValidationResult",
    "concept_of",
    "flatten",
    "split_canonical",
]

Resource = dict[str, Any]


@dataclass(frozen=True)
class Designation:
    """One CodeSystem.concept.designation: language and text (``use`` is not kept)."""

    value: str
    language: str | None = None


@dataclass(frozen=True)
class ConceptProperty:
    """One concept property; ``value_type`` is the ``value[x]`` suffix (Boolean, String...)."""

    code: str
    value_type: str
    value: Any


@dataclass(frozen=True)
class Concept:
    """A code with its system: what $lookup returns and what $expand lists."""

    system: str
    code: str
    display: str | None = None
    version: str | None = None
    definition: str | None = None
    designations: tuple[Designation, ...] = ()
    properties: tuple[ConceptProperty, ...] = ()


@dataclass(frozen=True)
class Translation:
    """One ConceptMap target for a source code; ``concept`` is None when unmatched."""

    equivalence: str
    concept: Concept | None
    source: str
    comment: str | None = None


class ValidationResult(NamedTuple):
    """Outcome of $validate-code: ``result`` and, when false, why."""

    result: bool
    message: str


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """Return (url, version) of a canonical reference ``url|version``."""
    url, _, version = canonical.partition("|")
    return url, version or None


class CanonicalIndex:
    """Resources of one type by canonical URL and version."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[str | None, Resource]] = {}
        self._latest: dict[str, Resource] = {}

    def add(self, resource: Resource) -> None:
        """Index ``resource`` under its url and version; it becomes the url's default."""
        url = resource["url"]
        self._versions.setdefault(url, {})[resource.get("version")] = resource
        self._latest[url] = resource

    def get(self, canonical: str) -> Resource | None:
        """Return the resource for ``url`` or ``url|version``, or None."""
        url, version = split_canonical(canonical)
        if version is None:
            return self._latest.get(url)
        return self._versions.get(url, {}).get(version)

    def __contains__(self, canonical: object) -> bool:
        return isinstance(canonical, str) and self.get(canonical) is not None

    def __iter__(self) -> Iterator[Resource]:
        return iter(self._latest.values())

    def __len__(self) -> int:
        return len(self._latest)


def concept_of(system: str, version: str | None, raw: Resource) -> Concept:
    """Return a Concept from a CodeSystem.concept JSON object."""
    designations = tuple(
        Designation(d["value"], d.get("language")) for d in raw.get("designation", ())
    )
    properties = tuple(property_of(p) for p in raw.get("property", ()))
    return Concept(
        system, raw["code"], raw.get("display"), version, raw.get("definition"),
        designations, properties,
    )  # fmt: skip


def property_of(raw: Resource) -> ConceptProperty:
    """Return a ConceptProperty from its JSON (the one ``value[x]`` key)."""
    key = next(k for k in raw if k.startswith("value"))
    return ConceptProperty(raw["code"], key.removeprefix("value"), raw[key])


def flatten(raw_concepts: Iterable[Resource]) -> Iterator[Resource]:
    """Yield every concept of a (possibly nested) CodeSystem.concept tree."""
    for raw in raw_concepts:
        yield raw
        yield from flatten(raw.get("concept", ()))

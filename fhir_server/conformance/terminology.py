"""The terminology service: CodeSystems, ValueSets and ConceptMaps held in memory.

Backs ``CodeSystem/$lookup``, ``ValueSet/$expand``, ``ValueSet/$validate-code`` and
``ConceptMap/$translate`` (FHIR R4 terminology service,
https://hl7.org/fhir/R4/terminology-service.html). The resources are read once from a folder of
JSON files (by default the project's ``terminology/``). Canonical URLs may carry ``|version``;
without one, the last loaded version of a URL is used.

Expansion filter (``$expand?filter=``), case- and accent-insensitive through
:func:`fhir_server.folding.fold`: every word of the filter must be the **start of a word** of the
concept's display or of one of its designations (``ha noi`` finds "Thành phố Hà Nội", ``kinh``
finds "Kinh"), or the whole filter must be a prefix of the code. Words are split on anything that
is not a letter or digit, so ``kho`` finds "Khơ-me".

ValueSet.compose filters: ``=`` and ``in`` (comma-separated values) on a concept property or on
``code`` (``ValueSet/commune-of-08`` is CodeSystem commune filtered on ``province = 08``); other
operators answer NotSupported. A ValueSet given inline (``$expand`` with a ``valueSet``
parameter) is expanded the same way. Concept tables are built on the first use of a code system.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from fhir_server.conformance.concepts import (
    CanonicalIndex,
    Concept,
    Resource,
    Translation,
    ValidationResult,
    concept_of,
    flatten,
    split_canonical,
)
from fhir_server.errors import BadRequest, NotFound, NotSupported
from fhir_server.folding import fold

__all__ = ["Terminology", "default_terminology"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "terminology"
_WORD = re.compile(r"[^0-9a-z]+")


@functools.lru_cache(maxsize=8192)
def _words(text: str) -> tuple[str, ...]:
    """Return the folded words of ``text`` (cached: displays are matched on every $expand)."""
    return tuple(word for word in _WORD.split(fold(text)) if word)


def _matches(concept: Concept, words: tuple[str, ...], folded: str) -> bool:
    """True if the folded filter ``words`` all start a word of the concept, or prefix its code."""
    if fold(concept.code).startswith(folded):
        return True
    texts = [concept.display or "", *(d.value for d in concept.designations)]
    targets = {word for text in texts for word in _words(text)}
    return all(any(t.startswith(w) for t in targets) for w in words)


class Terminology:
    """CodeSystems, ValueSets and ConceptMaps with the four terminology operations."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.code_systems = CanonicalIndex()
        self.value_sets = CanonicalIndex()
        self.concept_maps = CanonicalIndex()
        self._indexes = {
            "CodeSystem": self.code_systems,
            "ValueSet": self.value_sets,
            "ConceptMap": self.concept_maps,
        }
        self._concepts: dict[int, dict[str, Concept]] = {}
        self._expansions: dict[int, tuple[Concept, ...]] = {}
        for resource in resources:
            self.add(resource)

    @classmethod
    def from_directory(cls, directory: Path | str | None = None) -> Terminology:
        """Load every ``*.json`` CodeSystem, ValueSet and ConceptMap in ``directory``."""
        folder = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        files = sorted(folder.glob("*.json"))
        return cls(orjson.loads(path.read_bytes()) for path in files)

    def add(self, resource: Resource) -> None:
        """Add one terminology resource; other resource types are ignored."""
        index = self._indexes.get(resource.get("resourceType", ""))
        if index is None or "url" not in resource:
            return
        index.add(resource)
        self._expansions.clear()

    def concepts(self, code_system: Resource) -> dict[str, Concept]:
        """The code -> Concept table of a loaded CodeSystem, built on first use (the large
        geography code systems cost more to build than every other one to load)."""
        table = self._concepts.get(id(code_system))
        if table is None:
            url, version = code_system["url"], code_system.get("version")
            fold_case = code_system.get("caseSensitive") is False
            table = {}
            for raw in flatten(code_system.get("concept", ())):
                code = raw["code"].casefold() if fold_case else raw["code"]
                table[code] = concept_of(url, version, raw)
            self._concepts[id(code_system)] = table
        return table

    def code_system(self, canonical: str) -> Resource:
        """Return the CodeSystem; raise NotFound (MSG_UNKNOWN_CODESYSTEM) if unknown."""
        found = self.code_systems.get(canonical)
        if found is None:
            raise NotFound(f"Unknown CodeSystem '{canonical}'", message_id="MSG_UNKNOWN_CODESYSTEM")
        return found

    def value_set(self, canonical: str) -> Resource:
        """Return the ValueSet; raise NotFound (MSG_UNKNOWN_VALUESET) if unknown."""
        found = self.value_sets.get(canonical)
        if found is None:
            raise NotFound(f"Unknown ValueSet '{canonical}'", message_id="MSG_UNKNOWN_VALUESET")
        return found

    def concept_map(self, canonical: str) -> Resource:
        """Return the ConceptMap; raise NotFound (MSG_UNKNOWN_CONCEPTMAP) if unknown."""
        found = self.concept_maps.get(canonical)
        if found is None:
            raise NotFound(f"Unknown ConceptMap '{canonical}'", message_id="MSG_UNKNOWN_CONCEPTMAP")
        return found

    def lookup(self, system: str, code: str, version: str | None = None) -> Concept | None:
        """$lookup: return the concept ``code`` of ``system`` (``url|version`` allowed), or None.

        Raises NotFound (MSG_UNKNOWN_CODESYSTEM) when the code system is not loaded.
        """
        canonical = f"{system}|{version}" if version and "|" not in system else system
        code_system = self.code_system(canonical)
        key = code.casefold() if code_system.get("caseSensitive") is False else code
        return self.concepts(code_system).get(key)

    def expand(
        self,
        valueset_url: str,
        filter: str | None = None,
        offset: int = 0,
        count: int | None = None,
    ) -> list[Concept]:
        """$expand: return the value set's concepts matching ``filter``, paged.

        Raises NotFound (MSG_UNKNOWN_VALUESET / MSG_UNKNOWN_CODESYSTEM) for unknown canonicals,
        NotSupported for compose filters, BadRequest for a negative offset or count.
        """
        return self.expand_value_set(self.value_set(valueset_url), filter, offset, count)

    def expand_value_set(
        self,
        value_set: Resource,
        filter: str | None = None,
        offset: int = 0,
        count: int | None = None,
    ) -> list[Concept]:
        """$expand of a ValueSet resource (loaded, or given inline in the request)."""
        if offset < 0 or (count is not None and count < 0):
            raise BadRequest("offset and count must not be negative", message_id="MSG_BAD_PAGING")
        concepts: Iterable[Concept] = self._expansion(value_set, frozenset())
        if filter and filter.strip():
            words, folded = _words(filter), fold(filter.strip())
            concepts = [c for c in concepts if _matches(c, words, folded)]
        concepts = list(concepts)
        end = None if count is None else offset + count
        return concepts[offset:end]

    def _expansion(self, value_set: Resource, seen: frozenset[str]) -> tuple[Concept, ...]:
        """Return every concept of ``value_set`` in compose order (cached for loaded ones)."""
        url = value_set.get("url", "")
        if self.value_sets.get(url) is not value_set:  # inline: not cached
            return self._compose(value_set, seen | {url})
        key = id(value_set)
        if key not in self._expansions:
            if url in seen:
                raise NotSupported(f"ValueSet '{url}' includes itself")
            self._expansions[key] = self._compose(value_set, seen | {url})
        return self._expansions[key]

    def _compose(self, value_set: Resource, seen: frozenset[str]) -> tuple[Concept, ...]:
        """Apply ValueSet.compose (or return a stored expansion) in order, without duplicates."""
        compose = value_set.get("compose")
        if compose is None:
            raw = value_set.get("expansion", {}).get("contains", ())
            return tuple(Concept(c["system"], c["code"], c.get("display")) for c in raw)
        chosen: dict[tuple[str, str], Concept] = {}
        for include in compose.get("include", ()):
            for concept in self._include(include, seen):
                chosen.setdefault((concept.system, concept.code), concept)
        for exclude in compose.get("exclude", ()):
            for concept in self._include(exclude, seen):
                chosen.pop((concept.system, concept.code), None)
        return tuple(chosen.values())

    def _include(self, include: Resource, seen: frozenset[str]) -> list[Concept]:
        """Return the concepts one compose.include (or exclude) selects."""
        selected = self._from_system(include) if "system" in include else None
        if selected is not None and include.get("filter"):
            selected = [c for c in selected if all(_meets(c, f) for f in include["filter"])]
        for canonical in include.get("valueSet", ()):
            members = self._expansion(self.value_set(canonical), seen)
            if selected is None:
                selected = list(members)
            else:
                keys = {(c.system, c.code) for c in members}
                selected = [c for c in selected if (c.system, c.code) in keys]
        return selected or []

    def _from_system(self, include: Resource) -> list[Concept]:
        """Return the listed codes of include.system, or all of its codes."""
        system, version = include["system"], include.get("version")
        listed = include.get("concept")
        if listed is not None and system not in self.code_systems:
            # An external system (e.g. LOINC) may still be enumerated by the value set.
            return [Concept(system, c["code"], c.get("display"), version) for c in listed]
        canonical = f"{system}|{version}" if version else system
        table = self.concepts(self.code_system(canonical))
        if listed is None:
            return list(table.values())
        return [table[c["code"]] for c in listed if c["code"] in table]

    def validate_code(
        self, valueset_url: str, system: str | None, code: str, display: str | None = None
    ) -> ValidationResult:
        """$validate-code: is ``code`` (of ``system``, if given) in the value set?

        A given ``display`` must equal (ignoring case and outer spaces) the concept's display or
        one of its designations. Raises NotFound (MSG_UNKNOWN_VALUESET) for an unknown value set.
        """
        url = split_canonical(system)[0] if system else None
        members = self._expansion(self.value_set(valueset_url), frozenset())
        found = [c for c in members if c.code == code and url in (None, c.system)]
        if not found:
            return ValidationResult(False, self._not_in_value_set(valueset_url, url, code))
        if display is None or _display_matches(found[0], display):
            return ValidationResult(True, "")
        expected = found[0].display or ""
        return ValidationResult(
            False, f"Display '{display}' is wrong for code '{code}': expected '{expected}'"
        )

    def _not_in_value_set(self, valueset_url: str, system: str | None, code: str) -> str:
        """Explain why a code is not valid; a fragment code system may lack the code."""
        message = f"Code '{code}' of system '{system or '?'}' is not in value set '{valueset_url}'"
        code_system = self.code_systems.get(system) if system else None
        if code_system is not None and code_system.get("content") == "fragment":
            message += " (the code system is only a fragment; the code may still exist)"
        return message

    def translate(
        self,
        system: str,
        code: str,
        *,
        url: str | None = None,
        source: str | None = None,
        target: str | None = None,
    ) -> list[Translation]:
        """$translate: map ``code`` of ``system`` with the ConceptMap ``url``, or with every map
        whose source value set is ``source`` and whose target (value set or system) is ``target``.

        Raises NotFound (MSG_UNKNOWN_CONCEPTMAP) for an unknown ``url``.
        """
        maps = [self.concept_map(url)] if url else self._maps_from(source)
        system_url = split_canonical(system)[0]
        return [
            match
            for concept_map in maps
            for group in concept_map.get("group", ())
            if group.get("source") == system_url and _aims_at(concept_map, group, target)
            for match in _translations(concept_map, group, code)
        ]

    def _maps_from(self, source: str | None) -> list[Resource]:
        """Return the ConceptMaps whose source value set is ``source`` (all when None)."""
        return [
            m
            for m in self.concept_maps
            if source in (None, m.get("sourceCanonical"), m.get("sourceUri"))
        ]


def _aims_at(concept_map: Resource, group: Resource, target: str | None) -> bool:
    """True if ``target`` (value set or code system) is None or the group's/map's target."""
    value_set = concept_map.get("targetCanonical") or concept_map.get("targetUri")
    return target is None or target in (group.get("target"), value_set)


def _translations(concept_map: Resource, group: Resource, code: str) -> Iterator[Translation]:
    """Yield the targets of ``code`` in one ConceptMap.group."""
    for element in group.get("element", ()):
        if element.get("code") != code:
            continue
        for target in element.get("target", ()):
            concept = None
            if "code" in target:
                concept = Concept(
                    group.get("target", ""), target["code"], target.get("display"),
                    group.get("targetVersion"),
                )  # fmt: skip
            yield Translation(
                target["equivalence"], concept, concept_map["url"], target.get("comment")
            )


_FILTER_OPS = ("=", "in")


def _meets(concept: Concept, rule: Resource) -> bool:
    """Does ``concept`` meet one ValueSet.compose filter (``=`` or ``in`` on a property, or on
    ``code``)? Other operators answer NotSupported (MSG_FILTER_NOT_SUPPORTED)."""
    op, name, value = rule.get("op"), rule.get("property"), str(rule.get("value", ""))
    if op not in _FILTER_OPS:
        raise NotSupported(f"ValueSet.compose filter operator '{op}' is not supported "
                           "(only = and in on a property)", message_id="MSG_FILTER_NOT_SUPPORTED")
    wanted = {value} if op == "=" else set(value.split(","))
    if name == "code":
        return concept.code in wanted
    return any(p.code == name and str(p.value) in wanted for p in concept.properties)


def _display_matches(concept: Concept, display: str) -> bool:
    """True if ``display`` names the concept (case-insensitive, whole text)."""
    wanted = display.strip().casefold()
    names = [concept.display or "", *(d.value for d in concept.designations)]
    return any(name.casefold() == wanted for name in names)


@functools.cache
def default_terminology() -> Terminology:
    """Return the terminology of the project's ``terminology/`` folder, loaded once."""
    return Terminology.from_directory()

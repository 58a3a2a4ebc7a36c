"""The deployment's sharing rules: what the Consent part of the access policy is configured
with, and the sensitive classes of data labelled when they are written (docs/consent.md).

:class:`SharingRules` holds whether Consent is enforced, the types every clinician and
facility may read without one (the Patient, by default: pushes identify the person by CCCD),
the clients of national operators whose reading needs a ``research`` Consent, how long a
break-the-glass lasts, and the labelling rules. A labelling rule gives a security label
(``meta.security``) to a resource written with one of its codes in a top-level coded element
(``code``, ``category``, ``valueCodeableConcept``...); the labels of the rules are the
sensitive ones, which only a Consent naming them shares. The default rules
(``fhir_server/data/consent/sensitive_labels.json``) label HIV/AIDS, mental health, and
sexual and reproductive health.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LABELS", "LabelRule", "SharingRules", "load_label_rules"]

#: The default labelling rules, in the package.
DEFAULT_LABELS = "data/consent/sensitive_labels.json"


@dataclass(frozen=True)
class LabelRule:
    """Resources with a code of ``system`` equal to one of ``codes`` or starting with one of
    ``prefixes`` (dots ignored) get the security ``label`` (a Coding)."""

    label: dict[str, str]
    system: str
    codes: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def matches(self, system: Any, code: Any) -> bool:
        """Whether a Coding's system and code fall under the rule."""
        if system != self.system or not isinstance(code, str):
            return False
        plain = code.replace(".", "")
        return code in self.codes or plain.startswith(self.prefixes)


@dataclass(frozen=True)
class SharingRules:
    """How Consent governs clinicians and facilities in this deployment (docs/consent.md)."""

    enforced: bool = True
    open_types: frozenset[str] = frozenset({"Patient"})
    secondary_use_clients: frozenset[str] = frozenset()
    break_glass_minutes: int = 60
    elements: tuple[str, ...] = ()
    rules: tuple[LabelRule, ...] = field(default=(), repr=False)

    @classmethod
    def configured(cls, *, enforced: bool = True, open_types: Any = ("Patient",),
                   secondary_use_clients: Any = (), break_glass_minutes: int = 60,
                   labels_file: Path | None = None) -> SharingRules:
        """The rules of a deployment, with the labelling rules of ``labels_file`` (None: the
        default ones)."""
        elements, rules = load_label_rules(labels_file)
        return cls(enforced, frozenset(open_types), frozenset(secondary_use_clients),
                   break_glass_minutes, elements, rules)

    @functools.cached_property
    def sensitive(self) -> frozenset[str]:
        """The sensitive labels (``system|code``): those the labelling rules give."""
        return frozenset(f"{r.label['system']}|{r.label['code']}" for r in self.rules)

    @functools.cached_property
    def _rules_by_system(self) -> dict[str, tuple[int, ...]]:
        """The positions of the labelling rules of each code system, in rule order."""
        found: dict[str, list[int]] = {}
        for position, rule in enumerate(self.rules):
            found.setdefault(rule.system, []).append(position)
        return {system: tuple(positions) for system, positions in found.items()}

    def label(self, resource: dict[str, Any]) -> None:
        """Add to ``meta.security`` the label of every rule one of the resource's codes falls
        under (labels already there stay; none is removed). The codings are read once; each
        is tried against the rules of its own system only."""
        by_system = self._rules_by_system
        if not by_system:
            return
        hits: set[int] = set()
        for coding in _codings(resource, self.elements):
            system = coding.get("system")
            for position in by_system.get(system, ()) if isinstance(system, str) else ():
                if position not in hits and self.rules[position].matches(system,
                                                                         coding.get("code")):
                    hits.add(position)
        if hits:
            _add_labels(resource, [self.rules[p].label for p in sorted(hits)])


def _add_labels(resource: dict[str, Any], found: list[dict[str, str]]) -> None:
    """Add the ``found`` labels the resource's ``meta.security`` does not hold yet."""
    current = resource.get("meta")
    meta: dict[str, Any] = copy.copy(current) if isinstance(current, dict) else {}
    security = list(meta.get("security") or [])
    present = {(s.get("system"), s.get("code")) for s in security if isinstance(s, dict)}
    security += [dict(label) for label in found
                 if (label["system"], label["code"]) not in present]
    meta["security"] = security
    resource["meta"] = meta


def _codings(resource: dict[str, Any], elements: tuple[str, ...]) -> list[dict[str, Any]]:
    """The Codings of the resource's top-level coded elements named by ``elements``."""
    found: list[dict[str, Any]] = []
    for name in elements:
        value = resource.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else (value,):
            codings = item.get("coding") if isinstance(item, dict) else None
            if isinstance(codings, list):
                found.extend(c for c in codings if isinstance(c, dict))
    return found


def load_label_rules(path: Path | None = None) -> tuple[tuple[str, ...], tuple[LabelRule, ...]]:
    """The coded elements looked at and the rules of a labelling file (None: the default)."""
    if path is None:
        text = (resources.files("fhir_server") / DEFAULT_LABELS).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    rules = tuple(
        LabelRule({k: str(v) for k, v in entry["label"].items()}, str(codes["system"]),
                  frozenset(codes.get("codes", ())),
                  tuple(p.replace(".", "") for p in codes.get("prefixes", ())))
        for entry in data.get("labels", ()) for codes in entry.get("codes", ()))
    return tuple(data.get("elements", ())), rules

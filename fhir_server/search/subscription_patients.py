"""The patients a Subscription is about: those its criteria filter on.

A Subscription (R4 subscription.html, and the topic-based form of the Subscriptions Backport
IG) names what it watches in search syntax: ``Subscription.criteria`` (``Encounter?patient=
Patient/123``) or, for a topic, the ``backport-filter-criteria`` extensions of ``criteria``
(``Encounter?patient=Patient/123``, ``patient=Patient/123``, ``Encounter.patient=...``). A
Subscription filtered on a patient is that patient's record: it is in that patient's
compartment (``search.indexing``), so the access policy lets the citizen's own token create,
read and delete it and hides it from everyone else bound to a patient, as it does for any
other resource of the record. The same patients key the server's index of subscriptions.

Only the ``patient`` and ``subject`` parameters count, with a relative ``Patient/[id]`` (or
a bare id for ``patient``), as for references elsewhere in the compartment rule.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

__all__ = ["FILTER_CRITERIA", "criteria_patients", "filter_criteria"]

FILTER_CRITERIA = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
)
_PATIENT_PARAMETERS = frozenset({"patient", "subject"})


def filter_criteria(subscription: dict[str, Any]) -> list[str]:
    """The ``backport-filter-criteria`` strings of a Subscription's ``criteria``."""
    element = subscription.get("_criteria")
    extensions = element.get("extension") if isinstance(element, dict) else None
    return [str(e["valueString"]) for e in extensions or ()
            if isinstance(e, dict) and e.get("url") == FILTER_CRITERIA
            and isinstance(e.get("valueString"), str)]


def _query_of(criteria: str) -> str:
    """The query part of a criteria string (``Type?query``, or a bare ``a=b`` filter)."""
    if "?" in criteria:
        return criteria.split("?", 1)[1]
    return criteria if "=" in criteria else ""


def _patients_in(query: str) -> set[str]:
    found: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        code = name.rsplit(".", 1)[-1]
        if code not in _PATIENT_PARAMETERS:
            continue
        for part in value.split(","):
            if part.startswith("Patient/") and part.count("/") == 1 and len(part) > 8:
                found.add(part[8:])
            elif code == "patient" and part and "/" not in part and ":" not in part:
                found.add(part)
    return found


def criteria_patients(subscription: dict[str, Any]) -> frozenset[str]:
    """The ids of the patients the Subscription's criteria filter on (none: it is about no
    one patient)."""
    texts = filter_criteria(subscription)
    criteria = subscription.get("criteria")
    if isinstance(criteria, str):
        texts.append(criteria)
    found: set[str] = set()
    for text in texts:
        found |= _patients_in(_query_of(text))
    return frozenset(found)

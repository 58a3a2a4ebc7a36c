"""The answer of an import or a conversion: what happened to each visit (``HOSO``).

Each visit is ``created``, ``updated``, ``unchanged`` or ``rejected`` (an import), or
``converted`` or ``rejected`` (a dry run), with its issues: every rejection carries an
OperationOutcome whose issues point at the XML field. The answer is a ``Parameters`` with one
``visit`` part per HOSO; when every visit was rejected the request fails with the first
rejection's status and all issues.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import BadRequest, Conflict, FhirError, Forbidden, Issue, Unprocessable
from fhir_server.outcomes import operation_outcome

__all__ = ["ImportReport", "VisitResult"]

_ERRORS: dict[int, type[FhirError]] = {400: BadRequest, 403: Forbidden, 409: Conflict,
                                       422: Unprocessable}


@dataclass
class VisitResult:
    """What became of one visit."""

    position: int
    ma_lk: str
    outcome: str
    status: int = 200
    issues: list[Issue] = field(default_factory=list)
    encounter: str | None = None
    bundle: dict[str, Any] | None = None
    #: Whether its transaction went through the door (which left the AuditEvent of it).
    audited: bool = False

    @property
    def rejected(self) -> bool:
        """Whether nothing of the visit was (or would be) stored."""
        return self.outcome == "rejected"

    def part(self) -> dict[str, Any]:
        """The ``visit`` parameter of the answer."""
        parts: list[dict[str, Any] | None] = [
            {"name": "hoso", "valueInteger": self.position},
            {"name": "maLk", "valueString": self.ma_lk} if self.ma_lk else None,
            {"name": "outcome", "valueCode": self.outcome},
            {"name": "status", "valueInteger": self.status},
            {"name": "encounter", "valueReference": {"reference": self.encounter}}
            if self.encounter else None,
            {"name": "issues", "resource": operation_outcome(self.issues)} if self.issues else None,
            {"name": "bundle", "resource": self.bundle} if self.bundle else None,
        ]
        return {"name": "visit", "part": [p for p in parts if p is not None]}


@dataclass
class ImportReport:
    """The visits of one envelope, in order."""

    visits: list[VisitResult] = field(default_factory=list)

    @property
    def audited(self) -> bool:
        """Whether every visit's transaction left its own AuditEvent (the import needs none
        of its own then: one AuditEvent per visit)."""
        return bool(self.visits) and all(v.audited for v in self.visits)

    def counts(self) -> Counter[str]:
        """How many visits had each outcome."""
        return Counter(v.outcome for v in self.visits)

    def parameters(self) -> dict[str, Any]:
        """The answer as a ``Parameters`` resource."""
        counts = self.counts()
        summary = [{"name": name, "valueInteger": counts.get(name, 0)}
                   for name in ("created", "updated", "unchanged", "converted", "rejected")]
        return {"resourceType": "Parameters",
                "parameter": [*(v.part() for v in self.visits),
                              {"name": "summary", "part": summary}]}

    def raise_if_all_rejected(self) -> None:
        """Raise the first rejection (with every visit's issues) when no visit got through."""
        if not self.visits or not all(v.rejected for v in self.visits):
            return
        first = self.visits[0]
        issues = [i for v in self.visits for i in _prefixed(v, len(self.visits) > 1)]
        errors = [i for i in issues if i.severity in ("error", "fatal")] or issues
        kind = _ERRORS.get(first.status, BadRequest)
        raise kind(errors[0].diagnostics, message_id=errors[0].message_id, issues=issues)


def _prefixed(visit: VisitResult, several: bool) -> list[Issue]:
    if not several:
        return visit.issues
    label = f"HOSO {visit.position} (MA_LK {visit.ma_lk or '?'})"
    return [Issue(i.severity, i.code, i.message_id, f"{label}: {i.diagnostics}", i.expression)
            for i in visit.issues]

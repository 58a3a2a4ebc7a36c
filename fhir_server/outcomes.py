"""OperationOutcome builders with stable message ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.errors import Issue

__all__ = ["information", "operation_outcome"]


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """Return an OperationOutcome JSON object holding ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(message_id: str, text: str) -> dict[str, Any]:
    """Return an OperationOutcome with one informational issue (for success answers)."""
    return operation_outcome([Issue("information", "informational", message_id, text)])

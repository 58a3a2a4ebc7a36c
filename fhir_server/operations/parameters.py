"""Inputs and outputs of FHIR operations: the ``Parameters`` resource and query strings
(R4 operations.html#request)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["OperationInput", "parameters"]


@dataclass(frozen=True)
class OperationInput:
    """The call of an operation: where (type, id), its scalar parameters and resources, and the
    raw body of the operations that take a document other than FHIR JSON (``RAW_BODY_TYPES``)."""

    resource_type: str | None
    id: str | None
    values: dict[str, list[str]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: bytes | None = None

    def value(self, name: str) -> str | None:
        """Return the first value of parameter ``name``, or None."""
        found = self.values.get(name)
        return found[0] if found else None

    @classmethod
    def from_request(
        cls,
        resource_type: str | None,
        id: str | None,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None,
        raw: bytes | None = None,
    ) -> OperationInput:
        """Merge query parameters and a POSTed body (Parameters, or a bare resource)."""
        values: dict[str, list[str]] = {}
        resources: dict[str, dict[str, Any]] = {}
        for name, value in query:
            values.setdefault(name, []).append(value)
        if body is not None and body.get("resourceType") == "Parameters":
            for parameter in body.get("parameter") or []:
                name = parameter.get("name", "")
                if isinstance(parameter.get("resource"), dict):
                    resources[name] = parameter["resource"]
                for key, value in parameter.items():
                    if key.startswith("value"):
                        values.setdefault(name, []).append(_as_text(value))
        elif body is not None:
            resources["resource"] = body
        return cls(resource_type, id, values, resources, raw)


def _as_text(value: Any) -> str:
    """A parameter value as its query-string form: an Identifier or a Coding as
    ``system|value`` (``system|code``), a Reference as its ``reference``, a boolean as
    ``true``/``false``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        if "reference" in value:
            return str(value["reference"])
        code = value.get("value", value.get("code"))
        if code is not None:
            return f"{value['system']}|{code}" if "system" in value else str(code)
    return str(value)


def parameters(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    """Return a Parameters resource from (name, value[x] suffix, value) triples."""
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, f"value{kind}": value} for name, kind, value in pairs
                      if value is not None],
    }

"""Parse and structurally validate FHIR R4 resources, generically for every resource type.

``parse_json`` turns request bytes into a JSON object (orjson, with a depth limit);
``validate_structure`` checks a resource against the R4 rules: the ``fhir.resources`` R4B
models for structure and types, R4's own element tables for the few R4 types the R4B models
lack, the JSON rules every FHIR resource obeys (no empty strings, arrays or objects, no nulls),
and the required bindings of the base specification. Failures raise ``InvalidResource`` with
one issue per problem, each with the FHIRPath ``expression`` of the offending element.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server.conformance import base_invariants, structure, xhtml
from fhir_server.errors import BadRequest, InvalidResource, Issue, NotFound

__all__ = [
    "ID_PATTERN",
    "is_resource_type",
    "parse_json",
    "resource_types",
    "validate_structure",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_DEPTH = 64


def resource_types() -> frozenset[str]:
    """Return the names of every concrete FHIR R4 resource type."""
    return structure.r4_resource_types()


def is_resource_type(name: str) -> bool:
    """Return True if ``name`` is a FHIR R4 resource type."""
    return name in structure.r4_resource_types()


def require_resource_type(name: str) -> None:
    """Raise ``NotFound`` unless ``name`` is a FHIR R4 resource type."""
    if name not in structure.r4_resource_types():
        raise NotFound(f"Unknown resource type '{name}'", message_id="MSG_UNKNOWN_TYPE")


def parse_json(body: bytes) -> dict[str, Any]:
    """Return the JSON object in ``body``; raise ``BadRequest`` if it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The body is not valid JSON: {exc}", message_id="MSG_JSON_INVALID"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object", message_id="MSG_JSON_OBJECT")
    _check_depth(value, 0)
    return value


def _check_depth(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest("The JSON is nested too deeply", message_id="MSG_JSON_TOO_DEEP")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def validate_structure(resource: dict[str, Any], *, expected_type: str | None = None) -> None:
    """Check ``resource`` against the R4 structure rules; raise ``InvalidResource``.

    ``expected_type`` (from the URL) must equal ``resourceType`` when given.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource(
            "The resource has no resourceType", message_id="MSG_RESOURCE_TYPE_MISSING"
        )
    if expected_type is not None and resource_type != expected_type:
        raise BadRequest(
            f"resourceType '{resource_type}' does not match the URL's type '{expected_type}'",
            message_id="MSG_RESOURCE_TYPE_MISMATCH",
            expression=("resourceType",),
        )
    if not is_resource_type(resource_type):
        raise InvalidResource(
            f"'{resource_type}' is not a FHIR R4 resource type",
            message_id="MSG_UNKNOWN_TYPE",
            expression=("resourceType",),
        )
    issues = _json_rule_issues(resource, resource_type)
    if not issues:
        issues = _model_issues(resource, resource_type)
    if not issues:
        issues = structure.check_required_bindings(resource)
        issues += xhtml.check_narrative(resource)
        # Warnings (dom-6: no narrative, con-3) never make a write fail; only errors are kept.
        issues += [i for i in base_invariants.check_invariants(resource) if i.severity == "error"]
    if issues:
        raise InvalidResource(issues[0].diagnostics, issues=issues)


def _json_rule_issues(value: object, path: str) -> list[Issue]:
    """FHIR JSON forbids nulls (outside primitive-extension arrays), "" , [] and {}."""
    issues: list[Issue] = []
    if isinstance(value, dict):
        if not value:
            issues.append(_empty(path, "object"))
        for key, item in value.items():
            if item is None:
                issues.append(_empty(f"{path}.{key}", "null"))
            else:
                issues.extend(_json_rule_issues(item, f"{path}.{key}"))
    elif isinstance(value, list):
        if not value:
            issues.append(_empty(path, "array"))
        for index, item in enumerate(value):
            if item is not None:
                issues.extend(_json_rule_issues(item, f"{path}[{index}]"))
    elif isinstance(value, str) and not value.strip():
        issues.append(_empty(path, "string"))
    return issues


def _empty(path: str, what: str) -> Issue:
    return Issue(
        "error",
        "structure",
        "MSG_EMPTY_VALUE",
        f"An empty or null {what} is not allowed in FHIR JSON (at {path})",
        (path,),
    )


@cache
def _model_class(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except KeyError:
        return None


def _model_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    model = _model_class(resource_type)
    if model is None:
        return structure.check_r4_only_structure(resource)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_issue_from_pydantic(resource_type, error) for error in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [Issue("error", "structure", "MSG_RESOURCE_INVALID", str(exc), (resource_type,))]
    return []


def _issue_from_pydantic(resource_type: str, error: Any) -> Issue:
    expression = resource_type
    for part in error.get("loc", ()):
        if isinstance(part, int):
            expression += f"[{part}]"
        elif part and not str(part).startswith(("function-", "union")):
            expression += f".{part}"
    kind = error.get("type", "")
    code = "structure" if kind in ("extra_forbidden", "missing") else "value"
    message_id = {
        "extra_forbidden": "MSG_UNKNOWN_ELEMENT",
        "missing": "MSG_REQUIRED_ELEMENT_MISSING",
    }.get(kind, "MSG_VALUE_INVALID")
    text = f"{expression}: {error.get('msg', 'invalid value')}"
    return Issue("error", code, message_id, text, (expression,))

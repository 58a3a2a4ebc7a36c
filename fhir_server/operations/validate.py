"""$validate (R4 resource-operation-validate): check a resource against the base R4 rules
and profiles without storing it. Always answers 200 with an OperationOutcome.

``POST [type]/$validate`` (a resource, or Parameters with ``resource``, ``mode``,
``profile``) and ``[type]/[id]/$validate`` (the stored resource, or one given in the body).
"""

from __future__ import annotations

from typing import Any

from fhir_server.conformance.base_invariants import check_invariants
from fhir_server.conformance.profiles import default_validator
from fhir_server.errors import BadRequest, FhirError, Issue
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read_resource
from fhir_server.operations.parameters import OperationInput
from fhir_server.outcomes import operation_outcome
from fhir_server.resources import validate_structure
from fhir_server.security.policy import Access

__all__ = ["validate_operation", "validate_resource_issues"]

_MODES = {None, "create", "update", "delete", "profile"}


def validate_resource_issues(resource: dict[str, Any], resource_type: str | None,
                             profile: str | None) -> list[Issue]:
    """Return every issue of ``resource``: structure first, then the profiles."""
    try:
        validate_structure(resource, expected_type=resource_type)
    except FhirError as exc:
        return list(exc.issues)
    # Writes keep only invariant errors; $validate also reports the warnings (dom-6...).
    warnings = [i for i in check_invariants(resource) if i.severity == "warning"]
    validator = default_validator()
    if profile:
        return warnings + validator.validate(resource, [profile])
    return warnings + validator.validate_resource(resource)


async def validate_operation(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run $validate; the OperationOutcome lists the issues (or says there are none)."""
    mode = call.value("mode")
    if mode not in _MODES:
        raise BadRequest(f"mode '{mode}' is not one of create, update, delete, profile",
                         message_id="MSG_PARAM_INVALID", expression=("mode",))
    resource = call.resources.get("resource")
    if resource is None and call.id is not None and call.resource_type is not None:
        resource = (await read_resource(services, access, call.resource_type, call.id))
    if resource is None:
        raise BadRequest("$validate needs a resource", message_id="MSG_VALIDATE_NO_RESOURCE")
    if mode == "delete":
        issues: list[Issue] = []
    else:
        issues = validate_resource_issues(resource, call.resource_type, call.value("profile"))
    if not issues:
        issues = [Issue("information", "informational", "MSG_VALIDATION_OK",
                        "No issues found")]
    return Outcome(200, body=operation_outcome(issues))


async def json_schema_operation(
    services: Services, access: Access, call: OperationInput
) -> Outcome:
    """``StructureDefinition/[id]/$json-schema`` or ``?url=``: the profile as JSON Schema."""
    from fhir_server.conformance.schema import json_schema

    url = call.value("url")
    if url is None and call.id is not None:
        url = (await read_resource(services, access, "StructureDefinition", call.id)).get("url")
    if not url:
        raise BadRequest("$json-schema needs url", message_id="MSG_PARAM_MISSING",
                         expression=("url",))
    return Outcome(200, body=json_schema(url))

"""Terminology operations over the Vietnamese code systems held by the server:
``ValueSet/$expand`` (R4 valueset-operation-expand, with an accent-insensitive ``filter`` for
pick lists, of a held ValueSet or one given inline as ``valueSet``), ``CodeSystem/$lookup``
(with the concept's properties) and ``ValueSet/$validate-code``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.conformance.terminology import default_terminology
from fhir_server.errors import BadRequest, NotFound
from fhir_server.interactions.context import Outcome, Services
from fhir_server.interactions.read import read_resource
from fhir_server.operations.parameters import OperationInput, parameters
from fhir_server.security.policy import Access

__all__ = ["expand", "lookup", "validate_code"]


async def _canonical(
    services: Services, access: Access, call: OperationInput, name: str
) -> str:
    """The canonical URL named by ``url`` (or ``system``), or by the instance in the path."""
    given = call.value(name)
    if given:
        return given
    if call.id is not None and call.resource_type is not None:
        url = (await read_resource(services, access, call.resource_type, call.id)).get("url")
        if isinstance(url, str):
            return url
    raise BadRequest(f"The operation needs the parameter '{name}'",
                     message_id="MSG_PARAM_MISSING", expression=(name,))


def _required(call: OperationInput, name: str, operation: str) -> str:
    """The value of a mandatory parameter; 400 naming it when absent."""
    value = call.value(name)
    if not value:
        raise BadRequest(f"{operation} needs {name}", message_id="MSG_PARAM_MISSING",
                         expression=(name,))
    return value


def _int(call: OperationInput, name: str, default: int | None) -> int | None:
    value = call.value(name)
    if value is None:
        return default
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer",
                         message_id="MSG_PARAM_INVALID", expression=(name,))
    return int(value)


async def _value_set(services: Services, access: Access, call: OperationInput) -> dict[str, Any]:
    """The ValueSet to expand: given inline (``valueSet``), or named by ``url`` or the path."""
    inline = call.resources.get("valueSet")
    if inline is not None:
        if inline.get("resourceType") != "ValueSet":
            raise BadRequest("The parameter valueSet must be a ValueSet",
                             message_id="MSG_PARAM_INVALID", expression=("valueSet",))
        return inline
    return default_terminology().value_set(await _canonical(services, access, call, "url"))


async def expand(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Return the ValueSet with an ``expansion`` of the codes matching ``filter``."""
    value_set = await _value_set(services, access, call)
    terminology = default_terminology()
    offset = _int(call, "offset", 0) or 0
    count = _int(call, "count", None)
    everything = terminology.expand_value_set(value_set, call.value("filter"))
    page = everything[offset: None if count is None else offset + count]
    body: dict[str, Any] = {
        "resourceType": "ValueSet",
        "url": value_set.get("url"),
        "status": value_set.get("status", "active"),
        "expansion": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "total": len(everything),
            "offset": offset,
            "contains": [{"system": c.system, "code": c.code, "display": c.display}
                         for c in page],
        },
    }
    if value_set.get("version"):
        body["version"] = value_set["version"]
    if not body["expansion"]["contains"]:
        del body["expansion"]["contains"]
    return Outcome(200, body=body)


async def lookup(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Return the concept's name, display and designations as Parameters."""
    system = await _canonical(services, access, call, "system")
    code = _required(call, "code", "$lookup")
    terminology = default_terminology()
    concept = terminology.lookup(system, code, call.value("version"))
    if concept is None:
        raise NotFound(f"Code '{code}' is not in {system}", message_id="MSG_UNKNOWN_CODE")
    code_system = terminology.code_system(system)
    body = parameters(("name", "String", code_system.get("name") or code_system.get("title")),
                      ("version", "String", code_system.get("version")),
                      ("display", "String", concept.display))
    for designation in concept.designations:
        part = [{"name": "value", "valueString": designation.value}]
        if designation.language:
            part.insert(0, {"name": "language", "valueCode": designation.language})
        body["parameter"].append({"name": "designation", "part": part})
    for prop in concept.properties:
        body["parameter"].append({"name": "property", "part": [
            {"name": "code", "valueCode": prop.code},
            {"name": "value", f"value{prop.value_type}": prop.value},
        ]})  # fmt: skip
    return Outcome(200, body=body)


async def validate_code(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Return whether ``code`` (of ``system``) is in the value set, as Parameters."""
    url = await _canonical(services, access, call, "url")
    code = _required(call, "code", "$validate-code")
    result = default_terminology().validate_code(url, call.value("system"), code,
                                                 call.value("display"))
    body = parameters(("result", "Boolean", result.result),
                      ("message", "String", result.message or None))
    return Outcome(200, body=body)

"""Parse and structurally validate FHIR R4 resources, generically for every resource type.

``parse_json`` turns request bytes into a JSON object (orjson, with a depth limit);
``validate_structure`` checks a resource against the R4 rules: in one walk along the R4 4.0.1
element tables (``fhir_server.conformance.elements``) its structure and types, the JSON rules
every FHIR resource obeys (no empty strings, arrays or objects, no nulls), the required bindings
and the narrative rules; then the base invariants. Failures raise ``InvalidResource`` with one
issue per problem, each with the FHIRPath ``expression`` of the offending element.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import orjson

from fhir_server import decimals
from fhir_server.conformance import base_invariants, built, elements, structure
from fhir_server.errors import BadRequest, InvalidResource, LimitExceeded, NotFound
from fhir_server.metrics.catalogue import count_validation_failures

__all__ = [
    "ID_PATTERN",
    "is_resource_type",
    "parse_json",
    "require_id",
    "resource_types",
    "validate_structure",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_DEPTH = 64
#: R4's bound on a string (datatypes.html#string): 1024 * 1024 characters.
MAX_STRING_CHARS = 1024 * 1024


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


def require_id(id: str) -> None:
    """Raise ``BadRequest`` (``MSG_ID_INVALID``) unless ``id`` is a valid R4 id: 1 to 64 of
    ``A-Z a-z 0-9 - .``. An id that cannot exist is a bad request, not an unknown resource."""
    if not ID_PATTERN.match(id):
        raise BadRequest(f"'{id[:80]}' is not a valid resource id (1 to 64 of A-Z, a-z, 0-9, "
                         "'-' and '.')", message_id="MSG_ID_INVALID")


def parse_json(body: bytes, max_string_chars: int = MAX_STRING_CHARS) -> dict[str, Any]:
    """Return the JSON object in ``body``; raise ``BadRequest`` if it is not one, and
    ``LimitExceeded`` if a string in it (other than a base64Binary element) is longer than
    ``max_string_chars`` (looked for only in a body longer than that)."""
    try:
        value = decimals.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The body is not valid JSON: {exc}", message_id="MSG_JSON_INVALID"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object", message_id="MSG_JSON_OBJECT")
    _check_depth(value, 0)
    if len(body) > max_string_chars:
        _check_strings(value, max_string_chars, _unbounded_names())
    return value


def _unbounded_names() -> frozenset[str]:
    """Elements the string limit leaves to the body limit: base64Binary ones, and the
    narrative's ``div`` (xhtml, not a string: R4's own examples hold divs of 1.8 MB)."""
    return structure.binary_element_names() | {"div"}


def _check_strings(value: Any, limit: int, exempt: frozenset[str]) -> None:
    """Raise ``LimitExceeded`` for a string longer than ``limit`` in ``value``, except under a
    key of ``exempt``."""
    if type(value) is list:
        for item in value:
            _check_strings(item, limit, exempt)
    elif type(value) is dict:
        for key, item in value.items():
            if type(item) is str and len(item) > limit and key not in exempt:
                raise LimitExceeded.of(f"The string element '{key}' ({len(item)} characters)",
                                       limit, "max_string_chars")
            if key not in exempt:
                _check_strings(item, limit, exempt)


def _check_depth(value: dict[str, Any] | list[Any], depth: int) -> None:
    """Raise if anything in the object or array ``value`` (at ``depth``) lies deeper than
    ``MAX_DEPTH``; only objects and arrays are visited. ``value`` comes from ``orjson``, whose
    objects and arrays are exactly ``dict`` and ``list``: comparing types costs half the
    ``isinstance`` calls (a visit Bundle: 65 µs, not 125)."""
    children: Collection[Any] = value.values() if type(value) is dict else value
    if depth >= MAX_DEPTH and children:  # its children would be at MAX_DEPTH + 1
        raise BadRequest("The JSON is nested too deeply", message_id="MSG_JSON_TOO_DEEP")
    for item in children:
        kind = type(item)
        if kind is dict or kind is list:
            _check_depth(item, depth + 1)


#: The base StructureDefinitions: what structural failures are counted under.
_BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


def validate_structure(resource: dict[str, Any], *, expected_type: str | None = None) -> None:
    """Check ``resource`` against the R4 structure rules; raise ``InvalidResource``.

    ``expected_type`` (from the URL) must equal ``resourceType`` when given. The walk of
    ``check_structure`` is skipped for a resource an in-process builder vouches for
    (``conformance.built``: the XML 130 route's), and of the base invariants only those it
    did not prove to hold by construction are evaluated (``check_unproven``).
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
    proven = built.proven(resource)
    if proven is not None:
        issues = base_invariants.check_unproven(resource, proven)
    else:
        issues = [i for i in elements.check_structure(resource) if i.severity != "warning"]
        if all(issue.code in _CHECKABLE_WITH for issue in issues):
            # Invariants need a well-formed resource; a wrong code or narrative does not stop
            # them. Warnings (dom-6: no narrative, con-3) never make a write fail.
            issues += base_invariants.check_invariants(resource, errors_only=True)
    if issues:
        count_validation_failures(f"{_BASE_PROFILE}{resource_type}", issues)
        raise InvalidResource(issues[0].diagnostics, issues=issues)


#: Issue codes after which the invariants are still evaluated (required bindings, narrative).
_CHECKABLE_WITH = frozenset({"code-invalid", "invariant"})

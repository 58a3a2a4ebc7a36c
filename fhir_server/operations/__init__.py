"""FHIR operations (``$name``), each a function of ``Services``, the request's ``Access``
(what the caller may see: every read of an operation goes through it) and an
``OperationInput``.

``OPERATIONS`` maps (level, resource type or ``*``, name) to the function; the CapabilityStatement
and the HTTP routes are built from it, so a listed operation is one that works.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.interactions.context import Outcome, Services
from fhir_server.operations import (
    access_log,
    break_glass,
    document,
    everything,
    export,
    get_ws_binding_token,
    subscription_events,
    subscription_status,
    summary,
    terminology_ops,
    validate,
    verify_signature,
    xml130,
)
from fhir_server.operations.parameters import OperationInput
from fhir_server.security.policy import Access

__all__ = [
    "AFFECTS_STATE", "OPERATIONS", "RAW_BODY_OPERATIONS", "Operation", "find_operation",
    "render_html",
]

Operation = Callable[[Services, Access, OperationInput], Awaitable[Outcome]]

#: (level: "type" | "instance" | "system", resource type or "*", operation name) -> function
OPERATIONS: dict[tuple[str, str, str], Operation] = {
    ("type", "*", "validate"): validate.validate_operation,
    ("instance", "*", "validate"): validate.validate_operation,
    ("type", "StructureDefinition", "json-schema"): validate.json_schema_operation,
    ("instance", "StructureDefinition", "json-schema"): validate.json_schema_operation,
    ("type", "ValueSet", "expand"): terminology_ops.expand,
    ("instance", "ValueSet", "expand"): terminology_ops.expand,
    ("type", "ValueSet", "validate-code"): terminology_ops.validate_code,
    ("instance", "ValueSet", "validate-code"): terminology_ops.validate_code,
    ("type", "CodeSystem", "lookup"): terminology_ops.lookup,
    ("instance", "CodeSystem", "lookup"): terminology_ops.lookup,
    ("instance", "Patient", "everything"): everything.everything,
    ("instance", "Patient", "summary"): summary.summary,
    ("type", "Patient", "summary"): summary.summary,
    ("instance", "Encounter", "document"): document.encounter_document,
    ("system", "*", "export"): export.export,
    ("type", "Patient", "export"): export.export,
    ("instance", "Group", "export"): export.export,
    ("instance", "Patient", "break-glass"): break_glass.break_glass,
    ("instance", "Patient", "access-log"): access_log.access_log,
    ("type", "Subscription", "status"): subscription_status.status,
    ("instance", "Subscription", "status"): subscription_status.status,
    ("instance", "Subscription", "events"): subscription_events.events,
    ("type", "Subscription", "get-ws-binding-token"): get_ws_binding_token.get_ws_binding_token,
    ("instance", "Subscription", "get-ws-binding-token"):
        get_ws_binding_token.get_ws_binding_token,
    ("system", "*", "import-xml130"): xml130.import_xml130,
    ("system", "*", "convert-xml130"): xml130.convert_xml130,
    ("instance", "Encounter", "export-xml130"): xml130.export_xml130,
    ("instance", "*", "verify-signature"): verify_signature.verify_signature,
}
#: Operations whose POST body may be a document other than FHIR JSON, by media type.
RAW_BODY_OPERATIONS: dict[str, frozenset[str]] = {
    "import-xml130": xml130.RAW_BODY_TYPES,
    "convert-xml130": xml130.RAW_BODY_TYPES,
}


#: The operations that change what is stored: invoked with POST only (R4 operations.html).
AFFECTS_STATE = frozenset({"break-glass", "import-xml130"})


def find_operation(level: str, resource_type: str, name: str) -> Operation | None:
    """Return the operation for a call, or None if the server does not have it."""
    return OPERATIONS.get((level, resource_type, name)) or OPERATIONS.get((level, "*", name))


def render_html(body: dict[str, Any]) -> str | None:
    """Return a printable HTML page of an operation's result, or None if it has no HTML form.

    Document Bundles (the health book, the per-visit document) render their Compositions'
    narratives; other results have no HTML form.
    """
    if body.get("resourceType") == "Bundle" and body.get("type") == "document":
        from fhir_server.operations.html import render_document

        page: str = render_document(body)
        return page
    return None

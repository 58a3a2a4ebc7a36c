"""capabilities: the CapabilityStatement, generated from what the server really supports
(R4 http.html#capabilities, capabilitystatement.html).

Every resource type lists exactly the interactions that work for it, and the search
parameters the registry holds for it; features the server lacks are simply not listed.
"""

from __future__ import annotations

from typing import Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.interactions.context import Services
from fhir_server.resources import resource_types
from fhir_server.search.model import ParamType
from fhir_server.search.parse import UNSUPPORTED_PARAMETERS
from fhir_server.security.audit import AUDIT_SEARCH_PARAMS
from fhir_server.security.token_endpoint import oauth_uris
from fhir_server.subscriptions.topics import topic_urls

__all__ = ["FEATURES", "capability_statement"]

TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
)
SYSTEM_INTERACTIONS = ["history-system"]

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"

#: Optional features switched on as the modules that implement them are wired in.
FEATURES: dict[str, bool] = {"search": True, "transaction": True, "batch": True}


def _search_params(services: Services, resource_type: str) -> list[dict[str, Any]]:
    registry = services.registry
    if registry is None or not FEATURES["search"]:
        return []
    params: dict[str, Any] = registry.for_type(resource_type)
    return [
        {"name": code, "definition": p.url, "type": str(p.type)}
        for code, p in sorted(params.items())
        if code not in UNSUPPORTED_PARAMETERS and p.type is not ParamType.SPECIAL
    ]


def _includes(services: Services, resource_type: str) -> list[str]:
    """``searchInclude``: this type's reference parameters, ``Type:*`` and ``*``."""
    if services.registry is None:
        return []
    own = sorted(code for code, p in services.registry.for_type(resource_type).items()
                 if p.type is ParamType.REFERENCE)
    return [f"{resource_type}:{code}" for code in own] + ([f"{resource_type}:*", "*"]
                                                          if own else [])


def _reverse_includes(services: Services) -> dict[str, list[str]]:
    """``searchRevInclude`` per target type: every ``Source:code`` reference parameter of
    any type that may point at it (AuditEvents, kept in the audit log, are not included)."""
    reverse: dict[str, list[str]] = {}
    registry = services.registry
    sources = registry.resource_types() if registry is not None else ()
    for source in (s for s in sources if s != "AuditEvent"):
        for code, p in sorted(registry.for_type(source).items()):
            if p.type is ParamType.REFERENCE:
                for target in p.targets:
                    reverse.setdefault(target, []).append(f"{source}:{code}")
    return reverse


def _resource_entry(services: Services, resource_type: str,
                    reverse: dict[str, list[str]]) -> dict[str, Any]:
    interactions = list(TYPE_INTERACTIONS)
    if FEATURES["search"]:
        interactions.append("search-type")
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
    }
    params = _search_params(services, resource_type)
    if resource_type == "AuditEvent":
        _audit_entry(entry)
        params = [p for p in params if p["name"] in AUDIT_SEARCH_PARAMS]
    if params:
        entry["searchParam"] = params
    includes = _includes(services, resource_type)
    if includes and resource_type != "AuditEvent":
        entry["searchInclude"] = includes
    if reverse.get(resource_type) and resource_type != "AuditEvent":
        entry["searchRevInclude"] = sorted(reverse[resource_type])
    operations = _operations(services, resource_type)
    if operations:
        entry["operation"] = operations
    if resource_type == "Subscription" and services.settings.subscriptions:
        _subscription_entry(entry)
    return entry


#: The Subscriptions Backport IG's R4 server statement, its profile and topic extension.
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
_TOPIC_CANONICAL = (f"{_BACKPORT}/StructureDefinition/"
                    "capabilitystatement-subscriptiontopic-canonical")


def _subscription_entry(entry: dict[str, Any]) -> None:
    """Topic-based subscriptions (rest-hook and websocket; id-only, full-resource, empty):
    the backport profile and the shipped topics (operators' own are found with
    ``Basic?code=http://hl7.org/fhir/fhir-types|SubscriptionTopic``)."""
    entry["supportedProfile"] = [f"{_BACKPORT}/StructureDefinition/backport-subscription"]
    entry["extension"] = [{"url": _TOPIC_CANONICAL, "valueCanonical": url}
                          for url in sorted(topic_urls())]
    entry["documentation"] = (
        "Topic-based (Subscriptions Backport IG, R4) and classic criteria subscriptions; "
        "channels rest-hook (https) and websocket; payloads empty, id-only (the default), "
        "full-resource; notifications only carry what the subscription's owner may read at "
        "delivery time. See docs/subscriptions.md.")


def _audit_entry(entry: dict[str, Any]) -> None:
    """AuditEvents are evidence: created, read and searched, never changed or deleted."""
    entry["interaction"] = [i for i in entry["interaction"]
                            if i["code"] not in ("update", "patch", "delete")]
    entry.update(updateCreate=False, conditionalUpdate=False, conditionalDelete="not-supported",
                 documentation="Kept in the audit log: never updated or deleted; searched by "
                               "the parameters listed, without chains, _has or includes.")


def _operations(services: Services, resource_type: str | None) -> list[dict[str, str]]:
    """The operations of ``operations.OPERATIONS`` callable on a type (or the system)."""
    from fhir_server.operations import OPERATIONS

    levels = ("system",) if resource_type is None else ("type", "instance")
    names = sorted({name for (level, rtype, name) in OPERATIONS
                    if level in levels and rtype in ("*", resource_type)})
    return [{"name": name, "definition": f"{services.base_url}/OperationDefinition/{name}"}
            for name in names]


def _security(services: Services) -> dict[str, Any]:
    """SMART-on-FHIR with the server's token endpoint (R4 rest.security)."""
    if services.settings.auth == "off":
        return {"description": "Access control is OFF on this server (development only)."}
    return {
        "cors": bool(services.settings.cors_origins),
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}]}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": name, "valueUri": url}
                          for name, url in oauth_uris(services.settings).items()],
        }],
        "description": "Bearer JWTs (SMART App Launch v1/v2 scopes); see "
                       "/.well-known/smart-configuration." + _consent(services),
    }


def _consent(services: Services) -> str:
    """What the security description says of Consent (docs/consent.md)."""
    if not services.settings.consent_enforced:
        return " Patients' Consents do not limit what clinicians and facilities read."
    return (" Clinicians and facilities read what they wrote and what the patient's Consent "
            "(scope patient-privacy) shares with them; emergency access: "
            "Patient/[id]/$break-glass; the citizen's access log: Patient/[id]/$access-log.")


def capability_statement(services: Services) -> dict[str, Any]:
    """Return the CapabilityStatement of this server, as a JSON object."""
    system = list(SYSTEM_INTERACTIONS)
    system += [name for name in ("transaction", "batch") if FEATURES[name]]
    if FEATURES["search"]:
        system.append("search-system")
    reverse = _reverse_includes(services)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "fhir-server project",
        "kind": "instance",
        # The Bulk Data Access IG's server capabilities: $export at system, Patient and
        # Group level (operations below), Group read and search (every type has them); the
        # Subscriptions Backport IG's, when subscriptions are on.
        "instantiates": [BULK_DATA, *([f"{_BACKPORT}/CapabilityStatement/"
                                       "backport-subscription-server-r4"]
                                      if services.settings.subscriptions else [])],
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {
            "description": "FHIR R4 server for Vietnam's electronic health book",
            "url": services.base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": _security(services),
            "resource": [_resource_entry(services, t, reverse)
                         for t in sorted(resource_types())],
            "interaction": [{"code": code} for code in system],
            **({"operation": ops} if (ops := _operations(services, None)) else {}),
        }],
    }

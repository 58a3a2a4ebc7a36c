"""The route table of the HTTP API: (method, path pattern, endpoint name). No logic here.

Order matters: literal segments (``metadata``, ``_history``) come before ``{type}``.
"""

from __future__ import annotations

__all__ = ["ROUTES"]

ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/healthz", "healthz"),
    ("GET", "/readyz", "readyz"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/fhir/metadata", "metadata"),
    ("GET", "/fhir/.well-known/smart-configuration", "smart-configuration"),
    ("GET", "/fhir/.well-known/jwks.json", "jwks"),
    ("POST", "/fhir/auth/token", "token"),
    ("POST", "/fhir", "bundle"),
    ("GET", "/fhir", "search"),
    ("POST", "/fhir/_search", "search"),
    ("POST", "/fhir/{type}/_search", "search"),
    ("GET", "/fhir/${op}", "operation"),
    ("POST", "/fhir/${op}", "operation"),
    ("GET", "/fhir/{type}/${op}", "operation"),
    ("POST", "/fhir/{type}/${op}", "operation"),
    ("GET", "/fhir/{type}/{id}/${op}", "operation"),
    ("POST", "/fhir/{type}/{id}/${op}", "operation"),
    ("GET", "/fhir/_history", "history-system"),
    ("GET", "/fhir/{type}/_history", "history-type"),
    ("GET", "/fhir/{type}/{id}/_history", "history-instance"),
    ("GET", "/fhir/{type}/{id}/_history/{vid}", "vread"),
    ("GET", "/fhir/{type}", "search"),
    ("POST", "/fhir/{type}", "create"),
    ("PUT", "/fhir/{type}", "conditional-update"),
    ("DELETE", "/fhir/{type}", "conditional-delete"),
    ("GET", "/fhir/{compartment}/{id}/{type}", "search"),
    ("GET", "/fhir/{type}/{id}", "read"),
    ("PUT", "/fhir/{type}/{id}", "update"),
    ("PATCH", "/fhir/{type}/{id}", "patch"),
    ("DELETE", "/fhir/{type}/{id}", "delete"),
]

"""The one place where the XML 130 bridge enters the request path.

A visit is committed as a FHIR transaction Bundle through the same push path as a hospital's
FHIR push (validation, conditional references, race safety, audit), under the caller of the
current request. When the request path becomes a router (``handle(FhirRequest, Caller)``),
only this function changes.
"""

from __future__ import annotations

from typing import Any

from fhir_server.interactions.bundle import process_bundle
from fhir_server.interactions.context import Outcome, Services

__all__ = ["commit"]


async def commit(services: Services, bundle: dict[str, Any]) -> Outcome:
    """Commit a transaction Bundle as the current caller; raises the push path's FhirError."""
    return await process_bundle(services, bundle)

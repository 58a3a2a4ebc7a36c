"""What every interaction is given: the store, the search registry and the server's settings.

Interactions are plain async functions of a ``Services`` value and FHIR-level arguments; they
know nothing of HTTP, so the same code serves the REST API, Bundle entries, the loader and
tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.settings import Settings
from fhir_server.storage.port import ResourceStore, StoredResource

__all__ = ["Outcome", "Services", "new_id"]


def new_id() -> str:
    """Return a new server-assigned logical id."""
    return str(uuid.uuid4())


@dataclass
class Services:
    """The collaborators of the interactions, built once per application."""

    store: ResourceStore
    settings: Settings
    registry: Any = None

    @property
    def base_url(self) -> str:
        """The public FHIR base URL (for fullUrl, Location and links)."""
        return self.settings.public_base_url()

    def index(self, resource: dict[str, Any]) -> object | None:
        """Return the search index of ``resource`` (computed outside the write lock)."""
        if self.registry is None:
            return None
        from fhir_server.search.indexing import index_resource

        return index_resource(resource, self.registry)


@dataclass(frozen=True)
class Outcome:
    """The result of an interaction: status, the stored version (if any) and extra issues.

    ``body`` is used by interactions that answer with something other than one stored
    resource (a Bundle, an OperationOutcome, the CapabilityStatement).
    """

    status: int
    stored: StoredResource | None = None
    body: dict[str, Any] | None = None
    issues: tuple[Issue, ...] = field(default=())
